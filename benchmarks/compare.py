#!/usr/bin/env python
"""fastrnn next to its peers (torch, onnxruntime, openvino) on the same weights and inputs.

Everything runs in ONE process, engine after engine, on the same input array:

* every engine is built from one fastrnn layer's weights (torch: ``nn.LSTM/GRU/RNN``
  loaded from ``layer.state_dict()``; onnxruntime and openvino: a single ONNX
  LSTM/GRU/RNN node built with ``onnx.helper``, gates reordered to ONNX's order,
  GRU with ``linear_before_reset=1``, i.e. torch's form);
* two variants on request: ``gru0``, the original-form GRU (``linear_before_reset=0``,
  ONNX's default; torch has none, so it is skipped) and ``lstmp``, the LSTM with
  projection, ``proj_size = H // 2`` (torch only: ONNX's LSTM has no projection);
* the outputs (``out``, ``h_n`` and for LSTM ``c_n``) are checked against
  fastrnn's and the max abs difference is printed;
* per shape: median milliseconds per call after warm-up, GFLOP/s
  (``2*G*H*(I+H)*T*B`` per direction, G = 4/3/1 gates for LSTM/GRU/RNN) and
  fastrnn's speed-up over the best peer;
* the machine's limits, measured in the same run: sgemm GFLOP/s on one core and
  on all cores, L2 read bandwidth on one core and on all cores, and for batch-1
  shapes the per-step bound: ``bytes(W_hh) / L2 bandwidth`` plus the step's share
  of the input projection (``2*G*H*I`` flops) at the sgemm rate; where W_hh does
  not fit the L2s of the threads used, its read rate is measured on an array of
  each thread's slice of it, walked forwards and backwards on alternate passes as
  fastrnn's time loop walks it (what stays in L2 from one pass to the next counts).

A peer that is not installed is skipped with a note. Run ``python
benchmarks/compare.py --help`` for the options; ``main(argv)`` and
``run_comparison(...)`` are the entry points for other code (``fastrnn bench``).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

CELLS = ("lstm", "gru", "rnn")
# on request only: the original-form GRU and the LSTM with projection (proj_size = H // 2)
VARIANTS = ("gru0", "lstmp")
BASE = {"lstm": "lstm", "gru": "gru", "rnn": "rnn", "gru0": "gru", "lstmp": "lstm"}
GATES = {"lstm": 4, "gru": 3, "rnn": 1, "gru0": 3, "lstmp": 4}
ENGINES = ("fastrnn", "torch", "onnxruntime", "openvino")
PEERS = ENGINES[1:]
DEFAULT_SHAPES: Tuple[Tuple[int, int, int], ...] = (
    (100, 1, 128), (100, 1, 256), (100, 1, 512), (100, 1, 1024),
    (100, 8, 256), (100, 64, 256), (100, 64, 512), (50, 256, 512), (100, 64, 1024),
)
DTYPES = ("fp32", "bf16", "int8")
# Outputs of fp32 engines agree to ~1e-6 (more for long sums); above this we shout.
AGREE_TOL = 1e-4
# With reduced precision engines differ by their rounding; this only catches gross errors.
AGREE_TOL_LOW = {"bf16": 5e-2, "int8": 5e-2}


def agree_tol(dtype: str) -> float:
    return AGREE_TOL if dtype == "fp32" else AGREE_TOL_LOW[dtype]


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------
def import_fastrnn():
    """fastrnn, installed or built in place in the repository this script lives in."""
    try:
        import fastrnn
    except ImportError:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if not os.path.isdir(os.path.join(root, "fastrnn")):
            raise
        sys.path.insert(0, root)
        import fastrnn
    return fastrnn


def sanitizer_loaded() -> Optional[str]:
    """The name of a sanitizer runtime mapped into this process (an ASan/UBSan build of fastrnn
    is many times slower), or None."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                for lib in ("libasan", "libubsan", "libtsan", "libmsan"):
                    if lib in line:
                        return lib
    except OSError:
        pass
    return None


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def proj_size_of(cell: str, H: int) -> int:
    """The projection size of a cell of the comparison (0: none)."""
    return max(1, H // 2) if cell == "lstmp" else 0


def whh_bytes(cell: str, H: int, directions: int = 1, dtype: str = "fp32") -> int:
    """Bytes of recurrent weights a step reads, all directions: W_hh (G*H, H), or with a
    projection P W_hh (G*H, P) and W_hr (P, H)."""
    G, P = GATES[cell], proj_size_of(cell, H)
    n = G * H * P + P * H if P else G * H * H
    return n * {"fp32": 4, "bf16": 2, "int8": 1}[dtype] * directions


def stream_slice_bytes(whh: int, directions: int, threads: int) -> int:
    """One thread's share of one direction's recurrent weights, whole 64-byte lines: a
    direction too big for the L2s runs over all the threads, one direction after the other."""
    return max(64, whh // directions // threads // 64 * 64)


def whh_fits_l2(whh: int, l2_bytes: Optional[int], threads: int) -> Optional[bool]:
    """Whether W_hh fits the L2s of ``threads`` cores (None: L2 size unknown)."""
    return whh <= l2_bytes * threads if l2_bytes else None


def l2_bytes_per_core() -> Optional[int]:
    """Per-core L2 size from sysfs, or None."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index2/size") as f:
            s = f.read().strip()
        return int(s[:-1]) * (1024 if s.endswith("K") else 1 << 20) if s[-1] in "KM" else int(s)
    except (OSError, ValueError, IndexError):
        return None


def stream_sizes(cells: Sequence[str], shapes: Sequence[Sequence[int]], threads: int, directions: int = 1,
                 dtype: str = "fp32") -> List[int]:
    """The per-thread slices (stream_slice_bytes) of the batch-1 rows whose W_hh does not fit the
    L2s of the threads used: the arrays measure_machine_limits reads back and forth."""
    l2 = l2_bytes_per_core()
    k = min(threads, available_cpus())
    out = set()
    for cell in cells:
        for shp in shapes:
            if shp[1] != 1:
                continue
            whh = whh_bytes(cell.lower(), shp[2], directions, dtype)
            if whh_fits_l2(whh, l2, k) is False:
                out.add(stream_slice_bytes(whh, directions, k))
    return sorted(out)


def flops_per_call(cell: str, T: int, B: int, H: int, I: Optional[int] = None, directions: int = 1) -> float:
    """2*G*H*(I+H)*T*B per direction: the input projection and the recurrent product (with a
    projection P: 2*(G*H*(I+P) + P*H)*T*B)."""
    I = H if I is None else I
    P = proj_size_of(cell, H)
    if P:
        return 2.0 * (GATES[cell] * H * (I + P) + P * H) * T * B * directions
    return 2.0 * GATES[cell] * H * (I + H) * T * B * directions


def parse_shapes(spec: str) -> List[Tuple[int, ...]]:
    """"T,B,H;T,B,H" (an optional 4th number is the input size I, default I=H)."""
    shapes = []
    for part in spec.replace(" ", "").split(";"):
        if not part:
            continue
        nums = tuple(int(v) for v in part.split(","))
        if len(nums) not in (3, 4) or min(nums) <= 0:
            raise argparse.ArgumentTypeError(f"bad shape {part!r}: want T,B,H or T,B,H,I (positive ints)")
        shapes.append(nums)
    if not shapes:
        raise argparse.ArgumentTypeError("no shapes given")
    return shapes


def parse_cells(spec: str) -> List[str]:
    cells = [c.strip().lower() for c in spec.split(",") if c.strip()]
    bad = [c for c in cells if c not in CELLS + VARIANTS]
    if bad or not cells:
        raise argparse.ArgumentTypeError(f"cells must be from {','.join(CELLS + VARIANTS)}, got {spec!r}")
    return cells


def _loadavg() -> Optional[List[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _git_rev() -> Optional[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "csrc", "fastrnn", "setup.py"],
                               cwd=here, capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class _Progress:
    """One line per step on stderr (or a user callable), with elapsed time."""

    def __init__(self, progress):
        self.t0 = time.perf_counter()
        if progress is True:
            self.fn = lambda msg: print(msg, file=sys.stderr, flush=True)
        elif callable(progress):
            self.fn = progress
        else:
            self.fn = None

    def __call__(self, msg: str):
        if self.fn is not None:
            self.fn(f"[{time.perf_counter() - self.t0:6.1f}s] {msg}")


def _cpu_snapshot() -> Optional[Tuple[float, float, float]]:
    """(wall s, CPU s busy on the whole machine, CPU s used by this process and its finished
    children)."""
    try:
        import resource
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
        busy = (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
        ru = resource.getrusage(resource.RUSAGE_SELF)
        rc = resource.getrusage(resource.RUSAGE_CHILDREN)  # our finished probes (sgemm subprocess)
        return time.perf_counter(), busy, ru.ru_utime + ru.ru_stime + rc.ru_utime + rc.ru_stime
    except (OSError, ImportError, ValueError, IndexError):
        return None


def _others_share(a, b) -> Optional[float]:
    """Share of the machine's CPU time that OTHER processes (and the hypervisor's steal) used
    between two snapshots: 0 on a quiet machine, 0.5 when they kept one of two cores busy."""
    if a is None or b is None or b[0] - a[0] <= 0:
        return None
    ncpu = os.cpu_count() or 1
    return min(1.0, max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / ((b[0] - a[0]) * ncpu)))


def _disturbance(others: Optional[float], threads: int) -> float:
    """How much of the CPU time our ``threads`` threads needed went to other processes: their
    share of the machine beyond the cores we leave free, per thread of ours."""
    if others is None:
        return 0.0
    ncpu = os.cpu_count() or 1
    return max(0.0, others * ncpu - max(0, ncpu - threads)) / max(1, min(threads, ncpu))


def wait_until_quiet(max_wait: float, window: float = 5.0, threshold: float = 0.1, progress=None,
                     threads: Optional[int] = None) -> Optional[float]:
    """Wait (at most ``max_wait`` s) for a ``window`` s stretch in which other processes use less
    than ``threshold`` of the CPUs (with ``threads``: disturb that many threads of ours by less than
    ``threshold``, see _disturbance). Returns the share seen in the last window (None: unknown)."""
    prog = progress if progress is not None else (lambda msg: None)
    t_end = time.perf_counter() + max_wait
    while True:
        a = _cpu_snapshot()
        time.sleep(max(0.1, min(window, t_end - time.perf_counter())))
        share = _others_share(a, _cpu_snapshot())
        level = share if threads is None or share is None else _disturbance(share, threads)
        if level is None or level < threshold or time.perf_counter() >= t_end:
            return share
        prog(f"waiting for a quiet machine: other processes use {share:.0%} of the CPUs")


def time_calls(fn: Callable[[], Any], *, warmup: int = 2, repeat: int = 5, min_time: float = 0.3,
               max_calls: int = 2000) -> Dict[str, Any]:
    """Median seconds per call of ``fn`` after ``warmup`` calls: at least ``repeat`` timed calls,
    more (up to ``max_calls``) until ``min_time`` seconds of timed calls have been spent.
    Also returns ``others``: the share of the machine's CPU that other processes used meanwhile."""
    from fastrnn.cli import timed_calls   # the timing loop `fastrnn bench` uses

    for _ in range(warmup):
        fn()
    snap0 = _cpu_snapshot()
    times = timed_calls(fn, min_time, repeat=repeat, warmup=0, max_calls=max_calls)
    snap1 = _cpu_snapshot()
    return {"median_s": statistics.median(times), "min_s": min(times), "calls": len(times),
            "times": list(times), "others": _others_share(snap0, snap1)}


# ----------------------------------------------------------------------------------------------
# machine limits: sgemm and L2 bandwidth
# ----------------------------------------------------------------------------------------------
def _sgemm_probe(n: int, reps: int) -> float:
    """Best-of-``reps`` GFLOP/s of scipy.linalg.blas.sgemm, C = A @ B, all n x n (Fortran order,
    so no copies), with whatever BLAS threads this process has."""
    from scipy.linalg import blas

    rng = np.random.default_rng(0)
    a = np.asfortranarray(rng.standard_normal((n, n), dtype=np.float32))
    b = np.asfortranarray(rng.standard_normal((n, n), dtype=np.float32))
    c = np.zeros((n, n), dtype=np.float32, order="F")
    blas.sgemm(1.0, a, b, 0.0, c, overwrite_c=1)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        blas.sgemm(1.0, a, b, 0.0, c, overwrite_c=1)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


# The subprocess loads this very file (stdlib + numpy imports only) and calls _sgemm_probe.
_PROBE_CMD = ("import importlib.util, sys; s = importlib.util.spec_from_file_location('fastrnn_bench_probe', "
              "sys.argv[1]); m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
              "print(m._sgemm_probe(int(sys.argv[2]), int(sys.argv[3])))")


def sgemm_gflops(threads: int, n: int = 2048, reps: int = 5) -> Tuple[float, str]:
    """Best-of-``reps`` GFLOP/s of scipy.linalg.blas.sgemm on an n x n x n problem with the BLAS
    limited to ``threads`` threads: threadpoolctl in this process if installed, else a subprocess
    with OPENBLAS_NUM_THREADS (and friends) set. Returns (GFLOP/s, method)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        import scipy.linalg.blas  # noqa: F401 - load the BLAS before limiting it
        with threadpool_limits(limits=threads, user_api="blas"):
            return _sgemm_probe(n, reps), "threadpoolctl"
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
        env[var] = str(threads)
    res = subprocess.run([sys.executable, "-c", _PROBE_CMD, os.path.abspath(__file__), str(n), str(reps)],
                         env=env, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"sgemm probe failed: {res.stderr.strip()[-500:]}")
    return float(res.stdout.strip().splitlines()[-1]), "a subprocess with OPENBLAS_NUM_THREADS"


def read_method() -> str:
    """How read_bandwidth reads: fastrnn's probe on its active ISA, or numpy's max reduction."""
    fastrnn = import_fastrnn()
    if hasattr(fastrnn._core, "_read_probe"):
        return f"fastrnn's {fastrnn.get_isa()} read loop"
    return "np.max"


def read_bandwidth(threads: int, nbytes: int = 512 * 1024, total_bytes_per_thread: float = 2e9,
                   trials: int = 7, zigzag: bool = False) -> float:
    """Read bandwidth in GB/s with ``threads`` Python threads, each reading its own 64-byte
    aligned float32 array of ``nbytes`` over and over in one call that releases the GIL. 512 KB
    fits in L2 but not in L1: that measures L2 read bandwidth. Best of ``trials`` (noise only ever
    lowers it).

    The reading loop is fastrnn's ``_core._read_probe`` (the widest loads of the active ISA,
    eight independent sums). numpy's max reduction, the fallback for a fastrnn without it, and
    OpenBLAS's sgemv read an L2-resident array at about half the rate the L2 delivers to such a
    loop (AMD EPYC here: 110-128 against ~260 GB/s per core), which would make the batch-1 bound
    twice too loose; beyond L2 all of them read alike. zigzag: odd passes walk the array
    backwards (fastrnn's probe only), as fastrnn's time loop walks W_hh on odd steps."""
    n = nbytes // 4
    reps = max(1, int(total_bytes_per_thread // nbytes))
    fastrnn = import_fastrnn()
    probe = getattr(fastrnn._core, "_read_probe", None)
    views = []
    for _ in range(threads):
        raw = np.random.default_rng(0).random(n + 16, dtype=np.float32)
        off = (-raw.ctypes.data % 64) // 4
        views.append(raw[off:off + n])

    def read(v, r):
        if probe is not None:
            probe(v, r, zigzag)
        else:   # a stride-0 broadcast view: one numpy call, the GIL released throughout
            np.broadcast_to(v, (r, n)).max(axis=1)

    for v in views:  # bring pages in, fill the caches
        read(v, 2)
    best = 0.0
    for _ in range(trials):
        start = threading.Barrier(threads + 1)

        def work(v, start=start):
            start.wait()
            read(v, reps)

        ths = [threading.Thread(target=work, args=(v,)) for v in views]
        for th in ths:
            th.start()
        start.wait()
        t0 = time.perf_counter()
        for th in ths:
            th.join()
        dt = time.perf_counter() - t0
        best = max(best, threads * reps * nbytes / dt / 1e9)
    return best


def measure_machine_limits(threads: Optional[int] = None, progress=None,
                           stream_bytes: Sequence[int] = ()) -> Dict[str, Any]:
    """sgemm GFLOP/s and read bandwidth (L2 and beyond) on 1 core, on ``threads`` cores (if it
    differs) and on all cores; and on ``threads`` cores, for each size in ``stream_bytes``, the
    rate at which each thread reads an array of that size back and forth (stream_read_gbs, keyed
    by the size as a string; see stream_sizes)."""
    prog = progress if isinstance(progress, _Progress) else _Progress(progress)
    ncpu = available_cpus()
    counts = sorted({1, ncpu} | ({min(threads, ncpu)} if threads else set()))
    lim: Dict[str, Any] = {"cpus": ncpu, "cpu_model": _cpu_model(), "sgemm_gflops": {},
                           "l2_read_gbs": {}, "mem_read_gbs": {}, "read_method": read_method()}
    snap0 = _cpu_snapshot()
    for k in counts:
        prog(f"machine limits: sgemm 2048^3 on {k} thread(s)")
        gf, method = sgemm_gflops(k)
        lim["sgemm_gflops"][k] = gf
        lim["sgemm_method"] = method
    for k in counts:
        prog(f"machine limits: L2 read bandwidth on {k} thread(s)")
        lim["l2_read_gbs"][k] = read_bandwidth(k)
        # 8 MB per thread: 4x this machine's L2, where a W_hh too big for the L2s is read from
        # (the L3 here; 64 MB per thread, i.e. DRAM, reads ~35% slower on 2 cores).
        lim["mem_read_gbs"][k] = read_bandwidth(k, nbytes=8 << 20, total_bytes_per_thread=1e9, trials=5)
    k = min(threads or ncpu, ncpu)
    if stream_bytes and lim["read_method"] != "np.max":   # (the back-and-forth walk is the probe's)
        lim["stream_threads"] = k
        lim["stream_read_gbs"] = {}
        for nb in sorted(set(stream_bytes)):
            prog(f"machine limits: {nb >> 10} KB per thread read back and forth on {k} thread(s)")
            lim["stream_read_gbs"][str(nb)] = read_bandwidth(k, nbytes=nb, total_bytes_per_thread=5e8,
                                                             trials=5, zigzag=True)
    lim["others"] = _others_share(snap0, _cpu_snapshot())
    lim["l2_bytes_per_core"] = l2_bytes_per_core()   # for the "does W_hh fit in L2" note
    return lim


# ----------------------------------------------------------------------------------------------
# engines
# ----------------------------------------------------------------------------------------------
class EngineUnavailable(Exception):
    pass


class EngineNotApplicable(Exception):
    """The engine has no such layer (e.g. torch's GRU has only one form); skips one row, not the
    engine."""


def _peer_versions() -> Dict[str, Optional[str]]:
    out = {}
    for name, mod in (("torch", "torch"), ("onnxruntime", "onnxruntime"), ("openvino", "openvino"),
                      ("onnx", "onnx")):
        try:
            m = __import__(mod)
            out[name] = getattr(m, "__version__", "?")
        except Exception:  # noqa: BLE001 - a broken install counts as missing
            out[name] = None
    return out


def _onnx_order(cell: str, H: int) -> np.ndarray:
    """Row permutation torch gate order -> ONNX gate order (LSTM ifgo -> iofc, GRU rzn -> zrh)."""
    blocks = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2], "rnn": [0]}[BASE[cell]]
    return np.concatenate([np.arange(b * H, (b + 1) * H) for b in blocks])


def build_onnx_node_model(cell: str, sd: Dict[str, np.ndarray], T: int, B: int, I: int, H: int,
                          bidirectional: bool):
    """A model with a single ONNX LSTM/GRU/RNN node computing what the torch module does (gru0:
    the original-form GRU)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if proj_size_of(cell, H):
        raise EngineNotApplicable("ONNX's LSTM has no projection")

    perm = _onnx_order(cell, H)
    sfx = ["", "_reverse"] if bidirectional else [""]
    W = np.stack([sd[f"weight_ih_l0{s}"][perm] for s in sfx]).astype(np.float32)
    R = np.stack([sd[f"weight_hh_l0{s}"][perm] for s in sfx]).astype(np.float32)
    Bias = np.stack([np.concatenate([sd[f"bias_ih_l0{s}"][perm], sd[f"bias_hh_l0{s}"][perm]])
                     for s in sfx]).astype(np.float32)
    D = len(sfx)
    attrs: Dict[str, Any] = {"hidden_size": H, "direction": "bidirectional" if bidirectional else "forward"}
    if BASE[cell] == "gru":
        attrs["linear_before_reset"] = 0 if cell == "gru0" else 1
    if cell == "rnn":
        attrs["activations"] = ["Tanh"] * D
    outs = ["Y", "Y_h", "Y_c"] if BASE[cell] == "lstm" else ["Y", "Y_h"]
    node = helper.make_node(BASE[cell].upper(), ["X", "W", "R", "B"], outs, **attrs)
    out_infos = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [T, D, B, H])]
    out_infos += [helper.make_tensor_value_info(o, TensorProto.FLOAT, [D, B, H]) for o in outs[1:]]
    graph = helper.make_graph(
        [node], f"{cell}_bench",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I])], out_infos,
        initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"),
                     numpy_helper.from_array(Bias, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)],
                              producer_name="fastrnn-bench")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _onnx_to_torch_layout(res, cell: str) -> Tuple[np.ndarray, ...]:
    y = res[0]  # (T, D, B, H) -> (T, B, D*H)
    T, D, B, H = y.shape
    out = np.ascontiguousarray(y.transpose(0, 2, 1, 3)).reshape(T, B, D * H)
    return (out,) + tuple(np.asarray(r) for r in res[1:])


