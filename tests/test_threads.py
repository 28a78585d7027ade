"""Thread safety: one layer shared by 8 Python threads gives bitwise the serial results, and a
call releases the GIL."""
import sys
import threading
import time

import numpy as np
import pytest

from reference import check_layer, random_states

N_THREADS = 8


def _make_tasks(cell, cfg, rng):
    """Mixed shapes, lengths and states; 'chain' tasks feed each chunk's state into the next."""
    I = cfg["input_size"]
    tasks = []
    for T, B, use_len, use_h0 in [(1, 1, False, False), (5, 2, True, True), (17, 7, False, True),
                                  (40, 16, True, False), (3, 0, False, False), (0, 4, False, True),
                                  (23, 5, True, True), (9, 1, True, True)]:
        x = rng.standard_normal((T, B, I)).astype(np.float32)
        hx = random_states(cell, cfg, B, rng) if use_h0 else None
        lengths = None
        if use_len:
            lengths = rng.integers(0, T + 1, size=B)
            lengths[0] = T
        tasks.append(("single", x, hx, lengths))
    # streaming: 6 chunks of different sizes, state passed along
    chunks = [rng.standard_normal((T, 3, I)).astype(np.float32) for T in (4, 1, 11, 2, 7, 5)]
    tasks.append(("chain", chunks, random_states(cell, cfg, 3, rng), None))
    # unbatched
    tasks.append(("single", rng.standard_normal((13, I)).astype(np.float32), None, None))
    return tasks


def _run_task(layer, task):
    kind, x, hx, lengths = task
    if kind == "single":
        return [layer(x, hx, lengths)]
    results = []
    st = hx
    for chunk in x:
        out, st = layer(chunk, st)
        results.append((out, st))
    return results


def _flatten(results):
    arrays = []
    for out, st in results:
        arrays.append(out)
        arrays.extend(st if isinstance(st, tuple) else [st])
    return arrays


@pytest.mark.parametrize("spec,kw", [
    ("LSTM", dict(num_layers=2, bidirectional=True, proj_size=16)),
    ("GRU", dict(num_layers=2, bidirectional=True)),
    ("RNN", dict(num_layers=3, nonlinearity="relu")),
    ("LSTM", dict(peephole=True, clip=1.0, batch_first=False)),
])
def test_concurrent_calls_equal_serial(make_layer, spec, kw):
    rng = np.random.default_rng(2024)
    layer, params, cell, cfg = make_layer(spec, rng, input_size=12, hidden_size=48, **kw)
    tasks = _make_tasks(cell, cfg, rng)
    serial = [_flatten(_run_task(layer, t)) for t in tasks]
    # the serial results are right in the first place
    for t in tasks:
        if t[0] == "single":
            check_layer(layer, cell, params, cfg, t[1], t[2], t[3], what=f"{spec} serial")

    rounds = 3
    barrier = threading.Barrier(N_THREADS)
    errors = []
    results = [[] for _ in range(N_THREADS)]

    def worker(k):
        try:
            order = np.random.default_rng(k).permutation(len(tasks) * rounds) % len(tasks)
            barrier.wait()
            for i in order:
                results[k].append((int(i), _flatten(_run_task(layer, tasks[i]))))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append((k, repr(e)))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads), "a worker thread hung"
    assert not errors, errors
    n_checked = 0
    for k in range(N_THREADS):
        assert len(results[k]) == len(tasks) * rounds
        for i, arrays in results[k]:
            assert len(arrays) == len(serial[i])
            for j, (a, b) in enumerate(zip(arrays, serial[i])):
                assert a.shape == b.shape
                assert np.array_equal(a, b, equal_nan=True), (
                    f"thread {k}, task {i}, array {j}: max diff {np.max(np.abs(a - b)) if a.size else 0}")
                n_checked += 1
    assert n_checked > N_THREADS * len(tasks)
    # the shared inputs were not modified by any call
    for t, s in zip(tasks, serial):
        np.testing.assert_array_equal(_flatten(_run_task(layer, t))[0], s[0])


def test_concurrent_calls_on_different_layers(fastrnn):
    """Different layers (different weights, cells) in parallel: each equals its serial result."""
    rng = np.random.default_rng(5)
    layers = [fastrnn.LSTM(8, 32, seed=1), fastrnn.GRU(8, 32, seed=2, bidirectional=True),
              fastrnn.RNN(8, 32, seed=3), fastrnn.LSTM(8, 32, seed=4, proj_size=8)] * 2
    xs = [rng.standard_normal((20, 4, 8)).astype(np.float32) for _ in layers]
    serial = [lay(x)[0] for lay, x in zip(layers, xs)]
    out = [[] for _ in layers]
    errors = []
    barrier = threading.Barrier(len(layers))

    def worker(k):
        try:
            barrier.wait()
            for _ in range(5):
                out[k].append(layers[k](xs[k])[0])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append((k, repr(e)))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(layers))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors, errors
    for k in range(len(layers)):
        assert len(out[k]) == 5, f"worker {k} failed"
        for o in out[k]:
            np.testing.assert_array_equal(o, serial[k])


