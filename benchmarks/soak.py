#!/usr/bin/env python
"""Soak test: keep fastrnn busy for minutes and print the process RSS over time.

    python benchmarks/soak.py [--minutes 5] [--interval 10] [--threads 4] [--engine-threads N]
                              [--max-growth-mb 16] [--big]

Python threads (``--threads``) share a set of layers (LSTM / GRU / RNN, stacked, bidirectional,
projection, peephole) and run a deterministic mix of calls: assorted small shapes (``--big`` adds
T=200, B=64, H=512 calls), per-sequence lengths, initial states, ``layer.step`` streams, calls
that raise, layers built and dropped, weights reloaded, save/load round trips. Every
``--interval`` seconds the workers pause between calls and one line is printed: elapsed time,
calls so far, calls/s, RSS (from /proc/self/statm), RSS after glibc's malloc_trim (freed memory
the allocator still holds given back), and the growth of the latter since the end of the warm-up
(the first interval). Every call's result is checked
against a reference computed at start-up, so a corrupted result fails the soak too.

Exit status 1 if the RSS grew by more than ``--max-growth-mb`` after the warm-up, or a result
differed, or a call raised something unexpected; 0 otherwise.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_fastrnn():
    try:
        import fastrnn
    except ImportError:
        sys.path.insert(0, ROOT)
        import fastrnn
    return fastrnn


def rss_mb():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: the high-water mark is the best there is
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(fastrnn, big):
    layers = {
        "lstm": fastrnn.LSTM(16, 64, seed=1),
        "lstm_bi_proj": fastrnn.LSTM(16, 48, num_layers=2, bidirectional=True, proj_size=12, seed=2),
        "gru_bi": fastrnn.GRU(16, 40, bidirectional=True, seed=3),
        "gru_lbr0_bf": fastrnn.GRU(16, 32, linear_before_reset=False, batch_first=True, seed=4),
        "rnn_relu": fastrnn.RNN(16, 50, num_layers=3, nonlinearity="relu", seed=5),
        "lstm_peep": fastrnn.LSTM(16, 24, peephole=True, clip=2.5, seed=6),
    }
    if big:
        layers["big"] = fastrnn.LSTM(512, 512, seed=7)
    rng = np.random.default_rng(0)
    tasks = []
    for name, layer in layers.items():
        I = layer.input_size
        shapes = [(200, 64)] if name == "big" else [(1, 1), (7, 3), (30, 8), (3, 16), (0, 2), (12, 0)]
        for T, B in shapes:
            x = rng.standard_normal((B, T, I) if layer.batch_first else (T, B, I)).astype(np.float32)
            tasks.append(("call", name, x, None))
            if B > 1 and T > 0:
                lens = rng.integers(0, T + 1, size=B)
                lens[0] = T
                tasks.append(("call", name, x, lens.tolist()))
        if name != "big":
            tasks.append(("unbatched", name, rng.standard_normal((5, I)).astype(np.float32), None))
            tasks.append(("error", name, rng.standard_normal((3, 2, I + 2)).astype(np.float32), None))
            if hasattr(layer, "step") and not layer.bidirectional:
                tasks.append(("step", name, [rng.standard_normal((2, I)).astype(np.float32) for _ in range(4)],
                              None))
    return layers, tasks


def flatten(obj):
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [a for o in obj for a in flatten(o)]
    return []


def run_task(layers, task):
    kind, name, x, lengths = task
    layer = layers[name]
    if kind in ("call", "unbatched"):
        return flatten(layer(x, None, lengths) if lengths is not None else layer(x))
    if kind == "step":
        out, st = [], None
        for xt in x:
            o, st = layer.step(xt, st)
            out += flatten((o, st))
        return out
    if kind == "error":
        try:
            layer(x)
        except ValueError:
            return []
        raise AssertionError(f"{name}: a bad input did not raise")
    raise AssertionError(kind)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0, help="duration (default 5)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between RSS lines (default 10)")
    p.add_argument("--threads", type=int, default=4, help="Python threads (default 4)")
    p.add_argument("--engine-threads", type=int, default=None, help="fastrnn.set_num_threads (default: all CPUs)")
    p.add_argument("--max-growth-mb", type=float, default=16.0,
                   help="fail if RSS grows more than this after the warm-up (default 16)")
    p.add_argument("--big", action="store_true", help="also T=200, B=64, H=512 LSTM calls")
    args = p.parse_args(argv)

    fastrnn = import_fastrnn()
    if args.engine_threads:
        fastrnn.set_num_threads(args.engine_threads)
    layers, tasks = build(fastrnn, args.big)
    reference = [run_task(layers, t) for t in tasks]
    tmpdir = tempfile.TemporaryDirectory(prefix="fastrnn-soak-")

    stop = threading.Event()
    running = threading.Event()  # cleared while the main thread measures: workers idle
    running.set()
    active = [0]
    active_lock = threading.Condition()
    counts = [0] * args.threads
    failures = []

    def worker(k):
        rng = np.random.default_rng(100 + k)
        n = 0
        try:
            while not stop.is_set():
                running.wait()
                with active_lock:
                    active[0] += 1
                try:
                    n = one(k, rng, n)
                finally:
                    with active_lock:
                        active[0] -= 1
                        active_lock.notify_all()
        except BaseException as e:  # noqa: BLE001
            failures.append(f"thread {k}: {type(e).__name__}: {e}")
            stop.set()

    def one(k, rng, n):
        if True:
            if True:
                i = int(rng.integers(len(tasks)))
                got = run_task(layers, tasks[i])
                want = reference[i]
                if len(got) != len(want) or not all(np.array_equal(a, b) for a, b in zip(got, want)):
                    failures.append(f"thread {k}: task {i} ({tasks[i][0]} on {tasks[i][1]}) differs")
                    stop.set()
                n += 1
                counts[k] = n
                if n % 500 == 0 and k == 0:  # churn: build/drop, reload, save/load
                    name = tasks[i][1]
                    layer = layers[name]
                    fastrnn.GRU(8, 16, num_layers=2, seed=n)(np.ones((3, 2, 8), np.float32))
                    layer.load_state_dict(layer.state_dict())
                    path = os.path.join(tmpdir.name, "soak.safetensors")
                    fastrnn.save(layer, path)
                    back = fastrnn.load(path)
                    if back.state_dict().keys() != layer.state_dict().keys():
                        failures.append("save/load round trip lost parameters")
        return n

    def quiet_rss():
        """(RSS, RSS after malloc_trim) with no call in flight."""
        running.clear()
        with active_lock:
            active_lock.wait_for(lambda: active[0] == 0, timeout=60)
        gc.collect()
        raw = rss_mb()
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        trimmed = rss_mb()
        running.set()
        return raw, trimmed

    print(f"fastrnn {fastrnn.__version__} ISA {fastrnn.get_isa()}, {fastrnn.get_num_threads()} engine thread(s), "
          f"{args.threads} Python thread(s), {len(tasks)} task kinds, {args.minutes:g} min; RSS at start "
          f"{rss_mb():.1f} MB", flush=True)
    print(f"{'elapsed s':>10}{'calls':>12}{'calls/s':>10}{'RSS MB':>10}{'trimmed MB':>12}{'growth MB':>11}",
          flush=True)
    ths = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(args.threads)]
    t0 = time.perf_counter()
    for th in ths:
        th.start()
    end = t0 + args.minutes * 60
    base = None
    last_calls, last_t = 0, t0
    max_growth = 0.0
    try:
        while not stop.is_set():
            time.sleep(max(0.0, min(args.interval, end - time.perf_counter())))
            now = time.perf_counter()
            calls = sum(counts)
            raw, rss = quiet_rss()
            if base is None:
                base = rss  # after the first interval: allocator caches have settled
            growth = rss - base
            max_growth = max(max_growth, growth)
            print(f"{now - t0:>10.0f}{calls:>12}{(calls - last_calls) / max(now - last_t, 1e-9):>10.0f}"
                  f"{raw:>10.1f}{rss:>12.1f}{growth:>+11.1f}", flush=True)
            last_calls, last_t = calls, now
            if now >= end:
                break
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    stop.set()
    for th in ths:
        th.join(timeout=30)
    tmpdir.cleanup()
    ok = True
    if failures:
        ok = False
        for f in failures[:10]:
            print("FAIL:", f)
    if max_growth > args.max_growth_mb:
        ok = False
        print(f"FAIL: RSS grew by {max_growth:.1f} MB after the warm-up (limit {args.max_growth_mb:g} MB)")
    print(("PASS" if ok else "FAIL") + f": {sum(counts)} calls in {time.perf_counter() - t0:.0f} s, "
          f"max RSS growth after warm-up {max_growth:+.1f} MB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