def make_engine(name: str, cell: str, sd: Dict[str, np.ndarray], x: np.ndarray, threads: int,
                bidirectional: bool, onnx_path: Optional[str], onnx_model=None, dtype: str = "fp32"):
    """(call, to_outputs): ``call()`` runs one forward pass on ``x`` the way a user of that engine
    would (numpy in, fresh arrays out); ``to_outputs(result)`` gives (out, h_n[, c_n]) in torch's
    layout for the agreement check (outside the timing). ``call.precision`` says what the engine
    computes in: with ``dtype`` bf16/int8 each peer uses its own reduced-precision mode where it
    has one for this cell (torch: bf16 module; onnxruntime: quantize_dynamic, int8 LSTM only;
    openvino: INFERENCE_PRECISION_HINT=bf16) and fp32 otherwise."""
    T, B, I = x.shape
    H = sd["weight_ih_l0"].shape[0] // GATES[cell]
    if name != "torch" and proj_size_of(cell, H):
        raise EngineNotApplicable("ONNX's LSTM has no projection")
    if name == "torch":
        if cell == "gru0":
            raise EngineNotApplicable("torch has no original-form GRU")
        try:
            import torch
        except ImportError as e:
            raise EngineUnavailable(f"torch not installed ({e})")
        torch.set_num_threads(threads)
        cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[BASE[cell]]
        extra = {"proj_size": proj_size_of(cell, H)} if proj_size_of(cell, H) else {}
        mod = cls(I, H, bidirectional=bidirectional, **extra).eval()
        mod.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()})
        precision = "fp32"
        if dtype == "bf16":
            mod, precision = mod.to(torch.bfloat16), "bf16"
        elif dtype == "int8" and BASE[cell] in ("lstm", "gru"):
            import warnings
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    qmod = torch.ao.quantization.quantize_dynamic(mod, {cls}, dtype=torch.qint8)
                if type(qmod) is not cls:  # torch 2.13 hands back the float module unchanged
                    mod, precision = qmod, "int8"
            except Exception:  # noqa: BLE001 - no dynamic quantization: stay fp32
                pass
        in_dtype = torch.bfloat16 if precision == "bf16" else None

        def call():
            with torch.inference_mode():
                xt = torch.from_numpy(x)
                return mod(xt if in_dtype is None else xt.to(in_dtype))

        def to_outputs(r):
            out, h = r
            hs = h if isinstance(h, tuple) else (h,)
            return (out.float().numpy(),) + tuple(t.float().numpy() for t in hs)

        call.precision = precision
        return call, to_outputs

    if name == "onnxruntime":
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise EngineUnavailable(f"onnxruntime not installed ({e})")
        if onnx_model is None:
            raise EngineUnavailable("onnx not installed (needed to build the model)")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        model_bytes, precision = onnx_model.SerializeToString(), "fp32"
        if dtype == "int8" and BASE[cell] == "lstm":  # ORT's dynamic quantization covers LSTM, not GRU/RNN
            import logging
            import onnx
            from onnxruntime.quantization import QuantType, quantize_dynamic
            src = onnx_path
            tmp = None
            if src is None:
                tmp = tempfile.TemporaryDirectory(prefix="fastrnn-bench-")
                src = os.path.join(tmp.name, "m.onnx")
                onnx.save(onnx_model, src)
            dst = src[:-5] + ".int8.onnx"
            level = logging.getLogger().level
            logging.getLogger().setLevel(logging.ERROR)
            try:
                quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
            finally:
                logging.getLogger().setLevel(level)
            qm = onnx.load(dst)
            if any(n.op_type.startswith("DynamicQuantize") for n in qm.graph.node):
                model_bytes, precision = qm.SerializeToString(), "int8"
            if tmp is not None:
                tmp.cleanup()
        sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
        feed = {"X": x}

        def call():
            return sess.run(None, feed)

        call.precision = precision
        return call, (lambda r: _onnx_to_torch_layout(r, cell))

    if name == "openvino":
        try:
            import openvino as ov
        except ImportError as e:
            raise EngineUnavailable(f"openvino not installed ({e})")
        if onnx_path is None:
            raise EngineUnavailable("onnx not installed (needed to build the model)")
        precision = "bf16" if dtype == "bf16" else "fp32"
        core = ov.Core()
        model = ov.convert_model(onnx_path)
        # The hint matters: on CPUs with AMX/AVX512-BF16 openvino runs bf16 unless told f32.
        compiled = core.compile_model(model, "CPU", {
            "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
        req = compiled.create_infer_request()

        def call():
            # share_inputs avoids one copy of x; outputs are copied into fresh arrays like the others
            return req.infer({0: x}, share_inputs=True)

        call.precision = precision
        return call, (lambda r: _onnx_to_torch_layout([r[i] for i in range(len(r))], cell))

    raise ValueError(f"unknown engine {name!r}")


def _max_abs_diff(ref: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> float:
    if len(ref) != len(got):
        return float("inf")
    worst = 0.0
    for a, b in zip(ref, got):
        a = np.asarray(a, dtype=np.float32)
        b = np.asarray(b, dtype=np.float32)
        if a.shape != b.shape:
            return float("inf")
        d = np.abs(a - b)
        worst = max(worst, float(np.nanmax(d)) if d.size else 0.0)
        if np.isnan(d).any():
            return float("nan")
    return worst


def quantize_available() -> bool:
    fastrnn = import_fastrnn()
    return hasattr(fastrnn.RNN(2, 2, seed=0), "quantize")


# ----------------------------------------------------------------------------------------------
# the comparison
# ----------------------------------------------------------------------------------------------
def run_comparison(cells: Sequence[str] = CELLS, shapes: Optional[Sequence[Sequence[int]]] = None, *,
                   threads: Optional[int] = None, bidirectional: bool = False, dtype: str = "fp32",
                   engines: Sequence[str] = ENGINES, warmup: int = 2, repeat: int = 6,
                   min_time: float = 0.3, rounds: int = 3, max_calls: int = 2000, seed: int = 0,
                   limits: Optional[Dict[str, Any]] = None, pause: float = 0.1,
                   busy_threshold: float = 0.2, retries: int = 2, retry_wait: float = 30.0,
                   retry_budget: float = 180.0,
                   progress=True, notes: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """Run every engine on every (cell, shape); return one dict per (cell, shape).

    shapes: (T, B, H) or (T, B, H, I) tuples (default: DEFAULT_SHAPES, I=H).
    threads: given to every engine alike (default: the CPUs this process may use).
    limits: the dict of :func:`measure_machine_limits`; if given, batch-1 rows get the per-step
    bound from the L2 bandwidth at ``threads`` threads.
    progress: True (stderr), False, or a callable taking a line.
    notes: a list that receives the notes (skipped engines, ...); they are printed to stderr too.
    busy_threshold, retries, retry_wait, retry_budget: the machine may be shared; when other
    processes took more than ``busy_threshold`` of the CPU time our threads needed (beyond the
    cores we leave free) while an engine was timed, that engine is timed again once a 1-s window is
    quiet (waiting at most ``retry_wait`` s), up to ``retries`` times, while less than
    ``retry_budget`` s in all have gone to waiting and re-timing; the least disturbed timing is kept.
    rounds: the engines of a shape take turns this many times, each turn at least
    ``ceil(repeat / rounds)`` calls and ``min_time / rounds`` s after a warm-up call; an engine's
    median is over all its timed calls.

    Each row: cell, T, B, H, I, directions, gflop (per call), engines {name: {ms, min_ms, calls,
    gflops, precision, max_abs_diff, others} or {skipped: reason}}, best_peer, best_peer_ms, speedup
    (best peer's ms / fastrnn's ms: > 1 means fastrnn is faster), max_abs_diff (worst over peers),
    agree (bool), others (the largest share of the machine's CPU that other processes used while an
    engine of this row was timed); with dtype bf16/int8 also quant_err (fastrnn's quantized outputs
    against its fp32 ones; the peers get the quantized layer's dequantized weights);
    batch-1 rows with limits also whh_bytes, step_us, l2_bound_us, x_l2_bound, proj_bound_us,
    mem_bound_us (W_hh from beyond L2, at mem_read_gbs, plus the projection), whh_fits_l2, bound_us (l2_bound_us +
    proj_bound_us where W_hh fits the L2s of the threads used, else mem_bound_us), x_bound.
    """
    fastrnn = import_fastrnn()

    prog = progress if isinstance(progress, _Progress) else _Progress(progress)
    notes = [] if notes is None else notes

    def note(msg):
        notes.append(msg)
        prog("note: " + msg)

    threads = threads or available_cpus()
    shapes = [tuple(s) for s in (shapes or DEFAULT_SHAPES)]
    cells = [c.lower() for c in cells]
    engines = ["fastrnn"] + [e for e in engines if e != "fastrnn"]
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if dtype != "fp32" and not quantize_available():
        note(f"--dtype {dtype}: not available, this fastrnn has no layer.quantize() yet; skipping")
        return []
    fastrnn.set_num_threads(threads)

    try:
        import onnx  # noqa: F401
        have_onnx = True
    except ImportError:
        have_onnx = False
    skipped: Dict[str, str] = {}
    retry_spent = [0.0]  # seconds spent re-timing, against retry_budget

    def timed_turn(eng: str, call: Callable[[], Any], first: int, calls: int) -> Dict[str, Any]:
        """One engine's turn: `first` warm-up calls, then its share of the calls and of
        min_time; timed again (1 warm-up) while other processes disturbed it, within the
        retry limits. Returns the least disturbed time_calls result."""
        tm = None
        for attempt in range(1 + max(0, retries)):
            t = time_calls(call, warmup=first if attempt == 0 else 1, repeat=calls,
                           min_time=min_time / rounds, max_calls=max(1, max_calls // rounds))
            if tm is None or (t["others"] or 0) < (tm["others"] or 0):
                tm = t
            if _disturbance(t["others"], threads) <= busy_threshold:
                break
            if attempt >= retries or retry_spent[0] >= retry_budget:
                break
            prog(f"    other processes used {t['others']:.0%} of the CPUs meanwhile: "
                 f"timing {eng} again once they calm down (<= {retry_wait:g} s)")
            t_wait = time.perf_counter()
            wait_until_quiet(min(retry_wait, retry_budget - retry_spent[0]), window=1.0,
                             threshold=busy_threshold, threads=threads)
            retry_spent[0] += time.perf_counter() - t_wait + t["median_s"] * (t["calls"] + 1)
        return tm

    D = 2 if bidirectional else 1
    rows: List[Dict[str, Any]] = []
    tmpdir = tempfile.TemporaryDirectory(prefix="fastrnn-bench-")
    n_total = len(cells) * len(shapes)
    try:
        for ci, cell in enumerate(cells):
            for si, shp in enumerate(shapes):
                T, B, H = shp[:3]
                I = shp[3] if len(shp) > 3 else H
                idx = ci * len(shapes) + si + 1
                cls = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU, "rnn": fastrnn.RNN}[BASE[cell]]
                extra = ({"linear_before_reset": False} if cell == "gru0" else
                         {"proj_size": proj_size_of(cell, H)} if proj_size_of(cell, H) else {})
                layer = cls(I, H, bidirectional=bidirectional, seed=seed, **extra)
                x = np.random.default_rng(seed + 1).standard_normal((T, B, I), dtype=np.float32)
                fp32_outs = None
                if dtype != "fp32":
                    fp32_outs = layer(x)
                    layer = layer.quantize(dtype)
                # reduced precision: the peers get the weights fastrnn computes with (dequantized)
                sd = layer.state_dict()
                gflop = flops_per_call(cell, T, B, H, I, D) / 1e9
                row: Dict[str, Any] = {"cell": cell, "T": T, "B": B, "H": H, "I": I, "directions": D,
                                       "threads": threads, "dtype": dtype, "gflop": gflop, "engines": {}}
                onnx_model, onnx_path = None, None
                if (have_onnx and any(e in engines for e in ("onnxruntime", "openvino"))
                        and not proj_size_of(cell, H)):
                    onnx_model = build_onnx_node_model(cell, sd, T, B, I, H, bidirectional)
                    onnx_path = os.path.join(tmpdir.name, f"{cell}_{T}_{B}_{H}_{I}.onnx")
                    import onnx
                    onnx.save(onnx_model, onnx_path)
                ref = None
                ready = []  # (engine, call, result dict): built and agreeing, timed below
                for eng in engines:
                    if eng in skipped:
                        row["engines"][eng] = {"skipped": skipped[eng]}
                        continue
                    prog(f"[{idx}/{n_total}] {cell} T={T} B={B} H={H}: {eng}")
                    try:
                        if eng == "fastrnn":
                            def call(layer=layer, x=x):
                                return layer(x)

                            call.precision = dtype

                            def to_outputs(r):
                                return (r[0],) + (tuple(r[1]) if isinstance(r[1], tuple) else (r[1],))
                        else:
                            call, to_outputs = make_engine(eng, cell, sd, x, threads, bidirectional,
                                                           onnx_path, onnx_model, dtype=dtype)
                    except EngineNotApplicable as e:
                        row["engines"][eng] = {"skipped": str(e)}
                        continue
                    except EngineUnavailable as e:
                        skipped[eng] = str(e)
                        note(f"{eng} skipped: {e}")
                        row["engines"][eng] = {"skipped": str(e)}
                        continue
                    except Exception as e:  # noqa: BLE001 - one failing peer must not end the run
                        msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                        note(f"{eng} failed on {cell} {shp}: {msg}")
                        row["engines"][eng] = {"skipped": "failed: " + msg}
                        continue
                    try:
                        outs = to_outputs(call())  # first call: the agreement check, counts as warm-up
                    except Exception as e:  # noqa: BLE001
                        msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                        note(f"{eng} failed on {cell} {shp}: {msg}")
                        row["engines"][eng] = {"skipped": "failed: " + msg}
                        continue
                    res: Dict[str, Any] = {"precision": getattr(call, "precision", "fp32")}
                    if eng == "fastrnn":
                        ref = outs
                        if fp32_outs is not None:
                            row["quant_err"] = _max_abs_diff(to_outputs(fp32_outs), outs)
                    elif ref is not None:
                        res["max_abs_diff"] = _max_abs_diff(ref, outs)
                    row["engines"][eng] = res
                    ready.append((eng, call, res))
                    del to_outputs, outs
                # The engines take turns, `rounds` times, each round a share of the calls: a
                # machine whose speed drifts (other tenants, clocks) slows every engine alike
                # instead of whichever was timed in the slow stretch. The order rotates so no
                # engine always follows the same one; each turn starts with a warm-up call, as
                # the previous engine's weights have displaced its own from the caches.
                per_round = max(1, -(-repeat // rounds))
                taken: Dict[str, List[Any]] = {eng: [] for eng, _, _ in ready}
                for rnd in range(rounds):
                    for i in range(len(ready)):
                        eng, call, res = ready[(i + rnd) % len(ready)]
                        if rounds > 1:
                            prog(f"[{idx}/{n_total}] {cell} T={T} B={B} H={H}: {eng} (round {rnd + 1}/{rounds})")
                        first = max(0, warmup - 1) if rnd == 0 else min(warmup, 1)
                        taken[eng].append(timed_turn(eng, call, first, per_round))
                        time.sleep(pause)  # let this engine's spinning threads go to sleep
                for eng, call, res in ready:
                    times = [v for tm in taken[eng] for v in tm["times"]]
                    others = [tm["others"] for tm in taken[eng] if tm["others"] is not None]
                    med = statistics.median(times)
                    res.update(ms=med * 1e3, min_ms=min(times) * 1e3, calls=len(times),
                               gflops=gflop / med, others=max(others) if others else None)
                ready.clear()
                call = None  # the loops' last binding would keep that engine (and its threads) alive
                gc.collect()
                _finish_row(row, limits, threads)
                rows.append(row)
                prog(f"[{idx}/{n_total}] {cell} T={T} B={B} H={H}: " + ", ".join(
                    f"{e} {r['ms']:.3g} ms" for e, r in row["engines"].items() if "ms" in r)
                    + (f"; speed-up {row['speedup']:.2f}x" if row.get("speedup") else ""))
    finally:
        tmpdir.cleanup()
    return rows


def _finish_row(row: Dict[str, Any], limits: Optional[Dict[str, Any]], threads: int):
    fr = row["engines"].get("fastrnn", {})
    peers = {e: r for e, r in row["engines"].items() if e != "fastrnn" and "ms" in r}
    if peers and "ms" in fr:
        best = min(peers, key=lambda e: peers[e]["ms"])
        row.update(best_peer=best, best_peer_ms=peers[best]["ms"], speedup=peers[best]["ms"] / fr["ms"])
    else:
        row.update(best_peer=None, best_peer_ms=None, speedup=None)
    diffs = [r["max_abs_diff"] for r in peers.values() if r.get("max_abs_diff") is not None]
    row["max_abs_diff"] = max(diffs) if diffs else None
    row["agree"] = all(d <= agree_tol(row.get("dtype", "fp32")) for d in diffs)  # False for nan/inf too
    others = [r.get("others") for r in row["engines"].values() if r.get("others") is not None]
    row["others"] = max(others) if others else None
    if row["B"] == 1 and limits and "ms" in fr:
        G, H, D = GATES[row["cell"]], row["H"], row["directions"]
        k = min(threads, limits["cpus"])
        whh = whh_bytes(row["cell"], H, D, row.get("dtype", "fp32"))
        l2 = _at_threads(limits["l2_read_gbs"], k)
        mem = _at_threads(limits["mem_read_gbs"], k)
        # this row's slices read back and forth, where measured (else an 8 MB array's forward rate)
        streamed = (limits.get("stream_read_gbs") or {}).get(str(stream_slice_bytes(whh, D, k)))
        if streamed and limits.get("stream_threads") == k:
            mem = streamed
        step_us = fr["ms"] * 1e3 / row["T"]
        l2_bytes = limits.get("l2_bytes_per_core")
        l2_us = whh / (l2 * 1e9) * 1e6
        # step_us is a whole call over T, so it holds each step's share of the input projection
        # too: 2*G*H*I flops per step and direction, at best at the sgemm rate of k cores (fp32;
        # the quantized projections may run faster than fp32 sgemm, so none is counted there).
        proj_us = (2.0 * G * H * row["I"] * D / (_at_threads(limits["sgemm_gflops"], k) * 1e9) * 1e6
                   if row.get("dtype", "fp32") == "fp32" else 0.0)
        fits = whh_fits_l2(whh, l2_bytes, k)
        # the bound: W_hh from the L2s where it fits them (or the L2 size is unknown), else from
        # beyond L2 at the rate its slices stream back and forth, plus the projection's share
        mem_us = whh / (mem * 1e9) * 1e6 + proj_us
        bound = l2_us + proj_us if fits is not False else mem_us
        row.update(whh_bytes=whh, step_us=step_us, mem_read_gbs=mem, l2_bound_us=l2_us, x_l2_bound=step_us / l2_us,
                   proj_bound_us=proj_us, bound_us=bound, x_bound=step_us / bound,
                   mem_bound_us=mem_us, whh_fits_l2=fits)


def _at_threads(table: Dict[Any, float], k: int) -> float:
    table = {int(t): v for t, v in table.items()}
    if k in table:
        return table[k]
    return table[max(t for t in table if t <= k)]


# ----------------------------------------------------------------------------------------------
# printing
# ----------------------------------------------------------------------------------------------
def _fmt_ms(v: float) -> str:
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def format_limits(lim: Dict[str, Any], threads: int) -> str:
    lines = [f"Machine: {lim['cpu_model']}, {lim['cpus']} CPUs available; engines run with {threads} thread(s)."]
    sg = lim["sgemm_gflops"]
    lines.append("sgemm (scipy.linalg.blas.sgemm 2048^3, best of 5; "
                 f"threads limited by {lim.get('sgemm_method', '?')}): "
                 + ", ".join(f"{v:.0f} GFLOP/s on {k} core{'s' if int(k) > 1 else ''}" for k, v in sg.items()))
    lines.append(f"read bandwidth ({lim.get('read_method', 'np.max')} over a per-thread array, best of 7): L2 (512 KB) "
                 + ", ".join(f"{v:.0f} GB/s on {k}" for k, v in lim["l2_read_gbs"].items())
                 + "; beyond L2 (8 MB) "
                 + ", ".join(f"{v:.0f} GB/s on {k}" for k, v in lim["mem_read_gbs"].items()))
    if lim.get("stream_read_gbs"):
        lines.append(f"W_hh slices beyond L2, each thread's read forwards and backwards on alternate passes "
                     f"(as fastrnn walks them), on {lim['stream_threads']}: "
                     + ", ".join(f"{int(nb) >> 10} KB per thread {v:.0f} GB/s"
                                 for nb, v in sorted(lim["stream_read_gbs"].items(), key=lambda kv: int(kv[0]))))
    extra = []
    if lim.get("l2_bytes_per_core"):
        extra.append(f"L2 per core: {lim['l2_bytes_per_core'] // 1024} KB")
    if lim.get("others") is not None:
        extra.append(f"other processes used {lim['others']:.0%} of the CPUs while these were measured"
                     + (" (limits understated)" if lim["others"] > 0.2 else ""))
    if extra:
        lines.append("; ".join(extra))
    return "\n".join(lines)


def format_table(rows: List[Dict[str, Any]], engines: Sequence[str]) -> str:
    """Markdown table, one row per (cell, shape): ms and GFLOP/s per engine, speed-up, agreement."""
    shown = [e for e in engines if any("ms" in r["engines"].get(e, {}) for r in rows)]
    head = ["cell", "T", "B", "H"] + [f"{e} ms" for e in shown] + [f"{e} GF/s" for e in shown] + [
        "speed-up vs best peer", "max abs diff", "others' CPU"]
    quant = any(r.get("dtype", "fp32") != "fp32" for r in rows)
    if quant:
        head.insert(-1, "fastrnn vs its fp32")
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if i >= 1 else "---" for i in range(len(head))) + "|"]
    for r in rows:
        cells = [r["cell"] + ("-bi" if r["directions"] == 2 else ""), str(r["T"]), str(r["B"]),
                 str(r["H"]) + (f" (I={r['I']})" if r["I"] != r["H"] else "")]
        for e in shown:
            er = r["engines"].get(e, {})
            other = er.get("precision") not in (None, r.get("dtype", "fp32"))
            cells.append((_fmt_ms(er["ms"]) + (f" ({er['precision']})" if other else "")) if "ms" in er else "-")
        for e in shown:
            er = r["engines"].get(e, {})
            cells.append(f"{er['gflops']:.1f}" if "ms" in er else "-")
        cells.append(f"{r['speedup']:.2f}x ({r['best_peer']})" if r.get("speedup") else "-")
        d = r.get("max_abs_diff")
        cells.append("-" if d is None else f"{d:.1e}" + ("" if r["agree"] else " MISMATCH"))
        if quant:
            q = r.get("quant_err")
            cells.append("-" if q is None else f"{q:.1e}")
        cells.append("-" if r.get("others") is None else f"{r['others']:.0%}")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def format_bound_table(rows: List[Dict[str, Any]]) -> str:
    b1 = [r for r in rows if "step_us" in r]
    if not b1:
        return ""
    head = ["cell", "T", "H", "W_hh KB", "fastrnn us/step", "W_hh from L2 us", "projection us",
            "bound us/step", "x bound", "x W_hh-only bound", "beyond-L2 bound us/step", "beyond-L2 GB/s",
            "W_hh fits in L2"]
    out = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in b1:
        fits = {True: "yes", False: "no", None: "?"}[r.get("whh_fits_l2")]
        out.append("| " + " | ".join([
            r["cell"] + ("-bi" if r["directions"] == 2 else ""), str(r["T"]), str(r["H"]),
            f"{r['whh_bytes'] / 1024:.0f}", f"{r['step_us']:.2f}", f"{r['l2_bound_us']:.2f}",
            f"{r['proj_bound_us']:.2f}", f"{r['bound_us']:.2f}", f"{r['x_bound']:.2f}",
            f"{r['x_l2_bound']:.2f}", f"{r['mem_bound_us']:.2f}",
            f"{r['mem_read_gbs']:.0f}" if r.get("mem_read_gbs") else "?", fits]) + " |")
    return "\n".join(out)


def report_blocks(run: Dict[str, Any]) -> List[Tuple[str, Any]]:
    """The report of a run (the dict main() writes with --json) as blocks for render_report."""
    rows, limits, threads = run["results"], run.get("limits"), run["threads"]
    v = run.get("versions", {})
    head = [f"fastrnn {run.get('fastrnn_version', '?')} (git {run.get('fastrnn_git') or '?'}, ISA {run.get('isa')})"
            + "; peers: " + ", ".join(f"{k} {x or 'not installed'}" for k, x in v.items())
            + f"; numpy {run.get('numpy', '?')}, Python {run.get('python', '?')}",
            f"threads={threads} dtype={run['dtype']} bidirectional={run['bidirectional']}; "
            f"median of >= {run['repeat']} timed calls (>= {run['min_time']:g} s) after {run['warmup']} warm-ups"
            + (f", the engines taking turns in {run['rounds']} rounds" if run.get("rounds", 1) > 1 else "") + "; "
            f"load average {run.get('loadavg_before')} before, {run.get('loadavg_after')} after; "
            f"{run.get('seconds', 0):.0f} s in all"]
    if run.get("sanitizer"):
        head.append(f"WARNING: {run['sanitizer']} is loaded: fastrnn was built with a sanitizer, "
                    "its timings mean nothing")
    if limits:
        head += format_limits(limits, threads).splitlines()
    blocks: List[Tuple[str, Any]] = [("lines", head), ("table", format_table(rows, run["engines"]))]
    bt = format_bound_table(rows)
    if bt and limits:
        k = min(threads, limits["cpus"])
        blocks.append(("lines", [f"Batch-1 time per step (a call's time / T) vs its bound on {k} core(s): "
                                 f"reading W_hh from L2 ({_at_threads(limits['l2_read_gbs'], k):.0f} GB/s) "
                                 "plus the step's share of the input projection at the sgemm rate "
                                 f"({_at_threads(limits['sgemm_gflops'], k):.0f} GFLOP/s; fp32 only); where W_hh "
                                 "does not fit the L2s, reading it from beyond L2 at the rate given (its slices "
                                 "read back and forth where measured) plus that share:"]))
        blocks.append(("table", bt))
    tail = [f"note: {n}" for n in run.get("notes", [])]
    if any(not r["agree"] for r in rows):
        tail.append(f"WARNING: some outputs differ from fastrnn's by more than {agree_tol(run['dtype']):g} "
                    "(MISMATCH rows)")
    if tail:
        blocks.append(("lines", tail))
    return blocks


def render_report(blocks: List[Tuple[str, Any]], markdown: bool = False) -> str:
    """Blocks of ("lines", [str]) and ("table", str) as terminal text, or as markdown (lines as
    bullets, blank lines around everything so that tables stay tables)."""
    out: List[str] = []
    for kind, content in blocks:
        if kind == "table":
            out += ["", content, ""] if not markdown else [content, ""]
        elif markdown:
            out += [f"- {ln}" for ln in content] + [""]
        else:
            out += list(content)
    return "\n".join(out).strip("\n").replace("\n\n\n", "\n\n")


def plot(rows: List[Dict[str, Any]], engines: Sequence[str], path: str) -> Optional[str]:
    """Latency vs H, one line per engine (and per (T, B) series), one panel per cell."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "matplotlib not installed: no plot"
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    fig, axes = plt.subplots(1, len(cells), figsize=(5.5 * len(cells), 4.5), squeeze=False)
    styles = ["-", "--", ":", "-."]
    colors = {e: f"C{i}" for i, e in enumerate(ENGINES)}
    for ax, cell in zip(axes[0], cells):
        cr = [r for r in rows if r["cell"] == cell]
        series = list(dict.fromkeys((r["T"], r["B"]) for r in cr))
        series = [s for s in series if len({r["H"] for r in cr if (r["T"], r["B"]) == s}) > 1] or series
        for si, (T, B) in enumerate(series):
            sr = sorted((r for r in cr if (r["T"], r["B"]) == (T, B)), key=lambda r: r["H"])
            for e in engines:
                pts = [(r["H"], r["engines"][e]["ms"]) for r in sr if "ms" in r["engines"].get(e, {})]
                if pts:
                    ax.plot(*zip(*pts), styles[si % len(styles)], marker="o", color=colors.get(e),
                            label=f"{e} T={T} B={B}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        hs = sorted({r["H"] for r in cr})
        ax.set_xticks(hs)
        ax.set_xticklabels([str(h) for h in hs])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("hidden size H")
        ax.set_ylabel("ms per call (median)")
        ax.set_title(cell.upper() + (" bidirectional" if cr and cr[0]["directions"] == 2 else ""))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="compare.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: python benchmarks/compare.py lstm,gru --threads 1 --shapes '100,1,256;100,64,512'")
    p.add_argument("cells_pos", nargs="?", type=parse_cells, metavar="CELLS",
                   help="comma-separated cells (lstm,gru,rnn; variants gru0: original-form GRU, "
                        "lstmp: LSTM with proj_size H/2); same as --cells")
    p.add_argument("--cells", type=parse_cells, default=None,
                   help="comma-separated cells (default: lstm,gru,rnn; variants gru0, lstmp on request)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for every engine (default: the CPUs this process may use)")
    p.add_argument("--bidirectional", action="store_true", help="bidirectional layers")
    p.add_argument("--dtype", choices=DTYPES, default="fp32",
                   help="fastrnn's weight type (bf16/int8 need layer.quantize)")
    p.add_argument("--shapes", type=parse_shapes, default=None,
                   help="'T,B,H;T,B,H;...' (optional 4th number: input size I; default I=H)")
    p.add_argument("--engines", default=",".join(ENGINES),
                   help=f"comma-separated engines to run (default: {','.join(ENGINES)}; fastrnn always runs)")
    p.add_argument("--repeat", type=int, default=6, help="minimum timed calls per engine and shape (default 6)")
    p.add_argument("--rounds", type=int, default=3,
                   help="the engines of a shape take turns this many times, each round a share of the "
                        "timed calls and --min-time, so drift in the machine's speed hits them alike "
                        "(default 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before timing (default 2)")
    p.add_argument("--min-time", type=float, default=0.3,
                   help="keep timing until this many seconds of calls, over all rounds (default 0.3)")
    p.add_argument("--max-calls", type=int, default=2000, help="cap on timed calls (default 2000)")
    p.add_argument("--busy-threshold", type=float, default=0.2,
                   help="re-time an engine when other processes took more than this share of the CPU "
                        "time its threads needed (beyond the cores left free) meanwhile (default 0.2)")
    p.add_argument("--retries", type=int, default=2, help="how often to re-time a disturbed engine (default 2)")
    p.add_argument("--retry-wait", type=float, default=30.0,
                   help="before re-timing, wait at most this long for the others to calm down (default 30)")
    p.add_argument("--retry-budget", type=float, default=180.0,
                   help="stop re-timing once this many seconds in all went to it (default 180)")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                   help="first wait up to this long for 5 s in which other processes use < 10%% of the CPUs")
    p.add_argument("--no-limits", action="store_true", help="skip the sgemm / bandwidth measurements")
    p.add_argument("--plot", metavar="OUT.png", help="latency vs H plot (needs matplotlib)")
    p.add_argument("--json", metavar="OUT.json", help="write all results and limits as JSON")
    p.add_argument("--markdown", metavar="OUT.md", help="also write the printed report to this file")
    p.add_argument("--report-from", metavar="IN.json",
                   help="run nothing: print the report of a run saved with --json (with --markdown/--plot)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.report_from:
        with open(args.report_from) as f:
            return _report(json.load(f), args)
    if args.cells and args.cells_pos and args.cells != args.cells_pos:
        print("compare.py: give the cells either positionally or with --cells", file=sys.stderr)
        return 2
    cells = args.cells or args.cells_pos or list(CELLS)
    engines = [e.strip().lower() for e in args.engines.split(",") if e.strip()]
    bad = [e for e in engines if e not in ENGINES]
    engines = ["fastrnn"] + [e for e in dict.fromkeys(engines) if e != "fastrnn"]
    if bad:
        print(f"compare.py: unknown engine(s) {bad}; known: {','.join(ENGINES)}", file=sys.stderr)
        return 2
    if args.warmup < 2 or args.repeat < 5:
        print("compare.py: note: fewer than 2 warm-ups / 5 timed calls gives noisy medians", file=sys.stderr)
    threads = args.threads or available_cpus()
    if threads < 1:
        print("compare.py: --threads must be >= 1", file=sys.stderr)
        return 2
    if args.rounds < 1:
        print("compare.py: --rounds must be >= 1", file=sys.stderr)
        return 2
    prog = _Progress(not args.quiet)
    notes: List[str] = []

    fastrnn = import_fastrnn()
    if args.dtype != "fp32" and not quantize_available():
        print(f"--dtype {args.dtype}: not available (this fastrnn has no layer.quantize() yet); nothing to run.")
        return 0

    if sanitizer_loaded():
        print(f"compare.py: WARNING: {sanitizer_loaded()} is loaded (a sanitizer build of fastrnn?): "
              "timings will be meaningless", file=sys.stderr)
    if args.wait_quiet > 0:
        share = wait_until_quiet(args.wait_quiet, progress=prog)
        if share is not None and share >= 0.1:
            prog(f"note: still busy after {args.wait_quiet:g} s ({share:.0%} of the CPUs used by others); going on")
    load_before = _loadavg()
    t_start = time.perf_counter()
    streams = stream_sizes(cells, args.shapes or DEFAULT_SHAPES, threads, 2 if args.bidirectional else 1, args.dtype)
    limits = None if args.no_limits else measure_machine_limits(threads, prog, streams)
    rows = run_comparison(cells, args.shapes, threads=threads, bidirectional=args.bidirectional,
                          dtype=args.dtype, engines=engines, warmup=args.warmup,
                          repeat=args.repeat, min_time=args.min_time, max_calls=args.max_calls,
                          rounds=args.rounds, seed=args.seed, limits=limits, progress=prog, notes=notes,
                          busy_threshold=args.busy_threshold, retries=args.retries,
                          retry_wait=args.retry_wait, retry_budget=args.retry_budget)
    elapsed = time.perf_counter() - t_start
    load_after = _loadavg()

    run = {"argv": list(argv) if argv is not None else sys.argv[1:], "threads": threads, "dtype": args.dtype,
           "bidirectional": args.bidirectional, "engines": engines, "repeat": args.repeat,
           "min_time": args.min_time, "warmup": args.warmup, "rounds": args.rounds, "versions": _peer_versions(),
           "fastrnn_version": getattr(fastrnn, "__version__", "?"), "fastrnn_git": _git_rev(),
           "isa": fastrnn.get_isa(), "numpy": np.__version__, "python": platform.python_version(),
           "sanitizer": sanitizer_loaded(), "limits": limits, "loadavg_before": load_before,
           "loadavg_after": load_after, "seconds": elapsed, "notes": notes, "results": rows}
    if args.json:  # through JSON and back, so that the report reads exactly what the file holds
        with open(args.json, "w") as f:
            json.dump(run, f, indent=1, default=str)
        with open(args.json) as f:
            run = json.load(f)
    return _report(run, args)


def _report(run: Dict[str, Any], args) -> int:
    blocks = report_blocks(run)
    print(render_report(blocks))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(render_report(blocks, markdown=True) + "\n")
    rows, engines = run["results"], run["engines"]
    if args.plot:
        if not rows:
            print("no results: no plot", file=sys.stderr)
        else:
            msg = plot(rows, engines, args.plot)
            print(f"note: {msg}" if msg else f"plot written to {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