def _counter_progress_during(fn):
    """Fraction of its normal rate that a pure-Python counter thread achieves while fn() runs
    in this thread, and fn's duration."""
    count = 0
    stop = False
    started = threading.Event()

    def counter():
        nonlocal count
        started.set()
        while not stop:
            count += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    th = threading.Thread(target=counter)
    try:
        th.start()
        started.wait()
        c0, t0 = count, time.perf_counter()
        time.sleep(0.2)
        rate_alone = (count - c0) / (time.perf_counter() - t0)
        c0, t0 = count, time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        progress = (count - c0) / (rate_alone * dt)
    finally:
        stop = True
        th.join()
        sys.setswitchinterval(old)
    return progress, dt


def test_call_releases_gil(fastrnn):
    """While a long call runs in the main thread, a pure-Python counter thread keeps running.

    A call that holds the GIL lets the counter reach ~1 % of its normal rate (at most a switch
    interval before the C code starts); a call that releases it, typically 50-90 % on 2 cores.
    Up to 3 attempts, so that a burst of load from other processes cannot fail the test."""
    layer = fastrnn.LSTM(64, 256, num_layers=2, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 64)).astype(np.float32)
    layer(x)                                           # warm-up
    t0 = time.perf_counter()
    layer(x)
    per_step = max((time.perf_counter() - t0) / 64, 1e-6)
    T = int(min(max(0.4 / per_step, 64), 200_000))     # aim at a ~0.4 s call
    x = rng.standard_normal((T, 1, 64)).astype(np.float32)
    attempts = []
    for _ in range(3):
        progress, dt = _counter_progress_during(lambda: layer(x))
        attempts.append((round(progress, 3), round(dt, 3)))
        if dt > 0.1 and progress > 0.1:
            break
    else:
        pytest.fail(f"counter thread progress (fraction of normal, call seconds) per attempt: "
                    f"{attempts}: the call holds the GIL (or is too short to measure)")


_FORKED = {}   # the layers, input and results the forked children inherit (not pickled)


def _forked_child_runs(_):
    """In a forked child: each inherited layer on x against its result in the parent."""
    layers, x, refs = _FORKED["layers"], _FORKED["x"], _FORKED["refs"]
    return [float(np.max(np.abs(layer(x)[0] - ref))) for layer, ref in zip(layers, refs)]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork on this platform")
def test_forked_children_after_the_team_started(fastrnn, isa_threads):
    """multiprocessing's fork (the default start method on Linux, the usual way to scale batch
    scoring out) after the parent's thread team started: the children's threaded calls gave
    nothing back, waiting for workers that only the parent has. Also while a thread of the
    parent is in the middle of a call when the fork happens."""
    import multiprocessing as mp

    fastrnn.set_num_threads(2)
    layers = [fastrnn.LSTM(64, 256, seed=0), fastrnn.GRU(64, 128, seed=1).quantize("bf16")]
    x = np.random.default_rng(0).standard_normal((30, 8, 64)).astype(np.float32)
    refs = [layer(x)[0] for layer in layers]   # the team runs in the parent
    _FORKED.update(layers=layers, x=x, refs=refs)
    stop = threading.Event()

    def busy():  # the parent keeps the team busy while the pool forks
        while not stop.is_set():
            layers[0](x)

    t = threading.Thread(target=busy)
    t.start()
    try:
        with mp.get_context("fork").Pool(2) as pool:
            res = pool.map_async(_forked_child_runs, range(4)).get(timeout=120)
    finally:
        stop.set()
        t.join()
        _FORKED.clear()
    assert res == [[0.0, 0.0]] * 4


def test_reload_while_calling_never_mixes_weights(fastrnn):
    """A thread reloading weights A <-> B while others call: every call gives A's or B's
    result, for a Linear (its matmul releases the GIL between weight and bias) and for a
    whole model (new layers with old ones). Both mixed before."""
    from fastrnn.models import Linear, Sequential
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 4, 8)).astype(np.float32)
    cases = []
    lin = Linear(8, 300, seed=0)
    sd_b = {k: v + 10.0 for k, v in lin.state_dict().items()}
    cases.append((lin, lin.state_dict(), sd_b, lambda m: m(x)))
    seq = Sequential(fastrnn.LSTM(8, 64, seed=1), Linear(64, 5, seed=2))
    seq_b = {k: v + (10.0 if k.startswith("1.") else 0.5) for k, v in seq.state_dict().items()}
    cases.append((seq, seq.state_dict(), seq_b, lambda m: m(x)[0]))
    for model, sd_a, sd_b, call in cases:
        outs = [call(model.load_state_dict(sd)) for sd in (sd_a, sd_b)]
        stop = threading.Event()

        def reload():
            while not stop.is_set():
                for sd in (sd_a, sd_b):
                    model.load_state_dict(sd)

        t = threading.Thread(target=reload)
        t.start()
        try:
            got = [call(model) for _ in range(300)]
        finally:
            stop.set()
            t.join()
        mixed = [g for g in got if not any(np.array_equal(g, o) for o in outs)]
        assert not mixed, f"{type(model).__name__}: {len(mixed)} of {len(got)} calls mixed the weights"


