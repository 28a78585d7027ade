#!/usr/bin/env python
"""What a service running fastrnn sees: throughput under Python threads, peak memory of a call,
and the per-call overhead of streaming with ``layer.step``.

    python benchmarks/service_report.py [--seconds 1.5] [--threads N] [--no-torch] [--json OUT.json]

1. Throughput (calls/s) of 1, 2 and 4 Python threads sharing ONE layer, LSTM H=256 (input 256),
   batch 1, T=1 and T=100; fastrnn with its thread team (``--threads``, default all usable CPUs)
   and with one thread per call, next to torch (``torch.inference_mode``, same thread count) on
   the same weights.
2. Peak memory of one call, LSTM H=512 (input 512), T=100, B=64, fastrnn vs torch, each in a
   fresh subprocess: the RSS high-water mark (``ru_maxrss``, read as /proc/self/status VmHWM, which
   leaves out the spawning process's high-water mark that ru_maxrss inherits across exec) after the call
   minus the one after import, layer construction and input creation (freed heap memory is first
   returned to the OS with malloc_trim, and the high-water mark reset to the current RSS through
   /proc/self/clear_refs where the kernel allows, so neither setup's freed pages nor import-time
   peaks hide the call's). Reported for the first call and for a later one (steady state), with
   the output array's own size (part of every call's peak) for reference.
3. ``layer.step(x_t, state)`` overhead (if layers have ``step``): microseconds per step at B=1
   against a full call with T=1, the per-step cost inside one T=100 call, and torch's
   ``nn.LSTMCell``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def import_fastrnn():
    try:
        import fastrnn
    except ImportError:
        sys.path.insert(0, ROOT)
        import fastrnn
    return fastrnn


def available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# ------------------------------------------------------------------------------------------------
# 1. throughput
# ------------------------------------------------------------------------------------------------
def throughput(fn_factory, n_threads, seconds):
    """calls/s of n_threads Python threads each calling fn() in a loop for `seconds`."""
    fns = [fn_factory() for _ in range(n_threads)]
    for fn in fns:
        fn()  # warm-up
    counts = [0] * n_threads
    stop = threading.Event()
    barrier = threading.Barrier(n_threads + 1)
    errors = []

    def worker(k):
        fn = fns[k]
        try:
            barrier.wait()
            n = 0
            while not stop.is_set():
                fn()
                n += 1
            counts[k] = n
        except BaseException as e:  # noqa: BLE001
            errors.append(repr(e))

    ths = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for th in ths:
        th.start()
    barrier.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for th in ths:
        th.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(errors[0])
    return sum(counts) / elapsed


def run_throughput(fastrnn, torch, threads, seconds, H=256):
    layer = fastrnn.LSTM(H, H, seed=0)
    rng = np.random.default_rng(0)
    xs = {T: rng.standard_normal((T, 1, H)).astype(np.float32) for T in (1, 100)}
    mod = None
    if torch is not None:
        mod = torch.nn.LSTM(H, H).eval()
        mod.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    results = []
    engines = [("fastrnn", threads), ("fastrnn", 1)] + ([("torch", threads)] if mod is not None else [])
    for name, nth in engines:
        for T in (1, 100):
            for py_threads in (1, 2, 4):
                x = xs[T]
                if name == "fastrnn":
                    fastrnn.set_num_threads(nth)

                    def factory(x=x):
                        return lambda: layer(x)
                else:
                    torch.set_num_threads(nth)
                    xt = torch.from_numpy(x)

                    def factory(xt=xt):
                        def call():
                            with torch.inference_mode():
                                return mod(xt)
                        return call
                cps = throughput(factory, py_threads, seconds)
                results.append({"engine": name, "engine_threads": nth, "T": T, "python_threads": py_threads,
                                "calls_per_s": cps})
                time.sleep(0.1)  # let spinning worker threads settle
    fastrnn.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    return results


# ------------------------------------------------------------------------------------------------
# 2. peak memory (child process)
# ------------------------------------------------------------------------------------------------
def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _trim_heap():
    """Give freed heap memory back to the OS (glibc), so that a call cannot hide its allocations
    in pages that setup freed but left resident."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_kb():
    """RSS high-water mark in KiB: VmHWM of /proc/self/status where available, which is
    ``getrusage(RUSAGE_SELF).ru_maxrss`` without the part Linux carries over from before exec()
    (a child spawned by a big parent starts with the parent's ru_maxrss)."""
    hwm = _status_kb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def mem_child(engine, threads, T=100, B=64, H=512):
    """One engine in this (fresh) process; prints one JSON line."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    if engine == "fastrnn":
        fastrnn = import_fastrnn()
        fastrnn.set_num_threads(threads)
        layer = fastrnn.LSTM(H, H, seed=0)

        def call():
            return layer(x)
    else:
        import torch

        torch.set_num_threads(threads)
        mod = torch.nn.LSTM(H, H).eval()
        xt = torch.from_numpy(x)

        def call():
            with torch.inference_mode():
                return mod(xt)
    out = {"engine": engine, "T": T, "B": B, "H": H, "threads": threads,
           "output_mb": T * B * H * 4 / 2**20, "input_mb": x.nbytes / 2**20}
    calls = []
    for _ in range(3):
        _trim_heap()
        reset = _reset_hwm()
        base = _maxrss_kb()
        rss_before = _status_kb("VmRSS")
        r = call()
        peak = _maxrss_kb()
        calls.append({"hwm_reset": reset, "baseline_kb": base, "rss_before_kb": rss_before, "maxrss_kb": peak,
                      "peak_mb": (peak - base) / 1024})
        del r
    out["rss_after_setup_mb"] = calls[0]["rss_before_kb"] / 1024
    out["first_call_mb"] = calls[0]["peak_mb"]
    out["steady_call_mb"] = calls[-1]["peak_mb"] if calls[-1]["hwm_reset"] else None
    out["hwm_reset"] = calls[0]["hwm_reset"]
    out["calls"] = calls
    print(json.dumps(out))


def run_memory(engines, threads):
    res = []
    for eng in engines:
        cmd = [sys.executable, os.path.abspath(__file__), "--_mem-child", eng, "--threads", str(threads)]
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        if p.returncode != 0:
            res.append({"engine": eng, "error": (p.stderr.strip().splitlines() or ["?"])[-1]})
            continue
        res.append(json.loads(p.stdout.strip().splitlines()[-1]))
    return res


# ------------------------------------------------------------------------------------------------
# 3. layer.step overhead
# ------------------------------------------------------------------------------------------------
def _per_call_us(fn, min_time=0.3, batch=50):
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        n += batch
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return dt / n * 1e6


def run_step_overhead(fastrnn, torch, threads):
    rows = []
    for H in (8, 256):
        layer = fastrnn.LSTM(H, H, seed=0)
        rng = np.random.default_rng(1)
        xt = rng.standard_normal((1, H)).astype(np.float32)
        x1 = xt[None]
        x100 = rng.standard_normal((100, 1, H)).astype(np.float32)
        row = {"H": H}
        if hasattr(layer, "step"):
            st = layer.step(xt)[1]
            row["step_us"] = _per_call_us(lambda: layer.step(xt, st))
        row["call_T1_us"] = _per_call_us(lambda: layer(x1))
        row["call_T100_per_step_us"] = _per_call_us(lambda: layer(x100), batch=5) / 100
        if torch is not None:
            time.sleep(0.2)  # fastrnn's worker threads spin briefly after a call: let them sleep
            cell = torch.nn.LSTMCell(H, H).eval()
            tx = torch.from_numpy(xt)
            hc = (torch.zeros(1, H), torch.zeros(1, H))

            def tstep():
                with torch.inference_mode():
                    return cell(tx, hc)
            row["torch_cell_step_us"] = _per_call_us(tstep)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=1.5, help="seconds per throughput measurement")
    p.add_argument("--threads", type=int, default=None, help="engine threads (default: usable CPUs)")
    p.add_argument("--no-torch", action="store_true", help="leave torch out")
    p.add_argument("--skip", default="", help="comma list of sections to skip: throughput,memory,step")
    p.add_argument("--json", metavar="OUT.json", help="also write the results as JSON")
    p.add_argument("--_mem-child", dest="mem_child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    threads = args.threads or available_cpus()
    if args.mem_child:
        mem_child(args.mem_child, threads)
        return 0

    fastrnn = import_fastrnn()
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            torch = None
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    report = {"fastrnn": fastrnn.__version__, "isa": fastrnn.get_isa(), "threads": threads,
              "cpus": available_cpus(), "torch": getattr(torch, "__version__", None)}
    print(f"fastrnn {fastrnn.__version__} (ISA {fastrnn.get_isa()}), {available_cpus()} usable CPUs, "
          f"engine threads {threads}" + (f"; torch {torch.__version__}" if torch else "; torch not used"))

    if "throughput" not in skip:
        tp = run_throughput(fastrnn, torch, threads, args.seconds)
        report["throughput"] = tp
        print(f"\n1. Throughput, LSTM H=256 (I=256), batch 1, one layer shared by N Python threads "
              f"(calls/s, {args.seconds:g} s each):")
        head = f"  {'engine':<22}{'T':>5}" + "".join(f"{f'{n} thr':>11}" for n in (1, 2, 4)) + f"{'x(4 vs 1)':>11}"
        print(head)
        keyed = {}
        for r in tp:
            keyed.setdefault((r["engine"], r["engine_threads"], r["T"]), {})[r["python_threads"]] = r["calls_per_s"]
        for (eng, nth, T), v in keyed.items():
            label = f"{eng} ({nth} thread{'s' if nth > 1 else ''})"
            print(f"  {label:<22}{T:>5}" + "".join(f"{v[n]:>11.0f}" for n in (1, 2, 4)) + f"{v[4] / v[1]:>10.2f}x")

    if "memory" not in skip:
        engines = ["fastrnn"] + (["torch"] if torch is not None else [])
        mem = run_memory(engines, threads)
        report["memory"] = mem
        print("\n2. Peak memory of one call, LSTM H=512 (I=512), T=100, B=64 (fresh process per engine; "
              "RSS high-water mark over the call minus before it):")
        print(f"  {'engine':<10}{'RSS after setup':>17}{'first call':>12}{'later call':>12}{'(output)':>10}")
        for m in mem:
            if "error" in m:
                print(f"  {m['engine']:<10} failed: {m['error']}")
                continue
            later = "n/a" if m["steady_call_mb"] is None else f"{m['steady_call_mb']:.1f} MB"
            print(f"  {m['engine']:<10}{m['rss_after_setup_mb']:>14.1f} MB{m['first_call_mb']:>9.1f} MB"
                  f"{later:>12}{m['output_mb']:>7.1f} MB")
        if mem and not mem[0].get("hwm_reset", True):
            print("  (the high-water mark could not be reset: 'later call' unavailable, import peaks may "
                  "hide part of the first call's)")

    if "step" not in skip:
        st = run_step_overhead(fastrnn, torch, threads)
        report["step"] = st
        print("\n3. Streaming overhead at batch 1 (microseconds per time step):")
        print(f"  {'H':>5}{'layer.step':>12}{'call T=1':>10}{'in T=100':>10}{'torch LSTMCell':>16}")
        for r in st:
            def f(k):
                return f"{r[k]:.1f}" if k in r else "n/a"
            print(f"  {r['H']:>5}{f('step_us'):>12}{f('call_T1_us'):>10}{f('call_T100_per_step_us'):>10}"
                  f"{f('torch_cell_step_us'):>16}")
        if "step_us" not in st[0]:
            print("  (this fastrnn has no layer.step)")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
