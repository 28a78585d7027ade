"""Concurrency stress: 8 Python threads x 400 mixed calls on shared layers equal the serial results.

Seven layers (LSTM with projection, bidirectional GRU / RNN, batch_first, original-form GRU,
peephole LSTM ...) are shared by all threads. Each thread runs its own deterministic random order of
a pool of tasks: single calls of assorted shapes (T = 0..40, B = 0..9, unbatched), per-sequence
lengths (zeros included), initial states, streaming chains that feed each chunk's final state into
the next call, calls that must fail (wrong input size, bad lengths) and, if layers have it,
``layer.step`` streams (unidirectional layers). Every array must be bitwise identical to the serial run; meanwhile another
thread keeps reloading one layer's (unchanged) weights, which swaps its packed weights under the
running calls.
"""
import threading
import time

import numpy as np
import pytest

import fastrnn

N_THREADS = 8
CALLS_PER_THREAD = 400
I = 12


def _layers():
    return {
        "lstm_bi_proj": fastrnn.LSTM(I, 48, num_layers=2, bidirectional=True, proj_size=16, seed=1),
        "gru_bi": fastrnn.GRU(I, 40, num_layers=2, bidirectional=True, seed=2),
        "rnn_relu": fastrnn.RNN(I, 33, num_layers=2, nonlinearity="relu", seed=3),
        "lstm_bf": fastrnn.LSTM(I, 256, batch_first=True, seed=4),
        "gru_lbr0": fastrnn.GRU(I, 24, linear_before_reset=False, seed=5),
        "lstm_peep": fastrnn.LSTM(I, 20, peephole=True, clip=2.0, seed=6),
        "rnn_bi": fastrnn.RNN(I, 200, bidirectional=True, seed=7),
    }


def _state_shapes(layer, B):
    D = 2 if layer.bidirectional else 1
    n = layer.num_layers * D
    h = (n, B, layer.proj_size or layer.hidden_size) if isinstance(layer, fastrnn.LSTM) else (n, B, layer.hidden_size)
    return h, (n, B, layer.hidden_size)


def _random_hx(layer, B, rng):
    hs, cs = _state_shapes(layer, B)
    h = rng.standard_normal(hs).astype(np.float32)
    if isinstance(layer, fastrnn.LSTM):
        return (h, rng.standard_normal(cs).astype(np.float32))
    return h


def _x(layer, T, B, rng, unbatched=False):
    if unbatched:
        return rng.standard_normal((T, I)).astype(np.float32)
    shape = (B, T, I) if layer.batch_first else (T, B, I)
    return rng.standard_normal(shape).astype(np.float32)


def _make_tasks(name, layer, rng, has_step):
    tasks = []
    for T, B, use_len, use_hx in [(1, 1, False, False), (5, 2, True, True), (17, 7, False, True),
                                  (40, 9, True, False), (3, 0, False, False), (0, 4, False, True),
                                  (23, 5, True, True), (9, 1, True, True), (2, 3, True, False)]:
        x = _x(layer, T, B, rng)
        hx = _random_hx(layer, B, rng) if use_hx else None
        lengths = None
        if use_len and B:
            lengths = rng.integers(0, T + 1, size=B)
            lengths[0] = T
            lengths[-1] = 0 if B > 1 else T
            lengths = lengths.tolist()
        tasks.append(("call", name, x, hx, lengths))
    tasks.append(("call", name, _x(layer, 13, 1, rng, unbatched=True), None, None))
    # streaming: state passed from chunk to chunk
    chunks = [_x(layer, T, 3, rng) for T in (4, 1, 11, 2, 7)]
    tasks.append(("chain", name, chunks, _random_hx(layer, 3, rng), None))
    # calls that must raise
    bad = rng.standard_normal((4, 2, I + 1)).astype(np.float32)
    tasks.append(("error", name, bad, None, None))
    tasks.append(("error", name, _x(layer, 4, 2, rng), None, [5, 1]))
    if has_step and not layer.bidirectional:
        steps = [rng.standard_normal((2, I)).astype(np.float32) for _ in range(5)]
        tasks.append(("step", name, steps, _random_hx(layer, 2, rng), None))
        tasks.append(("step", name, [rng.standard_normal(I).astype(np.float32) for _ in range(3)], None, None))
    return tasks


def _flatten(obj):
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [a for o in obj for a in _flatten(o)]
    if obj is None:
        return []
    return [np.asarray(obj)]


def _run(layers, task):
    kind, name, x, hx, lengths = task
    layer = layers[name]
    if kind == "call":
        return _flatten(layer(x, hx, lengths) if lengths is not None else layer(x, hx))
    if kind == "chain":
        out = []
        st = hx
        for chunk in x:
            o, st = layer(chunk, st)
            out += _flatten((o, st))
        return out
    if kind == "error":
        try:
            layer(x, hx, lengths) if lengths is not None else layer(x, hx)
        except ValueError as e:
            return ["ValueError", str(e)]
        return ["no error"]
    if kind == "step":  # streaming: out_t, state = layer.step(x_t, state)
        out = []
        st = hx
        for xt in x:
            o, st = layer.step(xt, st)
            out += _flatten((o, st))
        return out
    raise AssertionError(kind)


