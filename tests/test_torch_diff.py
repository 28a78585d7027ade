"""fastrnn vs PyTorch (torch.nn.LSTM / GRU / RNN): from_torch, load_state_dict, state_dict names.

Also checks the numpy reference itself against torch (float64), so that the reference-based tests
rest on a validated reference.
"""
import itertools
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

from reference import (  # noqa: E402
    assert_close, param_shapes, reference_forward, split_result,
)

TOL = 1e-5

MODULES = {
    "lstm": (torch.nn.LSTM, "LSTM", {}),
    "lstm_proj": (torch.nn.LSTM, "LSTM", {"proj_size": 3}),
    "gru": (torch.nn.GRU, "GRU", {}),
    "rnn_tanh": (torch.nn.RNN, "RNN", {"nonlinearity": "tanh"}),
    "rnn_relu": (torch.nn.RNN, "RNN", {"nonlinearity": "relu"}),
}

# (num_layers, bidirectional, batch_first, initial states, lengths, bias, B, T, H)
CONFIGS = [
    (1, False, False, False, False, True, 3, 7, 8),
    (1, True, True, True, True, True, 5, 11, 16),
    (2, False, True, True, False, False, 4, 9, 8),
    (2, True, False, False, True, True, 6, 13, 12),
    (3, True, True, True, True, True, 7, 20, 24),
    (3, False, False, True, True, True, 1, 5, 6),
    (2, True, False, True, False, False, 2, 1, 9),
]


def _cfg_id(c):
    L, bi, bf, h0, ln, bias, B, T, H = c
    return (f"L{L}-{'bi' if bi else 'uni'}-{'bf' if bf else 'tf'}-{'h0' if h0 else 'noh0'}-"
            f"{'len' if ln else 'nolen'}-{'bias' if bias else 'nobias'}-B{B}-T{T}-H{H}")


def _torch_module(kind, L, bi, bf, bias, H, I, seed, dtype=torch.float32):
    cls, cell, extra = MODULES[kind]
    torch.manual_seed(seed)
    kw = dict(input_size=I, hidden_size=H, num_layers=L, bidirectional=bi, batch_first=bf,
              bias=bias, **extra)
    m = cls(**kw).to(dtype).eval()
    return m, cell, kw


def _torch_run(m, x, hx, lengths, bf, T):
    with torch.no_grad():
        xt = torch.from_numpy(x)
        if hx is not None:
            hx = tuple(torch.from_numpy(a) for a in hx) if isinstance(hx, tuple) else torch.from_numpy(hx)
        if lengths is None:
            out, st = m(xt, hx)
        else:
            packed = pack_padded_sequence(xt, torch.as_tensor(lengths), batch_first=bf,
                                          enforce_sorted=False)
            out, st = m(packed, hx)
            out, _ = pad_packed_sequence(out, batch_first=bf, total_length=T)
    st = tuple(s.numpy() for s in st) if isinstance(st, tuple) else st.numpy()
    return out.numpy(), st


def _inputs(rng, cell, kw, B, T, use_h0, use_len, dtype=np.float32):
    L = kw["num_layers"]
    D = 2 if kw["bidirectional"] else 1
    H = kw["hidden_size"]
    Hout = kw.get("proj_size", 0) or H
    shape = (B, T, kw["input_size"]) if kw["batch_first"] else (T, B, kw["input_size"])
    x = rng.standard_normal(shape).astype(dtype)
    hx = None
    if use_h0:
        h0 = rng.standard_normal((L * D, B, Hout)).astype(dtype)
        hx = (h0, rng.standard_normal((L * D, B, H)).astype(dtype)) if cell == "LSTM" else h0
    lengths = None
    if use_len:
        lengths = rng.integers(1, T + 1, size=B)   # torch packing needs lengths >= 1
        lengths[0] = T
    return x, hx, lengths


def _compare(cell, got, expected, what):
    out, sts = split_result(cell, got)
    eout, ests = split_result(cell, expected if cell != "LSTM" else (expected[0], tuple(expected[1])))
    assert out.dtype == np.float32, what
    assert_close(out, eout, TOL, what + " out")
    for name, a, e in zip(["h_n", "c_n"], sts, ests):
        assert a.dtype == np.float32, what
        assert_close(a, e, TOL, f"{what} {name}")


