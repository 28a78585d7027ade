"""Hypothesis property tests: over random shapes, dtypes, lengths, states and NaN/Inf, a layer never
crashes; valid inputs match the float64 reference, and inputs with one fault raise the right
error (ValueError for shape/value problems, TypeError for dtype/kind problems)."""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from reference import (  # noqa: E402
    CELL_SPECS, TOLERANCE, assert_close, check_layer, random_states, split_result,
)

SPECS = list(CELL_SPECS)


@st.composite
def layer_configs(draw):
    spec = draw(st.sampled_from(SPECS))
    H = draw(st.integers(1, 12))
    cfg = dict(
        input_size=draw(st.integers(1, 6)),
        hidden_size=H,
        num_layers=draw(st.integers(1, 3)),
        bidirectional=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bias=draw(st.booleans()),
    )
    if spec == "lstm" and H > 1 and draw(st.booleans()):
        cfg["proj_size"] = draw(st.integers(1, H - 1))
    return spec, cfg


@st.composite
def valid_calls(draw):
    spec, cfg = draw(layer_configs())
    unbatched = draw(st.booleans()) and draw(st.booleans())       # 25 %
    T = draw(st.integers(0, 9))
    B = 1 if unbatched else draw(st.integers(0, 5))
    dtype = draw(st.sampled_from(["float32", "float32", "float64", "float16"]))
    use_h0 = draw(st.booleans())
    use_len = (not unbatched) and draw(st.booleans())
    lengths = None
    if use_len:
        lengths = draw(st.lists(st.integers(0, T), min_size=B, max_size=B))
        lengths = draw(st.sampled_from([lengths, np.array(lengths, np.int64),
                                        np.array(lengths, np.int32)]))
    # special values: a few positions of x / h0 set to NaN or +-Inf
    specials = draw(st.lists(st.tuples(st.sampled_from(["x", "h0"]),
                                       st.sampled_from([np.nan, np.inf, -np.inf]),
                                       st.integers(0, 10**6)), max_size=2))
    scale = draw(st.sampled_from([0.1, 1.0, 3.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    return dict(spec=spec, cfg=cfg, unbatched=unbatched, T=T, B=B, dtype=dtype, use_h0=use_h0,
                lengths=lengths, specials=specials, scale=scale, seed=seed)


def _build(make_layer, case):
    rng = np.random.default_rng(case["seed"])
    layer, params, cell, cfg = make_layer(case["spec"], rng, **dict(case["cfg"]))
    T, B, I = case["T"], case["B"], cfg["input_size"]
    if case["unbatched"]:
        shape = (T, I)
    else:
        shape = (B, T, I) if cfg["batch_first"] else (T, B, I)
    x = (case["scale"] * rng.standard_normal(shape)).astype(case["dtype"])
    hx = random_states(cell, cfg, B, rng, unbatched=case["unbatched"]) if case["use_h0"] else None
    for where, val, pos in case.get("specials", []):
        target = x if where == "x" else (None if hx is None else (hx[0] if cell == "LSTM" else hx))
        if target is not None and target.size:
            target.reshape(-1)[pos % target.size] = val
    return layer, params, cell, cfg, x, hx, rng


@settings(deadline=None)
@given(case=valid_calls())
def test_valid_inputs_match_reference(make_layer, case):
    layer, params, cell, cfg, x, hx, _ = _build(make_layer, case)
    note(f"cell={cell} cfg={cfg} x={x.shape}/{x.dtype} lengths={case['lengths']}")
    # unbounded relu: values can grow, so allow a relative part as well
    check_layer(layer, cell, params, cfg, x, hx, case["lengths"], what="property",
                tol=TOLERANCE[x.dtype], rtol=1e-5)


FAULTS = {
    # fault: expected exception
    "x_int": TypeError, "x_bool": TypeError, "x_complex": TypeError, "x_object": TypeError,
    "x_features": ValueError, "x_rank": ValueError,
    "h0_layers": ValueError, "h0_batch": ValueError, "h0_hidden": ValueError,
    "c0_hidden": ValueError, "lstm_bare_state": TypeError,
    "lengths_count": ValueError, "lengths_high": ValueError, "lengths_negative": ValueError,
    "lengths_float": TypeError,
}


@st.composite
def faulty_calls(draw):
    case = draw(valid_calls())
    case["unbatched"] = False
    case["B"] = max(case["B"], 1)
    case["T"] = max(case["T"], 1)
    case["lengths"] = None
    case["specials"] = []
    faults = [f for f in FAULTS if not (f in ("c0_hidden", "lstm_bare_state") and case["spec"] != "lstm")]
    case["fault"] = draw(st.sampled_from(faults))
    case["delta"] = draw(st.sampled_from([-1, 1, 2]))
    return case


@settings(deadline=None)
@given(case=faulty_calls())
def test_one_fault_raises_the_right_error(make_layer, case):
    fault, delta = case["fault"], case["delta"]
    if fault.startswith(("h0", "c0", "lstm_bare")):
        case["use_h0"] = True
    layer, params, cell, cfg, x, hx, rng = _build(make_layer, case)
    B, T = case["B"], case["T"]
    bax = 0 if cfg["batch_first"] else 1
    lengths = None
    if fault == "x_int":
        x = (x * 10).astype(np.int32)
    elif fault == "x_bool":
        x = x > 0
    elif fault == "x_complex":
        x = x.astype(np.complex64)
    elif fault == "x_object":
        x = x.astype(object)
    elif fault == "x_features":
        n = x.shape[-1] + delta          # delta != 0, so n != input_size; n may be 0
        x = np.zeros(x.shape[:-1] + (max(n, 0),), x.dtype)
    elif fault == "x_rank":
        x = x[None] if delta > 0 else x[0, 0]
    elif fault in ("h0_layers", "h0_batch", "h0_hidden", "c0_hidden"):
        axis = {"h0_layers": 0, "h0_batch": 1, "h0_hidden": 2, "c0_hidden": 2}[fault]
        states = list(hx) if cell == "LSTM" else [hx]
        k = 1 if fault == "c0_hidden" else 0
        s = states[k]
        new = list(s.shape)
        new[axis] = new[axis] + delta if new[axis] + delta > 0 else new[axis] + 1
        states[k] = np.zeros(new, np.float32)
        hx = tuple(states) if cell == "LSTM" else states[0]
    elif fault == "lstm_bare_state":
        hx = hx[0]
    elif fault == "lengths_count":
        lengths = np.full(B + delta, T, np.int64)      # B >= 1, delta in {-1, 1, 2}
    elif fault == "lengths_high":
        lengths = [T] * B
        lengths[rng.integers(B)] = T + abs(delta)
    elif fault == "lengths_negative":
        lengths = [T] * B
        lengths[rng.integers(B)] = -abs(delta)
    elif fault == "lengths_float":
        lengths = np.full(B, T, dtype=np.float64) - 0.5
    note(f"fault={fault} cell={cell} cfg={cfg} x={x.shape}/{x.dtype}")
    with pytest.raises(FAULTS[fault]):
        layer(x, hx, lengths)
    # the layer still works afterwards
    good = np.zeros((T, B, cfg["input_size"]) if not cfg["batch_first"] else (B, T, cfg["input_size"]),
                    np.float32)
    out, _ = split_result(cell, layer(good))
    assert out.shape[bax] == B


@settings(deadline=None)
@given(case=valid_calls(), cut=st.integers(0, 9))
def test_chunking_property(make_layer, case, cut):
    """Unidirectional, no lengths: running [0, cut) then [cut, T) with the state == one call."""
    case["cfg"] = dict(case["cfg"], bidirectional=False)
    case["lengths"] = None
    case["specials"] = []
    layer, params, cell, cfg, x, hx, _ = _build(make_layer, case)
    T = case["T"]
    cut = min(cut, T)
    tax = 1 if (cfg["batch_first"] and not case["unbatched"]) else 0
    whole_out, whole_st = split_result(cell, layer(x, hx))
    o1, s = layer(np.take(x, range(cut), axis=tax), hx)
    o2, s = layer(np.take(x, range(cut, T), axis=tax), s)
    _, sts = split_result(cell, (o2, s))
    assert_close(np.concatenate([o1, o2], axis=tax), whole_out, 1e-6, "chunked out", rtol=1e-6)
    for a, b in zip(sts, whole_st):
        assert_close(a, b, 1e-6, "chunked state", rtol=1e-6)


@st.composite
def mutated_state_dicts(draw):
    """A valid torch-named state dict, then zero or more mutations: a dropped, renamed, extra,
    reshaped, retyped or non-finite entry."""
    spec = draw(st.sampled_from(SPECS))
    H = draw(st.integers(1, 8))
    cfg = dict(input_size=draw(st.integers(1, 5)), hidden_size=H, num_layers=draw(st.integers(1, 2)),
               bidirectional=draw(st.booleans()), bias=draw(st.booleans()))
    ops = draw(st.lists(st.sampled_from(["drop", "rename", "extra", "reshape", "int", "complex", "string",
                                         "nan", "inf", "f64", "list"]), max_size=2))
    return spec, cfg, ops, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=80)
@given(mutated_state_dicts())
def test_state_dicts_load_or_raise_clearly(make_layer, case):
    spec, cfg, ops, seed = case
    rng = np.random.default_rng(seed)
    layer, params, cell, full = make_layer(spec, rng, **cfg)
    sd = {k: v.copy() for k, v in params.items()}
    names = sorted(sd)
    expect_error = False
    for op in ops:
        name = names[rng.integers(len(names))]
        if name not in sd:
            continue
        if op == "drop":
            del sd[name]; expect_error = True  # noqa: E702
        elif op == "rename":
            sd[name + "_x"] = sd.pop(name); expect_error = True  # noqa: E702
        elif op == "extra":
            sd["weight_zz_l9"] = np.zeros(3, np.float32); expect_error = True  # noqa: E702
        elif op == "reshape":
            sd[name] = sd[name].reshape(-1)[:-1] if sd[name].size > 1 else np.zeros((2, 2), np.float32)
            expect_error = True
        elif op == "complex":
            sd[name] = sd[name].astype(np.complex64); expect_error = True  # noqa: E702
        elif op == "string":
            sd[name] = np.full(sd[name].shape, "a"); expect_error = True  # noqa: E702
        elif op == "int":
            sd[name] = np.round(sd[name] * 10).astype(np.int32)
        elif op == "nan":
            sd[name] = sd[name].copy(); sd[name].flat[0] = np.nan  # noqa: E702
        elif op == "inf":
            sd[name] = sd[name].copy(); sd[name].flat[0] = -np.inf  # noqa: E702
        elif op == "f64":
            sd[name] = sd[name].astype(np.float64)
        elif op == "list":
            sd[name] = sd[name].tolist()
    before = layer.state_dict()
    x = rng.standard_normal((3, 2, cfg["input_size"])).astype(np.float32)
    try:
        layer.load_state_dict(sd)
    except (ValueError, TypeError) as exc:
        note(str(exc))
        assert expect_error, f"valid state dict refused: {exc}"
        for k, v in layer.state_dict().items():   # a refused dict leaves the layer as it was
            np.testing.assert_array_equal(v, before[k])
        return
    assert not expect_error, f"invalid state dict accepted ({ops})"
    out = split_result(cell, layer(x))[0]
    assert out.shape[0] == 3 and out.dtype == np.float32