def test_building_a_layer_does_not_wait_for_a_long_call(fastrnn, isa_threads):
    """Packing a layer (construction, load_state_dict, quantize) while another thread is in a
    long threaded call: it took as long as that call (the team's busy lock)."""
    fastrnn.set_num_threads(2)
    big = fastrnn.LSTM(256, 512, seed=0)
    x = np.random.default_rng(0).standard_normal((400, 32, 256)).astype(np.float32)
    t0 = time.perf_counter()
    big(x)
    long_call = time.perf_counter() - t0
    small = fastrnn.GRU(4, 8, seed=1)
    sd = small.state_dict()
    th = threading.Thread(target=big, args=(x,))
    th.start()
    time.sleep(long_call / 4)
    t0 = time.perf_counter()
    small.load_state_dict(sd)
    fastrnn.LSTM(4, 8, seed=2)
    waited = time.perf_counter() - t0
    th.join()
    assert waited < long_call / 4, (waited, long_call)


def test_release_memory_while_other_threads_call(fastrnn, isa_threads):
    """release_memory in a loop while four threads call layers: it never frees a
    buffer a call is using (the results stay exact), and the threads' next calls
    allocate again."""
    rng = np.random.default_rng(5)
    layers = [fastrnn.LSTM(16, 48, num_layers=2, seed=1), fastrnn.GRU(16, 40, bidirectional=True, seed=2)]
    xs = [rng.standard_normal((30, 20 + 7 * i, 16)).astype(np.float32) for i in range(4)]
    refs = [[layer(x)[0] for x in xs] for layer in layers]
    stop, bad, freed = threading.Event(), [], []

    def call(i):
        for k in range(60):
            li = (i + k) % 2
            y = layers[li](xs[i])[0]
            if not np.array_equal(y, refs[li][i]):
                bad.append((i, k))

    def release():
        while not stop.is_set():
            freed.append(fastrnn.release_memory())

    rel = threading.Thread(target=release)
    rel.start()
    workers = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    rel.join()
    assert not bad, bad
    assert sum(freed) > 0   # it did take memory from threads between their calls


CASES_ABSENT = [
    ("LSTM", {}, (100, 1, 96), None),                          # hidden-parallel, steps stolen
    ("GRU", {"linear_before_reset": False}, (30, 3, 128), None),  # two products a step
    ("LSTM", {"bidirectional": True}, (30, 1, 64), None),      # directions side by side
    ("RNN", {}, (20, 64, 96), "batch"),                        # batch-parallel rows
    ("LSTM", {"proj_size": 100}, (6, 80, 256), "int8"),        # quantized: qgemm, W_hr on the team
    ("GRU", {}, (8, 70, 128), "int8"),                         # quantized fused, A quantized in shares
]


@pytest.mark.parametrize("cls, kw, shape, mode", CASES_ABSENT,
                         ids=["lstm-hidden", "gru0", "lstm-bidir-side", "rnn-batch", "lstmp-int8", "gru-int8"])
def test_workers_that_never_start(fastrnn, parallel_mode, isa_threads, cls, kw, shape, mode):
    """A worker that has not started when the caller's share is done (asleep on an idle
    machine) is excused and its share runs on the caller: with the workers taking no job at
    all, two-thread calls of every kind of job finish and give one thread's numbers (the
    Tree-LSTM's products too)."""
    from fastrnn.tree import ChildSumTreeLSTM
    T, B, H = shape
    layer = getattr(fastrnn, cls)(H, H, seed=3, **kw)
    if mode == "int8":
        layer = layer.quantize("int8")
    x = np.random.default_rng(4).standard_normal((T, B, H)).astype(np.float32)
    tree = ChildSumTreeLSTM(64, 150, seed=1)
    parent = np.array([-1] + [int(i) for i in np.random.default_rng(5).integers(0, np.arange(1, 600))])
    tx = np.random.default_rng(6).standard_normal((600, 64)).astype(np.float32)
    fastrnn.set_num_threads(1)
    ref, tref = layer(x)[0], tree(tx, parent)[0]
    fastrnn.set_num_threads(2)
    if mode == "batch":
        parallel_mode.set_parallel("batch")
    parallel_mode._set_team_absent(True)
    try:
        out, tout = layer(x)[0], tree(tx, parent)[0]
    finally:
        parallel_mode._set_team_absent(False)
    tol = 1e-6
    assert np.max(np.abs(out - ref)) <= tol
    assert np.max(np.abs(tout - tref)) <= tol
    # and with the workers back, the same again
    assert np.max(np.abs(layer(x)[0] - ref)) <= tol