# --------------------------------------------------------------------------------------------
# the reference itself vs torch (float64)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(MODULES))
def test_reference_matches_torch_float64(kind):
    rng = np.random.default_rng(0)
    for i, c in enumerate(CONFIGS):
        L, bi, bf, use_h0, use_len, bias, B, T, H = c
        m, cell, kw = _torch_module(kind, L, bi, bf, bias, H, 5, seed=i, dtype=torch.float64)
        x, hx, lengths = _inputs(rng, cell, kw, B, T, use_h0, use_len, dtype=np.float64)
        expected = _torch_run(m, x, hx, lengths, bf, T)
        params = {k: v.numpy() for k, v in m.state_dict().items()}
        assert list(params) == list(param_shapes(cell, kw))
        got = reference_forward(cell, params, kw, x, hx, lengths)
        eo, es = split_result(cell, expected)
        go, gs = split_result(cell, got)
        assert_close(go, eo, 1e-12, f"reference {kind} {_cfg_id(c)}")
        for a, b in zip(gs, es):
            assert_close(a, b, 1e-12, f"reference {kind} {_cfg_id(c)} state")


# --------------------------------------------------------------------------------------------
# fastrnn.from_torch vs torch
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", CONFIGS, ids=[_cfg_id(c) for c in CONFIGS])
@pytest.mark.parametrize("kind", list(MODULES))
def test_from_torch(fastrnn, kind, config):
    L, bi, bf, use_h0, use_len, bias, B, T, H = config
    seed = CONFIGS.index(config) * 10 + list(MODULES).index(kind)
    rng = np.random.default_rng(seed)
    m, cell, kw = _torch_module(kind, L, bi, bf, bias, H, 6, seed)
    layer = fastrnn.from_torch(m)
    assert type(layer).__name__ == cell
    x, hx, lengths = _inputs(rng, cell, kw, B, T, use_h0, use_len)
    expected = _torch_run(m, x, hx, lengths, bf, T)
    got = layer(x, hx, lengths)
    _compare(cell, got, expected, f"{kind} {_cfg_id(config)}")
    # same thing with lengths as a torch-style python list and all-full lengths == no lengths
    if lengths is not None:
        got2 = layer(x, hx, [int(v) for v in lengths])
        _compare(cell, got2, expected, f"{kind} {_cfg_id(config)} list lengths")
    full = layer(x, hx, [T] * B)
    _compare(cell, full, _torch_run(m, x, hx, None, bf, T), f"{kind} {_cfg_id(config)} full lengths")


@pytest.mark.parametrize("kind", list(MODULES))
def test_from_torch_unbatched(fastrnn, kind):
    rng = np.random.default_rng(5)
    m, cell, kw = _torch_module(kind, 2, True, False, True, 10, 4, seed=5)
    layer = fastrnn.from_torch(m)
    x = rng.standard_normal((9, 4)).astype(np.float32)
    _compare(cell, layer(x), _torch_run(m, x, None, None, False, 9), f"{kind} unbatched")
    Hout = kw.get("proj_size", 0) or 10
    h0 = rng.standard_normal((4, Hout)).astype(np.float32)
    hx = (h0, rng.standard_normal((4, 10)).astype(np.float32)) if cell == "LSTM" else h0
    _compare(cell, layer(x, hx), _torch_run(m, x, hx, None, False, 9), f"{kind} unbatched h0")


@pytest.mark.parametrize("kind", ["lstm", "lstm_proj", "gru", "rnn_relu"])
def test_from_torch_large(fastrnn, kind):
    """A realistic size: H=200, 3 bidirectional layers, T=50, B=16, lengths and states."""
    rng = np.random.default_rng(77)
    cls, cell, extra = MODULES[kind]
    extra = {"proj_size": 64} if kind == "lstm_proj" else extra
    torch.manual_seed(77)
    kw = dict(input_size=32, hidden_size=200, num_layers=3, bidirectional=True, batch_first=True,
              **extra)
    m = cls(**kw).eval()
    layer = fastrnn.from_torch(m)
    x, hx, lengths = _inputs(rng, cell, kw, 16, 50, True, True)
    _compare(cell, layer(x, hx, lengths), _torch_run(m, x, hx, lengths, True, 50), f"{kind} large")


