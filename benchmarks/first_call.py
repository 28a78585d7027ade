"""First call against steady state, and the fixed cost of a tiny call.

Each shape runs in a fresh Python process (so "first" includes everything a
service's first request pays: the process's first touch of fastrnn's code and
working memory, the layer's first touch of its weights, and waking fastrnn's
worker threads from sleep), timed from just before the call, which comes half
a second after the layer is built (as a service's first request would: right
after ``import numpy``, numpy's OpenBLAS threads spin for about 0.1 s and take
the other cores). Prints per shape the first call, the median of the calls after
it, and their ratio; the same layer's call after the same pause, warm (what
any call after an idle spell pays on this machine: caches and clocks gone
cold), and the first call's ratio to it; then the median time of a T=1, B=1,
H=64 LSTM call, and what the same pause costs that call and numpy alone (on
a shared guest, about 0.1 ms for whatever runs first after idling).

Run: ``python benchmarks/first_call.py [--threads N]``.
"""
import argparse
import json
import subprocess
import sys
import time

import numpy as np

SHAPES = [("lstm", 100, 1, 128), ("gru", 100, 1, 256), ("rnn", 100, 1, 128), ("rnn", 100, 1, 1024),
          ("lstm", 100, 1, 1024), ("gru", 100, 64, 512), ("lstm", 50, 256, 512)]

CHILD = """
import json, sys, time, numpy as np, fastrnn
cell, T, B, H, threads = sys.argv[1], *map(int, sys.argv[2:])
fastrnn.set_num_threads(threads)
layer = getattr(fastrnn, cell.upper())(H, H, seed=0)
x = np.random.default_rng(0).standard_normal((T, B, H)).astype(np.float32)
time.sleep(0.5)   # numpy's own OpenBLAS threads spin ~0.1 s of CPU after its import
t0 = time.perf_counter(); layer(x); first = time.perf_counter() - t0
ts = []
for _ in range(max(7, min(200, int(0.5 / max(first, 1e-6))))):
    t0 = time.perf_counter(); layer(x); ts.append(time.perf_counter() - t0)
idle = []
for _ in range(3):   # the same, warm layer after the same pause
    time.sleep(0.5)
    t0 = time.perf_counter(); layer(x); idle.append(time.perf_counter() - t0)
print(json.dumps({"first": first, "steady": float(np.median(ts)), "idle": float(np.median(idle))}))
"""


def tiny_call_us(threads, calls=20000):
    """Median wall time of one T=1, B=1, H=64 LSTM call (validation, output
    allocation and the step), in microseconds."""
    import fastrnn
    fastrnn.set_num_threads(threads)
    layer = fastrnn.LSTM(64, 64, seed=0)
    x = np.zeros((1, 1, 64), np.float32)
    for _ in range(1000):
        layer(x)
    ts = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        layer(x)
        ts[i] = time.perf_counter() - t0
    return float(np.median(ts)) * 1e6


WAKE = """
import json, sys, time, numpy as np, fastrnn
fastrnn.set_num_threads(int(sys.argv[1]))
layer = fastrnn.LSTM(64, 64, seed=0)
x = np.zeros((1, 1, 64), np.float32)
a = np.ones(64 * 1024, np.float32)
def tm(f):
    t0 = time.perf_counter(); f(); return time.perf_counter() - t0
out = {}
for name, f in (("call", lambda: layer(x)), ("sum", lambda: [a.sum() for _ in range(5)])):
    for _ in range(200): f()
    steady = float(np.median([tm(f) for _ in range(200)]))
    after = []
    for _ in range(5):
        time.sleep(0.5)
        after.append(tm(f))
    out[name] = (steady, float(np.median(after)))
print(json.dumps(out))
"""


def wake_cost(threads):
    """What half a second of idleness costs any work on this machine: a T=1,
    B=1, H=64 LSTM call and five numpy sums of 256 KB, steady and right
    after a 0.5 s sleep (seconds)."""
    res = subprocess.run([sys.executable, "-c", WAKE, str(threads)], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    print(f"threads={args.threads}; each shape in a fresh process")
    print("| cell | T | B | H | first ms | steady ms | first / steady | warm after the same pause ms | first / that |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    worst = 0.0
    for cell, T, B, H in SHAPES:
        res = subprocess.run([sys.executable, "-c", CHILD, cell, str(T), str(B), str(H), str(args.threads)],
                             capture_output=True, text=True, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        ratio = r["first"] / r["steady"]
        worst = max(worst, ratio)
        print(f"| {cell} | {T} | {B} | {H} | {r['first'] * 1e3:.3f} | {r['steady'] * 1e3:.3f} | {ratio:.2f} "
              f"| {r['idle'] * 1e3:.3f} | {r['first'] / r['idle']:.2f} |")
    print(f"\nworst first / steady: {worst:.2f}")
    print(f"T=1 B=1 H=64 LSTM call: {tiny_call_us(args.threads):.2f} us (median)")
    w = wake_cost(args.threads)
    print("after the same 0.5 s pause, with nothing of the layer's left to warm up: "
          f"the T=1 call {w['call'][1] * 1e6:.1f} us (steady {w['call'][0] * 1e6:.1f}); "
          f"numpy alone, 5 sums of 256 KB, {w['sum'][1] * 1e6:.1f} us (steady {w['sum'][0] * 1e6:.1f})")


if __name__ == "__main__":
    main()
