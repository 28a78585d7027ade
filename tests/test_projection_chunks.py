"""The upfront input projection in chunks of steps (two halves of xg in turn) gives the
same numbers, bit for bit, as the whole projection at once, on every path that chunks:
forward and reversed directions, lengths that differ, batch-first input, each xg layout
(few rows / the block-major one from 16 rows on), one and two threads, the column-split
projection, batch-parallel layers (each thread its own rows), bidirectional layers side
by side, two-product cells, and workers that never start. And it bounds the working memory a long sequence needs."""
import numpy as np
import pytest

import fastrnn

T = 11   # chunks of 1-3 steps: several chunks, a partial last one, both halves reused


def make(kind, bidirectional, batch_first, I=24, H=40):
    kw = dict(bidirectional=bidirectional, batch_first=batch_first, seed=3)
    if kind == "lstm":
        return fastrnn.LSTM(I, H, **kw)
    if kind == "lstmp":
        return fastrnn.LSTM(I, H, proj_size=17, **kw)
    if kind == "gru":
        return fastrnn.GRU(I, H, **kw)
    if kind == "gru0":
        return fastrnn.GRU(I, H, linear_before_reset=False, **kw)
    return fastrnn.RNN(I, H, **kw)


def run(layer, x, lengths, chunk, core):
    core._set_projection_chunk(chunk)
    out, state = layer(x, lengths=lengths)
    return out, state


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn", "gru0", "lstmp"])
@pytest.mark.parametrize("B", [1, 3, 20])
@pytest.mark.parametrize("bidirectional", [False, True])
# batch-parallel layers need two threads and equal lengths
@pytest.mark.parametrize("lengths,threads,split", [
    (lengths, threads, split) for lengths in ("equal", "short", "mixed") for threads, split in
    ((1, "hidden"), (2, "hidden"), (2, "batch")) if not (split == "batch" and lengths == "mixed")])
def test_chunks_match_the_whole_projection(projection_chunk, parallel_mode, isa_threads, kind, B,
                                           bidirectional, lengths, threads, split):
    fastrnn.set_num_threads(threads)
    parallel_mode.set_parallel(split)        # batch: each thread projects its own rows
    parallel_mode.set_projection("upfront")  # steps that project their own input never chunk
    rng = np.random.default_rng(B * 7 + threads)
    batch_first = B == 3   # 3 rows batch-first: not one run of x per step, so no chunks
    layer = make(kind, bidirectional, batch_first)
    x = rng.standard_normal((B, T, 24) if batch_first else (T, B, 24)).astype(np.float32)
    lens = None
    if lengths == "short":
        lens = np.full(B, T - 3, np.int64)           # every sequence ends early
    elif lengths == "mixed":
        lens = rng.integers(0, T + 1, B).astype(np.int64)
        lens[0] = T
    ref_out, ref_state = run(layer, x, lens, -1, projection_chunk)
    for chunk in (1, 2, 3):
        out, state = run(layer, x, lens, chunk, projection_chunk)
        np.testing.assert_array_equal(out, ref_out)
        as_tuple = lambda st: st if isinstance(st, tuple) else (st,)   # LSTM: (h, c)
        for a, b in zip(as_tuple(state), as_tuple(ref_state)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("split", ["hidden", "batch"])
def test_chunks_with_workers_that_never_start(projection_chunk, parallel_mode, isa_threads, kind, split):
    """Every share on the calling thread, one after another: a share must never wait for
    a chunk another share would project."""
    fastrnn.set_num_threads(2)
    parallel_mode.set_parallel(split)
    parallel_mode.set_projection("upfront")
    x = np.random.default_rng(1).standard_normal((T, 20, 24)).astype(np.float32)
    layer = make(kind, False, False)
    ref = run(layer, x, None, -1, projection_chunk)[0]
    parallel_mode._set_team_absent(True)
    try:
        out = run(layer, x, None, 2, projection_chunk)[0]
    finally:
        parallel_mode._set_team_absent(False)
    np.testing.assert_array_equal(out, ref)


def test_chunks_against_the_reference_over_many_steps(projection_chunk, isa_threads):
    """The default chunk size over a sequence that needs several chunks (halves of 4 MB:
    1365 steps of a 256-unit GRU's 768 gate floats), against the whole projection and
    against a float64 numpy recurrence at every step."""
    fastrnn.set_num_threads(1)
    rng = np.random.default_rng(5)
    H, I, steps = 256, 16, 8000
    layer = fastrnn.GRU(I, H, seed=2)
    x = rng.standard_normal((steps, 1, I)).astype(np.float32)
    fastrnn.release_memory()
    out = run(layer, x, None, 0, projection_chunk)[0]
    assert fastrnn.release_memory() < steps * 3 * H * 4 // 2   # it did chunk
    whole = run(layer, x, None, -1, projection_chunk)[0]
    np.testing.assert_array_equal(out, whole)
    sd = {k: np.asarray(v, np.float64) for k, v in layer.state_dict().items()}
    gxs = x[:, 0].astype(np.float64) @ sd["weight_ih_l0"].T + sd["bias_ih_l0"]
    h = np.zeros(H)
    worst = 0.0
    for t in range(steps):
        gx, gh = gxs[t], sd["weight_hh_l0"] @ h + sd["bias_hh_l0"]
        r = 1 / (1 + np.exp(-(gx[:H] + gh[:H])))
        z = 1 / (1 + np.exp(-(gx[H:2 * H] + gh[H:2 * H])))
        n = np.tanh(gx[2 * H:] + r * gh[2 * H:])
        h = (1 - z) * n + z * h
        worst = max(worst, float(np.max(np.abs(out[t, 0] - h))))
    assert worst <= 1e-5, worst


def test_a_long_sequence_keeps_a_small_workspace(projection_chunk, isa_threads):
    """B=1, 20,000 steps, H=128 LSTM: the whole projection is 20,000 x 512 floats (41 MB);
    in chunks the call's working memory stays within 12 MB."""
    fastrnn.set_num_threads(1)
    layer = fastrnn.LSTM(64, 128, seed=0)
    x = np.random.default_rng(0).standard_normal((20_000, 1, 64)).astype(np.float32)
    fastrnn.release_memory()
    projection_chunk._set_projection_chunk(-1)
    whole = layer(x)[0]
    assert fastrnn.release_memory() >= 20_000 * 512 * 4
    projection_chunk._set_projection_chunk(0)
    out = layer(x)[0]
    kept = fastrnn.release_memory()
    assert 0 < kept <= 12 << 20, kept   # two 4 MB halves and the rest, in 2 MB pages
    np.testing.assert_array_equal(out, whole)