def test_from_torch_float64_module(fastrnn):
    """A double-precision torch module converts to (float32) fastrnn weights."""
    rng = np.random.default_rng(8)
    m, cell, kw = _torch_module("gru", 2, True, False, True, 8, 3, seed=8, dtype=torch.float64)
    layer = fastrnn.from_torch(m)
    for v in layer.state_dict().values():
        assert v.dtype == np.float32
    x = rng.standard_normal((6, 2, 3))
    _compare(cell, layer(x), _torch_run(m, x, None, None, False, 6), "gru float64 module")


def test_from_torch_parametrized_weights(fastrnn):
    """A module whose weights are parametrized (weight_norm) converts with the weights it
    computes with (state_dict() holds only their factors)."""
    torch.manual_seed(3)
    m = torch.nn.GRU(4, 6, num_layers=2, bidirectional=True)
    torch.nn.utils.parametrizations.weight_norm(m, name="weight_hh_l0")
    torch.nn.utils.parametrizations.weight_norm(m, name="weight_ih_l1_reverse")
    x = torch.randn(5, 3, 4)
    with torch.no_grad():
        ref, h = m(x)
    out, h_n = fastrnn.from_torch(m)(x.numpy())
    assert np.max(np.abs(out - ref.numpy())) <= TOL and np.max(np.abs(h_n - h.numpy())) <= TOL


def test_torch_tensors_as_inputs(fastrnn):
    """Tensors that require grad, bfloat16 tensors, for x, hx and step(); a PackedSequence is
    refused with a message saying what to pass instead."""
    torch.manual_seed(4)
    m = torch.nn.LSTM(4, 6)
    layer = fastrnn.from_torch(m)
    x = torch.randn(5, 3, 4, requires_grad=True)
    h0 = torch.randn(1, 3, 6, requires_grad=True)
    c0 = torch.randn(1, 3, 6)
    with torch.no_grad():
        ref, (h, c) = m(x, (h0, c0))
    out, (h_n, c_n) = layer(x, (h0, c0))
    assert np.max(np.abs(out - ref.numpy())) <= TOL and np.max(np.abs(c_n - c.numpy())) <= TOL
    o1, (h1, c1) = layer.step(x[0], (h0, c0))
    assert np.max(np.abs(o1 - ref[0].numpy())) <= TOL
    xb = x.detach().bfloat16()
    np.testing.assert_array_equal(layer(xb)[0], layer(xb.float().numpy())[0])
    with pytest.raises(TypeError, match="PackedSequence.*lengths="):
        layer(pack_padded_sequence(x, [5, 3, 2]))


def test_from_torch_config(fastrnn):
    torch.manual_seed(0)
    m = torch.nn.LSTM(5, 12, num_layers=2, bias=False, batch_first=True, bidirectional=True,
                      proj_size=4)
    cfg = fastrnn.from_torch(m).config()
    json.dumps(cfg)
    assert cfg["cell"] == "LSTM"
    for k, v in dict(input_size=5, hidden_size=12, num_layers=2, bias=False, batch_first=True,
                     bidirectional=True, proj_size=4).items():
        assert cfg[k] == v, k
    m = torch.nn.RNN(3, 7, nonlinearity="relu")
    cfg = fastrnn.from_torch(m).config()
    assert cfg["cell"] == "RNN" and cfg["nonlinearity"] == "relu" and cfg["hidden_size"] == 7


# --------------------------------------------------------------------------------------------
# state_dict / load_state_dict vs torch
# --------------------------------------------------------------------------------------------

SD_CONFIGS = list(itertools.product([1, 3], [False, True], [True, False]))   # L, bi, bias


