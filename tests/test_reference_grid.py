"""Differential tests: fastrnn layers vs the float64 numpy reference (tests/reference.py).

The configuration space (cell x layers x directions x batch_first x B x T x H x lengths x initial
states x proj_size x input dtype x input_size) is covered pairwise by a small deterministic
covering-array generator, plus full-size corners, plus targeted tests (dtypes, non-contiguous
inputs, unbatched input, empty T/B, chunked processing, NaN/Inf, ONNX extras).
"""
import itertools
import math
import zlib

import numpy as np
import pytest

from reference import (
    TOLERANCE, CELL_SPECS, assert_close, call_layer, check_layer, make_params, max_abs_err,
    normalise_config, random_states, reference_forward, split_result,
)

# --------------------------------------------------------------------------------------------
# pairwise covering array
# --------------------------------------------------------------------------------------------

AXES = {
    "cell": ["lstm", "gru", "gru_lbr0", "rnn_tanh", "rnn_relu"],
    "layers": [1, 2, 3],
    "bidirectional": [False, True],
    "batch_first": [False, True],
    "B": [1, 3, 16],
    "T": [1, 7, 50],
    "H": [1, 8, 64, 200],
    "lengths": [False, True],
    "init": [False, True],
    "proj": [False, True],
    "dtype": ["float32", "float64", "float16"],
    "I": [1, 5, 16],
}


def _valid(case):
    """Constraints: projections only exist for LSTM and need proj_size < hidden_size."""
    if case.get("proj"):
        if "cell" in case and case["cell"] != "lstm":
            return False
        if "H" in case and case["H"] == 1:
            return False
    return True


def pairwise_cases(axes, valid, seed=1234, candidates=60):
    """Deterministic greedy (AETG-style) covering array of strength 2 under a constraint.

    Every achievable pair of (axis value, axis value) appears in at least one returned case;
    the function asserts this before returning."""
    names = list(axes)
    rng = np.random.default_rng(seed)
    uncovered = set()
    for a, b in itertools.combinations(range(len(names)), 2):
        for va, vb in itertools.product(range(len(axes[names[a]])), range(len(axes[names[b]]))):
            partial = {names[a]: axes[names[a]][va], names[b]: axes[names[b]][vb]}
            if valid(partial):
                uncovered.add((a, va, b, vb))
    all_pairs = set(uncovered)

    def pairs_of(idx):
        return {(a, idx[a], b, idx[b]) for a, b in itertools.combinations(range(len(names)), 2)}

    def as_case(idx):
        return {names[i]: axes[names[i]][v] for i, v in enumerate(idx)}

    cases = []
    while uncovered:
        best, best_gain = None, -1
        seed_pair = sorted(uncovered)[0]
        for _ in range(candidates):
            # start from an uncovered pair, fill the other axes greedily in random order
            idx = [None] * len(names)
            a, va, b, vb = seed_pair if _ == 0 else sorted(uncovered)[rng.integers(len(uncovered))]
            idx[a], idx[b] = va, vb
            order = [i for i in rng.permutation(len(names)) if idx[i] is None]
            for i in order:
                scores = []
                for v in range(len(axes[names[i]])):
                    idx[i] = v
                    part = {names[j]: axes[names[j]][idx[j]] for j in range(len(names)) if idx[j] is not None}
                    if not valid(part):
                        scores.append(-1)
                        continue
                    gain = sum(1 for j in range(len(names))
                               if j != i and idx[j] is not None
                               and ((min(i, j), idx[min(i, j)], max(i, j), idx[max(i, j)]) in uncovered))
                    scores.append(gain + rng.random() * 0.5)
                idx[i] = int(np.argmax(scores))
            if not valid(as_case(idx)):
                continue
            gain = len(pairs_of(idx) & uncovered)
            if gain > best_gain:
                best, best_gain = list(idx), gain
        assert best is not None and best_gain > 0
        uncovered -= pairs_of(best)
        cases.append(as_case(best))
    covered = set().union(*(pairs_of([axes[n].index(c[n]) for n in names]) for c in cases))
    assert all_pairs <= covered
    return cases


GRID = pairwise_cases(AXES, _valid)


def _case_id(c):
    return "-".join([
        c["cell"], f"L{c['layers']}", "bi" if c["bidirectional"] else "uni",
        "bf" if c["batch_first"] else "tf", f"B{c['B']}", f"T{c['T']}", f"H{c['H']}", f"I{c['I']}",
        "len" if c["lengths"] else "nolen", "h0" if c["init"] else "noh0",
        "proj" if c["proj"] else "noproj", c["dtype"]])


def _lengths(rng, B, T):
    """Lengths in 0..T with the extremes present when the batch is large enough."""
    lens = rng.integers(0, T + 1, size=B)
    if B >= 3:
        lens[0] = T
        lens[1] = 0
    elif B == 1 and T > 1:
        lens[0] = rng.integers(1, T)
    return lens