def _same(a, b):
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


@pytest.fixture
def fastrnn_threads(request):
    old = fastrnn.get_num_threads()
    fastrnn.set_num_threads(request.param)
    yield request.param
    fastrnn.set_num_threads(old)


@pytest.mark.parametrize("fastrnn_threads", [1, 2], indirect=True)
def test_stress_shared_layers_bitwise_equal_serial(fastrnn_threads):
    layers = _layers()
    has_step = all(hasattr(layer, "step") for layer in layers.values())
    rng = np.random.default_rng(20240607)
    tasks = []
    for name, layer in layers.items():
        tasks += _make_tasks(name, layer, rng, has_step)
    inputs_before = [[a.copy() for a in _flatten((t[2], t[3]))] for t in tasks]
    serial = [_run(layers, t) for t in tasks]
    again = [_run(layers, t) for t in tasks]  # serial runs are deterministic
    assert all(len(s) == len(r) and all(_same(a, b) for a, b in zip(s, r)) for s, r in zip(serial, again))
    for t, s in zip(tasks, serial):
        if t[0] == "error":
            assert s[0] == "ValueError", (t[1], s)

    results = [[] for _ in range(N_THREADS)]
    errors = []
    stop = threading.Event()
    barrier = threading.Barrier(N_THREADS + 1)

    def worker(k):
        try:
            order = np.random.default_rng(1000 + k).integers(0, len(tasks), size=CALLS_PER_THREAD)
            barrier.wait()
            for i in order:
                results[k].append((int(i), _run(layers, tasks[i])))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append((k, repr(e)))

    reloads = 0

    def reloader():
        nonlocal reloads
        try:
            barrier.wait()
            layer = layers["gru_bi"]
            sd = layer.state_dict()
            while not stop.is_set():
                layer.load_state_dict(sd)
                reloads += 1
                time.sleep(0.002)
        except BaseException as e:  # noqa: BLE001
            errors.append(("reloader", repr(e)))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(N_THREADS)]
    rel = threading.Thread(target=reloader)
    for th in threads + [rel]:
        th.start()
    for th in threads:
        th.join(timeout=120)
    stop.set()
    rel.join(timeout=30)
    elapsed = time.perf_counter() - t0
    assert not any(th.is_alive() for th in threads + [rel]), "a thread hung"
    assert not errors, errors
    assert reloads > 0

    n_arrays = 0
    for k in range(N_THREADS):
        assert len(results[k]) == CALLS_PER_THREAD
        for i, got in results[k]:
            want = serial[i]
            assert len(got) == len(want), (k, i, tasks[i][:2])
            for j, (a, b) in enumerate(zip(got, want)):
                if not _same(a, b):
                    diff = np.max(np.abs(a - b)) if isinstance(a, np.ndarray) and a.shape == b.shape and a.size else "?"
                    pytest.fail(f"thread {k}, task {i} ({tasks[i][0]} on {tasks[i][1]}), array {j}: "
                                f"differs from the serial result (max diff {diff})")
                n_arrays += 1
    assert n_arrays > N_THREADS * CALLS_PER_THREAD
    # no call modified its inputs
    for t, before in zip(tasks, inputs_before):
        for a, b in zip(_flatten((t[2], t[3])), before):
            assert np.array_equal(a, b)
    assert elapsed < 60, f"stress run took {elapsed:.1f} s"


@pytest.mark.parametrize("threads", [1, 2])
def test_stress_many_threads_tiny_calls(threads):
    """Thousands of tiny calls (B=1, T=1..3) from 8 threads: the per-call path under contention."""
    old = fastrnn.get_num_threads()
    fastrnn.set_num_threads(threads)
    try:
        layer = fastrnn.LSTM(8, 16, seed=11)
        rng = np.random.default_rng(threads)
        xs = [rng.standard_normal((1 + i % 3, 1, 8)).astype(np.float32) for i in range(32)]
        serial = [layer(x) for x in xs]
        bad = []

        def worker(k):
            for n in range(250):
                i = (n * 7 + k) % len(xs)
                out, (h, c) = layer(xs[i])
                if not (np.array_equal(out, serial[i][0]) and np.array_equal(h, serial[i][1][0])
                        and np.array_equal(c, serial[i][1][1])):
                    bad.append((k, n))

        ths = [threading.Thread(target=worker, args=(k,)) for k in range(N_THREADS)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(timeout=60)
        assert not any(th.is_alive() for th in ths)
        assert not bad, bad[:5]
    finally:
        fastrnn.set_num_threads(old)