@pytest.mark.parametrize("L,bi,bias", SD_CONFIGS)
@pytest.mark.parametrize("kind", list(MODULES))
def test_state_dict_names_and_shapes_equal_torch(fastrnn, kind, L, bi, bias):
    cls, cell, extra = MODULES[kind]
    m = cls(4, 9, num_layers=L, bidirectional=bi, bias=bias, **extra)
    layer = getattr(fastrnn, cell)(4, 9, num_layers=L, bidirectional=bi, bias=bias, seed=7, **extra)
    tsd = m.state_dict()
    sd = layer.state_dict()
    assert sorted(sd) == sorted(tsd)
    for k, v in tsd.items():
        assert isinstance(sd[k], np.ndarray), k
        assert sd[k].shape == tuple(v.shape), (k, sd[k].shape, tuple(v.shape))
        assert sd[k].dtype == np.float32, k
        # torch-like init: uniform(-1/sqrt(H), 1/sqrt(H))
        assert np.abs(sd[k]).max() <= 1 / np.sqrt(9) + 1e-7, k
        assert np.abs(sd[k]).max() > 0.5 / np.sqrt(9), f"{k} does not look like torch's init"


@pytest.mark.parametrize("config", CONFIGS[:5], ids=[_cfg_id(c) for c in CONFIGS[:5]])
@pytest.mark.parametrize("kind", list(MODULES))
def test_load_state_dict_round_trip(fastrnn, kind, config):
    L, bi, bf, use_h0, use_len, bias, B, T, H = config
    seed = 100 + CONFIGS.index(config)
    m, cell, kw = _torch_module(kind, L, bi, bf, bias, H, 5, seed)
    cls_kw = {k: v for k, v in kw.items() if k not in ("input_size", "hidden_size")}
    layer = getattr(fastrnn, cell)(5, H, seed=123, **cls_kw)
    tsd = {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
    layer.load_state_dict(tsd)
    # the layer must not alias the caller's arrays
    for v in tsd.values():
        v[...] = 7.0
    sd = layer.state_dict()
    assert sorted(sd) == sorted(tsd)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(sd[k], v.numpy(), err_msg=k)
    # state_dict() returns copies (mutating them does not change the layer)
    for v in sd.values():
        v[...] = 0.0
    rng = np.random.default_rng(seed)
    x, hx, lengths = _inputs(rng, cell, kw, B, T, use_h0, use_len)
    _compare(cell, layer(x, hx, lengths), _torch_run(m, x, hx, lengths, bf, T),
             f"{kind} {_cfg_id(config)} load_state_dict")
    # and back into torch: identical module
    m2, _, _ = _torch_module(kind, L, bi, bf, bias, H, 5, seed + 1)
    m2.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    for k, v in m.state_dict().items():
        assert torch.equal(m2.state_dict()[k], v), k


def test_load_state_dict_accepts_tensors_and_lists(fastrnn):
    """load_state_dict takes anything np.asarray takes (here: torch tensors, nested lists)."""
    m = torch.nn.GRU(3, 4)
    layer = fastrnn.GRU(3, 4, seed=0)
    layer.load_state_dict({k: v.detach() for k, v in m.state_dict().items()})
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(layer.state_dict()[k], v.numpy())
    layer2 = fastrnn.GRU(3, 4, seed=0)
    layer2.load_state_dict({k: v.tolist() for k, v in m.state_dict().items()})
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(layer2.state_dict()[k], v.numpy())


@pytest.mark.parametrize("kind", list(MODULES))
def test_config_round_trip(fastrnn, kind):
    """layer.config() is JSON-serialisable and layer_from_config(cfg) + weights == the layer."""
    m, cell, kw = _torch_module(kind, 2, True, True, True, 6, 3, seed=9)
    layer = fastrnn.from_torch(m)
    cfg = json.loads(json.dumps(layer.config()))
    clone = fastrnn.layer_from_config(cfg)
    assert type(clone) is type(layer)
    assert clone.config() == layer.config()
    clone.load_state_dict(layer.state_dict())
    x = np.random.default_rng(9).standard_normal((2, 5, 3)).astype(np.float32)
    a, sa = split_result(cell, layer(x))
    b, sb = split_result(cell, clone(x))
    np.testing.assert_array_equal(a, b)
    for u, v in zip(sa, sb):
        np.testing.assert_array_equal(u, v)