def _run_case(make_layer, c, seed):
    rng = np.random.default_rng(seed)
    H = c["H"]
    cfg = dict(input_size=c["I"], hidden_size=H, num_layers=c["layers"],
               bidirectional=c["bidirectional"], batch_first=c["batch_first"])
    if c["proj"]:
        cfg["proj_size"] = max(1, H // 3)
    layer, params, cell, full = make_layer(c["cell"], rng, **cfg)
    B, T = c["B"], c["T"]
    shape = (B, T, c["I"]) if c["batch_first"] else (T, B, c["I"])
    x = rng.standard_normal(shape).astype(c["dtype"])
    hx = random_states(cell, full, B, rng) if c["init"] else None
    lengths = None
    if c["lengths"]:
        lens = _lengths(rng, B, T)
        # alternate the accepted forms of lengths: list of ints / int64 array / int32 array
        form = seed % 3
        lengths = lens.tolist() if form == 0 else lens.astype(np.int64 if form == 1 else np.int32)
    check_layer(layer, cell, params, full, x, hx, lengths,
                tol=TOLERANCE[np.dtype(c["dtype"])], what=_case_id(c))


@pytest.mark.parametrize("case", GRID, ids=[_case_id(c) for c in GRID])
def test_pairwise_grid(make_layer, case):
    _run_case(make_layer, case, seed=GRID.index(case))


def test_grid_covers_every_value():
    for axis, values in AXES.items():
        assert {repr(c[axis]) for c in GRID} == {repr(v) for v in values}, axis
    assert len(GRID) < 60


def random_cases(axes, valid, n, seed):
    """Extra seeded random (valid) cases on top of the pairwise ones: higher-order combinations."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < n:
        c = {k: v[rng.integers(len(v))] for k, v in axes.items()}
        if valid(c):
            cases.append(c)
    return cases


RANDOM = random_cases(AXES, _valid, 24, seed=99)


@pytest.mark.parametrize("case", RANDOM, ids=[_case_id(c) for c in RANDOM])
def test_random_grid(make_layer, case):
    _run_case(make_layer, case, seed=500 + RANDOM.index(case))


CORNERS = [
    dict(cell=spec, layers=3, bidirectional=True, batch_first=bf, B=16, T=50, H=200, I=16,
         lengths=True, init=True, proj=False, dtype="float32")
    for spec, bf in zip(CELL_SPECS, [False, True, False, True, False])
] + [
    dict(cell="lstm", layers=3, bidirectional=True, batch_first=False, B=16, T=50, H=200, I=16,
         lengths=True, init=True, proj=True, dtype="float32"),
    dict(cell="gru", layers=3, bidirectional=True, batch_first=True, B=16, T=50, H=200, I=16,
         lengths=False, init=False, proj=False, dtype="float32"),
]


@pytest.mark.parametrize("case", CORNERS, ids=[_case_id(c) for c in CORNERS])
def test_full_size_corners(make_layer, case):
    _run_case(make_layer, case, seed=1000 + CORNERS.index(case))


# Batches of 16 rows or more lay the input projection out step by step, unit block by unit
# block; smaller ones row by row, and on several threads with split hidden units each thread
# projects its own units' columns in row chunks of up to 128 rows. B=1/3 with T=300/150: several
# such chunks; B=15/16: either side; 37: projection chunks (up to 96 rows) cut at steps into
# uneven pieces; 100: a step longer than a chunk. Both input layouts (batch_first reads a
# step's rows T apart), lengths, reversed directions, 1 and 2 threads.
@pytest.mark.parametrize("spec", list(CELL_SPECS))
@pytest.mark.parametrize("B, T", [(1, 300), (3, 150), (15, 6), (16, 6), (37, 6), (100, 6)])
@pytest.mark.parametrize("batch_first", [False, True])
def test_projection_layouts(fastrnn, make_layer, isa_threads, spec, B, T, batch_first):
    rng = np.random.default_rng(B * 7 + batch_first)
    layer, params, cell, cfg = make_layer(spec, rng, input_size=20, hidden_size=40, num_layers=2,
                                          bidirectional=True, batch_first=batch_first)
    x = rng.standard_normal((B, T, 20) if batch_first else (T, B, 20)).astype(np.float32)
    hx = random_states(cell, cfg, B, rng)
    results = []
    for threads in (1, 2):
        fastrnn.set_num_threads(threads)
        for lengths in (None, _lengths(rng, B, T)):
            check_layer(layer, cell, params, cfg, x, hx, lengths, what=f"{spec} B={B} {threads}t")
        results.append(split_result(cell, layer(x, hx))[0])
    assert np.max(np.abs(results[0] - results[1])) <= 1e-6


# --------------------------------------------------------------------------------------------
# dtypes, memory layout, unbatched, empty
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", list(CELL_SPECS))
@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_converted_input_dtypes(make_layer, spec, dtype):
    rng = np.random.default_rng(7)
    layer, params, cell, cfg = make_layer(spec, rng, input_size=6, hidden_size=12, num_layers=2,
                                          bidirectional=True)
    x = rng.standard_normal((9, 4, 6)).astype(dtype)
    hx = random_states(cell, cfg, 4, rng)
    # float64 states too
    hx64 = tuple(a.astype(np.float64) for a in hx) if cell == "LSTM" else hx.astype(np.float64)
    check_layer(layer, cell, params, cfg, x, hx64, [9, 3, 0, 5], what=f"{spec} {dtype}")
    # the float32 copy of the input must give the same answer up to float32 input rounding
    o1, _ = split_result(cell, layer(x))
    o2, _ = split_result(cell, layer(x.astype(np.float32)))
    assert_close(o1, o2, 1e-6 if dtype == "float64" else 0.0, f"{spec} {dtype} vs float32 copy")


@pytest.mark.parametrize("spec", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_non_contiguous_inputs(make_layer, spec, batch_first):
    rng = np.random.default_rng(11)
    layer, params, cell, cfg = make_layer(spec, rng, input_size=5, hidden_size=16, num_layers=2,
                                          bidirectional=True, batch_first=batch_first)
    T, B = 8, 5
    base = rng.standard_normal((2 * T, 3 * B, 2 * 5 + 1)).astype(np.float32)
    x = base[::2, ::3, 1::2]                       # strided in every axis
    assert x.shape == (T, B, 5) and not x.flags.c_contiguous
    if batch_first:
        x = np.swapaxes(x, 0, 1)                   # (B, T, I), a transposed view
    xf = np.asfortranarray(x)
    hx = random_states(cell, cfg, B, rng)
    big = [np.repeat(a, 2, axis=2)[:, :, ::2] for a in (hx if cell == "LSTM" else [hx])]
    hx_nc = tuple(big) if cell == "LSTM" else big[0]
    assert not big[0].flags.c_contiguous
    lengths = np.array([8, 1, 0, 8, 4, 6, 2, 3, 5, 7], dtype=np.int64)[::2]   # strided lengths
    for xx, what in [(x, "strided"), (xf, "fortran"), (x[::-1], "negative strides")]:
        check_layer(layer, cell, params, cfg, xx, hx_nc, lengths, what=f"{spec} {what}")
    # same values as the contiguous copy, bitwise
    a, _ = split_result(cell, layer(x, hx_nc, lengths))
    b, _ = split_result(cell, layer(np.ascontiguousarray(x), hx, np.ascontiguousarray(lengths)))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("spec", list(CELL_SPECS))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_unbatched_input(make_layer, spec, bidirectional):
    rng = np.random.default_rng(3)
    kw = dict(proj_size=4) if spec == "lstm" else {}
    layer, params, cell, cfg = make_layer(spec, rng, input_size=7, hidden_size=10, num_layers=2,
                                          bidirectional=bidirectional, **kw)
    x = rng.standard_normal((11, 7)).astype(np.float32)
    res = check_layer(layer, cell, params, cfg, x, what=f"{spec} unbatched")
    out, sts = split_result(cell, res)
    D = 2 if bidirectional else 1
    assert out.shape == (11, D * (cfg["proj_size"] or 10))
    assert sts[0].shape == (2 * D, cfg["proj_size"] or 10)
    hx = random_states(cell, cfg, None, rng, unbatched=True)
    res = check_layer(layer, cell, params, cfg, x, hx, what=f"{spec} unbatched h0")
    # equals the batched call with B=1
    hx_b = tuple(a[:, None] for a in hx) if cell == "LSTM" else hx[:, None]
    out_b, sts_b = split_result(cell, layer(x[:, None], hx_b))
    out_u, sts_u = split_result(cell, res)
    assert_close(out_u, out_b[:, 0], 1e-6, "unbatched vs B=1")
    for a, b in zip(sts_u, sts_b):
        assert_close(a, b[:, 0], 1e-6, "unbatched vs B=1 state")


@pytest.mark.parametrize("spec", list(CELL_SPECS))
@pytest.mark.parametrize("batch_first", [False, True])
def test_empty_time(make_layer, spec, batch_first):
    """T = 0: empty output of the right shape; h_n/c_n are the initial states (zeros by default)."""
    rng = np.random.default_rng(5)
    kw = dict(proj_size=3) if spec == "lstm" else {}
    layer, params, cell, cfg = make_layer(spec, rng, input_size=4, hidden_size=6, num_layers=2,
                                          bidirectional=True, batch_first=batch_first, **kw)
    Hout = cfg["proj_size"] or 6
    B = 3
    x = np.zeros((B, 0, 4) if batch_first else (0, B, 4), dtype=np.float32)
    out, sts = split_result(cell, layer(x))
    assert out.shape == ((B, 0, 2 * Hout) if batch_first else (0, B, 2 * Hout))
    assert out.dtype == np.float32
    assert sts[0].shape == (4, B, Hout) and not sts[0].any()
    if cell == "LSTM":
        assert sts[1].shape == (4, B, 6) and not sts[1].any()
    hx = random_states(cell, cfg, B, rng)
    res = check_layer(layer, cell, params, cfg, x, hx, what=f"{spec} T=0 h0")
    _, sts = split_result(cell, res)
    for a, b in zip(sts, hx if cell == "LSTM" else [hx]):
        np.testing.assert_array_equal(a, b)
    # with all lengths 0
    check_layer(layer, cell, params, cfg, x, hx, [0] * B, what=f"{spec} T=0 lengths")
    # unbatched T = 0
    out, sts = split_result(cell, layer(np.zeros((0, 4), np.float32)))
    assert out.shape == (0, 2 * Hout) and sts[0].shape == (4, Hout)


@pytest.mark.parametrize("spec", list(CELL_SPECS))
@pytest.mark.parametrize("batch_first", [False, True])
def test_empty_batch(make_layer, spec, batch_first):
    rng = np.random.default_rng(6)
    layer, params, cell, cfg = make_layer(spec, rng, input_size=4, hidden_size=6, num_layers=2,
                                          bidirectional=True, batch_first=batch_first)
    x = np.zeros((0, 5, 4) if batch_first else (5, 0, 4), dtype=np.float32)
    out, sts = split_result(cell, layer(x))
    assert out.shape == ((0, 5, 12) if batch_first else (5, 0, 12)) and out.dtype == np.float32
    for s in sts:
        assert s.shape == (4, 0, 6) and s.dtype == np.float32
    hx = random_states(cell, cfg, 0, rng)
    check_layer(layer, cell, params, cfg, x, hx, np.zeros(0, np.int64), what=f"{spec} B=0")


def test_empty_batch_lengths_as_empty_list(make_layer):
    """lengths for an empty batch given as a plain python list (``[]``, which numpy makes
    float64) is a valid list of zero ints."""
    rng = np.random.default_rng(6)
    layer, params, cell, cfg = make_layer("gru", rng, input_size=4, hidden_size=6)
    x = np.zeros((5, 0, 4), dtype=np.float32)
    check_layer(layer, cell, params, cfg, x, None, [], what="B=0 lengths=[]")


# --------------------------------------------------------------------------------------------
# chunked processing (streaming): state carried between calls == one call
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", list(CELL_SPECS))
@pytest.mark.parametrize("batch_first", [False, True])
def test_chunked_equals_whole(make_layer, spec, batch_first):
    rng = np.random.default_rng(21)
    kw = dict(proj_size=5) if spec == "lstm" else {}
    layer, params, cell, cfg = make_layer(spec, rng, input_size=6, hidden_size=24, num_layers=3,
                                          batch_first=batch_first, **kw)
    T, B = 40, 4
    x = rng.standard_normal((B, T, 6) if batch_first else (T, B, 6)).astype(np.float32)
    hx = random_states(cell, cfg, B, rng)
    whole_out, whole_st = split_result(cell, check_layer(layer, cell, params, cfg, x, hx))
    tax = 1 if batch_first else 0
    for cuts in ([1], [13, 14, 30], list(range(1, T))):
        bounds = [0] + cuts + [T]
        st = hx
        outs = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            xc = x[:, a:b] if batch_first else x[a:b]
            o, st = call_layer(layer, xc, st)
            outs.append(o)
        out = np.concatenate(outs, axis=tax)
        _, sts = split_result(cell, (out, st))
        assert_close(out, whole_out, 1e-6, f"{spec} chunks {len(cuts) + 1} out")
        for a, b in zip(sts, whole_st):
            assert_close(a, b, 1e-6, f"{spec} chunks {len(cuts) + 1} state")


@pytest.mark.parametrize("spec", ["lstm", "gru"])
def test_chunked_with_lengths(make_layer, spec):
    """Streaming with lengths: a sequence that ended in chunk 1 (length < chunk) keeps its state
    when chunk 2 is fed with length 0 for it."""
    rng = np.random.default_rng(22)
    layer, params, cell, cfg = make_layer(spec, rng, input_size=3, hidden_size=9, num_layers=2)
    T1, T2, B = 6, 5, 3
    x = rng.standard_normal((T1 + T2, B, 3)).astype(np.float32)
    total = np.array([T1 + T2, 4, T1 + 2])
    whole_out, whole_st = split_result(cell, check_layer(layer, cell, params, cfg, x, None, total))
    l1 = np.minimum(total, T1)
    l2 = total - l1
    o1, st = layer(x[:T1], None, l1)
    o2, st = layer(x[T1:], st, l2)
    _, sts = split_result(cell, (o2, st))
    assert_close(np.concatenate([o1, o2]), whole_out, 1e-6, f"{spec} chunked lengths out")
    for a, b in zip(sts, whole_st):
        assert_close(a, b, 1e-6, f"{spec} chunked lengths state")


# --------------------------------------------------------------------------------------------
# lengths: semantics details
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", list(CELL_SPECS))
def test_lengths_padding_is_ignored(make_layer, spec):
    """Whatever is in the padding (garbage, NaN, Inf) must not change anything."""
    rng = np.random.default_rng(31)
    layer, params, cell, cfg = make_layer(spec, rng, input_size=4, hidden_size=8, num_layers=2,
                                          bidirectional=True)
    T, B = 10, 5
    lengths = np.array([10, 3, 0, 7, 1])
    x = rng.standard_normal((T, B, 4)).astype(np.float32)
    hx = random_states(cell, cfg, B, rng)
    ref_out, ref_st = split_result(cell, check_layer(layer, cell, params, cfg, x, hx, lengths))
    pad = np.arange(T)[:, None] >= lengths[None, :]
    for fill in [1e3, np.nan, np.inf, -np.inf]:
        xp = x.copy()
        xp[pad] = fill
        out, st = split_result(cell, layer(xp, hx, lengths))
        np.testing.assert_array_equal(out, ref_out, err_msg=f"{spec}: padding {fill} leaked into out")
        for a, b in zip(st, ref_st):
            np.testing.assert_array_equal(a, b, err_msg=f"{spec}: padding {fill} leaked into state")
        assert not out[pad].any(), "outputs past the length must be exactly 0"


@pytest.mark.parametrize("spec", ["lstm", "gru", "rnn_tanh"])
def test_lengths_equal_per_sequence_calls(make_layer, spec):
    """Each sequence of a padded batch == the same sequence run alone, truncated to its length."""
    rng = np.random.default_rng(32)
    layer, params, cell, cfg = make_layer(spec, rng, input_size=4, hidden_size=8, num_layers=2,
                                          bidirectional=True)
    T, B = 9, 4
    lengths = [9, 2, 5, 1]
    x = rng.standard_normal((T, B, 4)).astype(np.float32)
    out, st = split_result(cell, layer(x, None, lengths))
    for b, n in enumerate(lengths):
        o1, s1 = split_result(cell, layer(x[:n, b:b + 1]))
        assert_close(out[:n, b:b + 1], o1, 1e-6, f"{spec} seq {b}")
        assert not out[n:, b].any()
        for a, s in zip(st, s1):
            assert_close(a[:, b:b + 1], s, 1e-6, f"{spec} seq {b} state")


# --------------------------------------------------------------------------------------------
# NaN / Inf
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["lstm", "gru", "gru_lbr0", "rnn_tanh"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_nan_propagation(make_layer, spec, bidirectional):
    rng = np.random.default_rng(41)
    layer, params, cell, cfg = make_layer(spec, rng, input_size=4, hidden_size=8, num_layers=2,
                                          bidirectional=bidirectional)
    T, B = 6, 4
    x = rng.standard_normal((T, B, 4)).astype(np.float32)
    x[3, 1, 2] = np.nan
    res = check_layer(layer, cell, params, cfg, x, what=f"{spec} NaN")
    out, _ = split_result(cell, res)
    if bidirectional:
        # 2 bidirectional layers: the NaN reaches every step of batch entry 1
        assert np.isnan(out[:, 1]).all()
    else:
        # batch entry 1 is NaN from t=3 on
        assert np.isnan(out[3:, 1]).all()
        assert np.isfinite(out[:3, 1]).all()
    # all the other batch entries are untouched
    assert np.isfinite(np.delete(out, 1, axis=1)).all()
    # NaN in an initial state
    hx = random_states(cell, cfg, B, rng)
    h0 = hx[0] if cell == "LSTM" else hx
    h0[0, 2, 0] = np.nan
    check_layer(layer, cell, params, cfg, x, hx, what=f"{spec} NaN h0")


def test_nan_propagation_relu(make_layer):
    """torch.relu(nan) is nan: an RNN with relu must propagate NaN, not turn it into 0."""
    rng = np.random.default_rng(42)
    layer, params, cell, cfg = make_layer("rnn_relu", rng, input_size=4, hidden_size=8)
    x = rng.standard_normal((5, 2, 4)).astype(np.float32)
    x[2, 0, :] = np.nan
    out, _ = split_result(cell, check_layer(layer, cell, params, cfg, x, what="relu NaN"))
    assert np.isnan(out[2:, 0]).all()
    assert np.isfinite(out[:, 1]).all()


@pytest.mark.parametrize("spec", ["lstm", "gru", "gru_lbr0", "rnn_tanh"])
def test_inf_saturates(make_layer, spec):
    """+-Inf inputs saturate sigmoid/tanh exactly as IEEE math says (finite results), like torch."""
    rng = np.random.default_rng(43)
    layer, params, cell, cfg = make_layer(spec, rng, input_size=3, hidden_size=8,
                                          bidirectional=True)
    x = rng.standard_normal((6, 3, 3)).astype(np.float32)
    x[2, 0, 1] = np.inf
    x[4, 2, 0] = -np.inf
    out, _ = split_result(cell, check_layer(layer, cell, params, cfg, x, what=f"{spec} Inf"))
    assert np.isfinite(out).all()


@pytest.mark.parametrize("spec", ["lstm", "gru", "gru_lbr0", "rnn_tanh"])
def test_inf_initial_state(make_layer, spec):
    """+-Inf in h0/c0: gates saturate to exactly 0 or 1 (torch.sigmoid(-inf) == 0), so e.g.
    0 * inf = NaN appears exactly where IEEE math (and torch) puts it."""
    rng = np.random.default_rng(46)
    layer, params, cell, cfg = make_layer(spec, rng, input_size=2, hidden_size=3, bias=False)
    x = rng.standard_normal((3, 2, 2)).astype(np.float32)
    hx = random_states(cell, cfg, 2, rng)
    if cell == "LSTM":
        hx[0][0, 0, 0] = np.inf
        hx[1][0, 1, 2] = -np.inf
    else:
        hx[0, 0, 0] = np.inf
    check_layer(layer, cell, params, cfg, x, hx, what=f"{spec} Inf h0")


def test_sigmoid_saturates_to_exact_zero(fastrnn):
    """sigmoid(-inf) and sigmoid(-1000) are exactly 0 in float32 (torch too), not a clamped tiny
    positive number."""
    layer = fastrnn.RNN(1, 1, activations=["sigmoid"], bias=False)
    layer.load_state_dict({"weight_ih_l0": np.ones((1, 1), np.float32),
                           "weight_hh_l0": np.zeros((1, 1), np.float32)})
    x = np.array([-np.inf, -1000.0, -200.0, 0.0, np.inf], np.float32).reshape(-1, 1, 1)
    out = layer(x)[0].ravel()
    np.testing.assert_array_equal(out, [0.0, 0.0, 0.0, 0.5, 1.0])


def test_inf_relu_overflows_like_reference(make_layer):
    rng = np.random.default_rng(44)
    layer, params, cell, cfg = make_layer("rnn_relu", rng, input_size=3, hidden_size=6)
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    x[1, 0, 0] = np.inf
    out, _ = split_result(cell, check_layer(layer, cell, params, cfg, x, what="relu Inf", rtol=1e-5))
    assert np.isinf(out[1, 0]).any() and np.isfinite(out[:, 1]).all()


def test_large_finite_inputs(make_layer):
    """Large (but finite) pre-activations must saturate, not overflow into NaN/Inf."""
    rng = np.random.default_rng(45)
    for spec in ["lstm", "gru", "rnn_tanh"]:
        layer, params, cell, cfg = make_layer(spec, rng, input_size=3, hidden_size=8)
        x = (rng.standard_normal((5, 2, 3)) * 1e6).astype(np.float32)
        out, _ = split_result(cell, check_layer(layer, cell, params, cfg, x, what=f"{spec} 1e6"))
        assert np.isfinite(out).all()


# --------------------------------------------------------------------------------------------
# ONNX-style extras
# --------------------------------------------------------------------------------------------

EXTRAS = [
    ("LSTM", dict(peephole=True)),
    ("LSTM", dict(peephole=True, bidirectional=True, num_layers=2)),
    ("LSTM", dict(input_forget=True)),
    ("LSTM", dict(input_forget=True, peephole=True, bidirectional=True)),
    ("LSTM", dict(clip=0.5)),
    ("LSTM", dict(clip=0.3, peephole=True, input_forget=True, bidirectional=True)),
    ("LSTM", dict(peephole=True, proj_size=3, num_layers=2)),
    ("LSTM", dict(activations=["hardsigmoid", "elu", "softsign"])),
    ("LSTM", dict(activations=["hardsigmoid", "elu", "softsign", "sigmoid", "leakyrelu", "scaledtanh"],
                  activation_alpha=[0.3, 0.7, None, None, 0.2, 0.9],
                  activation_beta=[0.4, None, None, None, None, 1.5], bidirectional=True)),
    ("LSTM", dict(activations=["Sigmoid", "Tanh", "Tanh"], clip=2.0, peephole=True)),
    ("GRU", dict(clip=0.5)),
    ("GRU", dict(clip=0.4, linear_before_reset=False, bidirectional=True)),
    ("GRU", dict(activations=["hardsigmoid", "softplus"], activation_alpha=[0.25, None],
                 activation_beta=[0.45, None])),
    ("GRU", dict(activations=["sigmoid", "tanh", "hardsigmoid", "relu"], bidirectional=True,
                 linear_before_reset=False)),
    ("RNN", dict(clip=0.25)),
    ("RNN", dict(activations=["linear"])),
    ("RNN", dict(activations=["tanh", "sigmoid"], bidirectional=True, num_layers=2)),
    ("RNN", dict(nonlinearity="relu", clip=0.6, bidirectional=True)),
]
ACTIVATION_CASES = [
    ("sigmoid", None, None), ("tanh", None, None), ("relu", None, None),
    ("affine", None, None), ("affine", 0.5, -0.25),
    ("leakyrelu", None, None), ("leakyrelu", 0.3, None),
    ("thresholdedrelu", None, None), ("thresholdedrelu", 0.2, None),
    ("scaledtanh", None, None), ("scaledtanh", 0.7, 1.6),
    ("hardsigmoid", None, None), ("hardsigmoid", 0.3, 0.6),
    ("elu", None, None), ("elu", 0.4, None),
    ("softsign", None, None), ("softplus", None, None), ("linear", None, None),
    ("LeakyRelu", 0.05, None), ("HARDSIGMOID", None, None),
]


BOUNDED = {"sigmoid", "tanh", "scaledtanh", "hardsigmoid", "softsign"}


def _extras_id(e):
    cell, kw = e
    return cell + "-" + "-".join(f"{k}={v}" for k, v in kw.items()).replace(" ", "")


@pytest.mark.parametrize("extra", EXTRAS, ids=[_extras_id(e) for e in EXTRAS])
def test_onnx_extras(make_layer, extra):
    cell, kw = extra
    rng = np.random.default_rng(51 + EXTRAS.index(extra))
    layer, params, cell, cfg = make_layer(cell, rng, params_scale=0.8, input_size=5,
                                          hidden_size=7, **kw)
    B, T = 4, 9
    x = (1.5 * rng.standard_normal((T, B, 5))).astype(np.float32)
    hx = random_states(cell, cfg, B, rng, scale=0.7)
    # rtol: unbounded activations (linear, relu, softplus, ...) reach |values| >> 1
    check_layer(layer, cell, params, cfg, x, hx, [9, 4, 0, 1], what=_extras_id(extra), rtol=1e-5)
    check_layer(layer, cell, params, cfg, x, what=_extras_id(extra) + " no-state", rtol=1e-5)


@pytest.mark.parametrize("act", ACTIVATION_CASES, ids=[f"{a}-{al}-{be}" for a, al, be in ACTIVATION_CASES])
@pytest.mark.parametrize("cell", ["RNN", "GRU", "LSTM"])
def test_each_activation(make_layer, act, cell):
    """Each activation (with its alpha/beta) in each slot of each cell."""
    name, alpha, beta = act
    n = {"RNN": 1, "GRU": 2, "LSTM": 3}[cell]
    rng = np.random.default_rng(zlib.crc32(f"{name}-{alpha}-{cell}".encode()))
    T, B = 6, 3
    for slot in range(n):
        acts = {"RNN": ["tanh"], "GRU": ["sigmoid", "tanh"], "LSTM": ["sigmoid", "tanh", "tanh"]}[cell]
        acts = list(acts)
        alphas, betas = [None] * n, [None] * n
        acts[slot], alphas[slot], betas[slot] = name, alpha, beta
        layer, params, c, cfg = make_layer(
            cell, rng, params_scale=0.9, input_size=4, hidden_size=6, activations=acts,
            activation_alpha=alphas, activation_beta=betas)
        # an unbounded gate activation (GRU z, LSTM i/f/o) makes the recurrence grow
        # geometrically (ill-conditioned: float32 rounding gets amplified), so keep it short/small
        unbounded_gate = slot == 0 and cell != "RNN" and name.lower() not in BOUNDED
        steps, amp = (3, 0.5) if unbounded_gate else (T, 2.0)
        x = (amp * rng.standard_normal((steps, B, 4))).astype(np.float32)
        hx = random_states(c, cfg, B, rng, scale=0.5)
        check_layer(layer, c, params, cfg, x, hx, what=f"{cell} slot {slot} {name}({alpha},{beta})",
                    rtol=1e-5)


def test_activation_alpha_defaults_vs_explicit(make_layer, fastrnn):
    """None alpha/beta entries mean the documented defaults."""
    rng = np.random.default_rng(60)
    x = (4 * rng.standard_normal((5, 2, 3))).astype(np.float32)
    for name, a, b in [("leakyrelu", 0.01, None), ("thresholdedrelu", 1.0, None),
                       ("scaledtanh", 1.0, 1.0), ("hardsigmoid", 0.2, 0.5), ("elu", 1.0, None),
                       ("affine", 1.0, 0.0)]:
        l1 = fastrnn.RNN(3, 4, activations=[name], seed=1)
        l2 = fastrnn.RNN(3, 4, activations=[name], activation_alpha=[a], activation_beta=[b], seed=1)
        l3 = fastrnn.RNN(3, 4, activations=[name], activation_alpha=[None], activation_beta=[None], seed=1)
        l4 = fastrnn.RNN(3, 4, activations=[name], activation_alpha=[2 * a + 0.1],
                         activation_beta=[None if b is None else 2 * b + 0.1], seed=1)
        r1, r2, r3, r4 = l1(x)[0], l2(x)[0], l3(x)[0], l4(x)[0]
        assert_close(r1, r2, 1e-6, f"{name} default vs explicit")
        assert_close(r1, r3, 1e-6, f"{name} default vs None")
        assert max_abs_err(r1, r4) > 1e-3, f"{name}: activation_alpha has no effect"


def test_clip_actually_clips(make_layer):
    """With a tiny clip every gate pre-activation is clipped: LSTM output bounded accordingly."""
    rng = np.random.default_rng(61)
    clip = 0.1
    layer, params, cell, cfg = make_layer("LSTM", rng, input_size=3, hidden_size=5, clip=clip)
    x = (100 * rng.standard_normal((20, 2, 3))).astype(np.float32)
    out, (h, c) = check_layer(layer, cell, params, cfg, x, what="clip 0.1")
    # i, f, o in [sigmoid(-0.1), sigmoid(0.1)], g in [-tanh(.1), tanh(.1)]
    s = 1 / (1 + math.exp(-clip))
    assert np.abs(out).max() <= s * math.tanh(math.tanh(clip) * s / (1 - s)) + 1e-6


# --------------------------------------------------------------------------------------------
# the reference's ONNX extras vs onnxruntime (validates the reference, not fastrnn)
# --------------------------------------------------------------------------------------------

_ONNX_ACT = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "affine": "Affine",
             "leakyrelu": "LeakyRelu", "thresholdedrelu": "ThresholdedRelu",
             "scaledtanh": "ScaledTanh", "hardsigmoid": "HardSigmoid", "elu": "Elu",
             "softsign": "Softsign", "softplus": "Softplus"}
_USES_ALPHA = {"affine": 1.0, "leakyrelu": 0.01, "thresholdedrelu": 1.0, "scaledtanh": 1.0,
               "hardsigmoid": 0.2, "elu": 1.0}
_USES_BETA = {"affine": 0.0, "scaledtanh": 1.0, "hardsigmoid": 0.5}


def _onnxruntime_forward(cell, params, cfg, x, hx):
    """Run the ONNX LSTM/GRU/RNN op (one layer) in onnxruntime on torch-named parameters."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    H = cfg["hidden_size"]
    D = 2 if cfg["bidirectional"] else 1
    order = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2], "RNN": [0]}[cell]   # torch -> ONNX gates

    def reorder(w):
        return np.concatenate([w[j * H:(j + 1) * H] for j in order], 0)

    sfxs = ["_l0", "_l0_reverse"][:D]
    feeds = {
        "X": x,
        "W": np.stack([reorder(params["weight_ih" + s]) for s in sfxs]),
        "R": np.stack([reorder(params["weight_hh" + s]) for s in sfxs]),
        "B": np.stack([np.concatenate([reorder(params["bias_ih" + s]),
                                       reorder(params["bias_hh" + s])]) for s in sfxs]),
        "initial_h": hx[0] if cell == "LSTM" else hx,
    }
    names = ["X", "W", "R", "B", "", "initial_h"]
    if cell == "LSTM":
        feeds["initial_c"] = hx[1]
        names.append("initial_c")
        if cfg["peephole"]:   # ours (i, f, o) -> ONNX (i, o, f)
            feeds["P"] = np.stack([params["weight_ph" + s].reshape(3, H)[[0, 2, 1]].ravel()
                                   for s in sfxs])
            names.append("P")
    attrs = dict(hidden_size=H, direction="bidirectional" if D == 2 else "forward")
    if cfg.get("input_forget"):
        attrs["input_forget"] = 1
    if cfg["clip"] is not None:
        attrs["clip"] = float(cfg["clip"])
    if cell == "GRU":
        attrs["linear_before_reset"] = int(cfg["linear_before_reset"])
    acts = cfg["activations"]
    if acts is not None:
        al = cfg["activation_alpha"] or [None] * len(acts)
        be = cfg["activation_beta"] or [None] * len(acts)
        attrs["activations"] = [_ONNX_ACT[a.lower()] for a in acts]
        # ONNX lists alpha/beta only for the activations that take them
        alpha = [_USES_ALPHA[a.lower()] if v is None else v
                 for a, v in zip(acts, al) if a.lower() in _USES_ALPHA]
        beta = [_USES_BETA[a.lower()] if v is None else v
                for a, v in zip(acts, be) if a.lower() in _USES_BETA]
        if alpha:
            attrs["activation_alpha"] = alpha
        if beta:
            attrs["activation_beta"] = beta
    outs = ["Y", "Y_h"] + (["Y_c"] if cell == "LSTM" else [])
    node = helper.make_node(cell, names, outs, **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in feeds],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {k: np.asarray(v, np.float32) for k, v in feeds.items()})[0]
    T, _, B, _ = y.shape
    return y.transpose(0, 2, 1, 3).reshape(T, B, D * H)


ORT_CASES = [e for e in EXTRAS if e[1].get("num_layers", 1) == 1 and not e[1].get("proj_size")
             and "nonlinearity" not in e[1] and "linear" not in e[1].get("activations", [])]


@pytest.mark.parametrize("extra", ORT_CASES, ids=[_extras_id(e) for e in ORT_CASES])
def test_reference_extras_match_onnxruntime(extra):
    cell, kw = extra
    rng = np.random.default_rng(7 + ORT_CASES.index(extra))
    cfg = normalise_config(cell, dict(kw, input_size=5, hidden_size=7))
    params = make_params(cell, cfg, rng, scale=0.8)
    x = (1.5 * rng.standard_normal((9, 4, 5))).astype(np.float32)
    hx = random_states(cell, cfg, 4, rng, scale=0.7)
    expected = _onnxruntime_forward(cell, params, cfg, x, hx)
    out, _ = split_result(cell, reference_forward(cell, params, cfg, x, hx))
    assert_close(out, expected, 2e-5, f"reference vs onnxruntime {_extras_id(extra)}", rtol=1e-5)
