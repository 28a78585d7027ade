"""Whole-sequence models (fastrnn.models): modules, Sequential, files, torch conversion,
generation and forecasting."""
import json
import pickle
import time

import numpy as np
import pytest

import fastrnn
from fastrnn.models import (Embedding, Identity, Linear, LogSoftmax, ReLU, Select, Sequential, Sigmoid,
                            Softmax, Tanh, is_model_file, load_model, save_model)


def rng_(seed=0):
    return np.random.default_rng(seed)


def lm(cell="LSTM", V=23, E=6, H=12, layers=2, batch_first=False, seed=0):
    rnn = getattr(fastrnn, cell)(E, H, num_layers=layers, batch_first=batch_first, seed=seed)
    return Sequential(Embedding(V, E, seed=seed), rnn, Linear(H, V, seed=seed + 1))


# ------------------------------------------------------------------------------ modules
def test_embedding():
    emb = Embedding(10, 4, padding_idx=-1, seed=0)
    assert emb.padding_idx == 9 and not emb.weight[9].any()
    ids = np.array([[1, 2], [9, 0]])
    np.testing.assert_array_equal(emb(ids), emb.weight[ids])
    assert emb(ids).shape == (2, 2, 4) and emb(ids).dtype == np.float32
    with pytest.raises(IndexError, match="out of range"):
        emb([10])
    with pytest.raises(IndexError, match="out of range"):
        emb([-1])
    with pytest.raises(TypeError, match="integer ids"):
        emb([1.0])
    with pytest.raises(ValueError):
        Embedding(3, 2, padding_idx=3)
    with pytest.raises(TypeError):
        Embedding(3.0, 2)


def test_linear_and_activations():
    lin = Linear(5, 3, seed=0)
    x = rng_().standard_normal((4, 2, 5)).astype(np.float32)
    sd = lin.state_dict()
    want = x @ sd["weight"].T + sd["bias"]
    np.testing.assert_allclose(lin(x), want, atol=1e-6)
    assert lin(x[0, 0]).shape == (3,)
    nob = Linear(5, 3, bias=False, seed=0)
    assert set(nob.state_dict()) == {"weight"}
    np.testing.assert_allclose(nob(x), x @ nob.weight.T, atol=1e-6)
    with pytest.raises(ValueError, match="5 features"):
        lin(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError):
        lin(np.zeros((2, 5), np.int64))
    np.testing.assert_allclose(Tanh()(x), np.tanh(x), atol=1e-7)
    np.testing.assert_array_equal(ReLU()(x), np.maximum(x, 0))
    np.testing.assert_allclose(Sigmoid()(x), 1 / (1 + np.exp(-x.astype(np.float64))), atol=1e-7)
    sm = Softmax()(x)
    np.testing.assert_allclose(sm.sum(-1), 1, atol=1e-6)
    np.testing.assert_allclose(LogSoftmax()(x), np.log(sm), atol=1e-6)
    np.testing.assert_allclose(Softmax(dim=0)(x).sum(0), 1, atol=1e-6)
    big = np.array([[1000.0, 0.0]], np.float32)  # stable
    np.testing.assert_allclose(Softmax()(big), [[1, 0]], atol=1e-7)
    assert np.isfinite(LogSoftmax()(big)).all()
    for shape in ((0,), (2, 0), (0, 3)):   # empty: empty out, as in torch (a numpy error before)
        assert Softmax()(np.zeros(shape, np.float32)).shape == shape
        assert LogSoftmax()(np.zeros(shape, np.float32)).shape == shape
    with pytest.raises(ValueError):
        Softmax(dim=3)(x)
    assert Identity()(x) is x


def test_shortcuts_and_construction_errors():
    m = Sequential(fastrnn.GRU(3, 4, seed=0), "tanh", Linear(4, 2, seed=0), "log_softmax")
    assert [type(x).__name__ for x in m] == ["GRU", "Tanh", "Linear", "LogSoftmax"]
    assert type(Sequential("relu", "sigmoid", "softmax", "logsoftmax", "identity", "last")[-1]) is Select
    with pytest.raises(ValueError, match="shortcut"):
        Sequential("gelu")
    with pytest.raises(TypeError):
        Sequential(object())
    with pytest.raises(ValueError, match="batch_first"):
        Sequential(fastrnn.LSTM(2, 3, seed=0), fastrnn.GRU(3, 3, batch_first=True, seed=0))
    with pytest.raises(ValueError, match="after a Select"):
        Sequential(fastrnn.LSTM(2, 3, seed=0), Select(-1), fastrnn.GRU(3, 3, seed=0))


# ------------------------------------------------------------------------------ Sequential
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_sequential_matches_layer_by_layer(cell, batch_first):
    m = lm(cell, batch_first=batch_first)
    T, B = 9, 3
    ids = rng_(1).integers(0, 23, (B, T) if batch_first else (T, B))
    y, state = m(ids)
    emb, rnn, lin = m
    out, hn = rnn(emb.weight[ids])
    np.testing.assert_allclose(y, out @ lin.weight.T + lin.state_dict()["bias"], atol=1e-5)
    assert len(state) == 1
    if cell == "LSTM":
        np.testing.assert_array_equal(state[0][0], hn[0])
        np.testing.assert_array_equal(state[0][1], hn[1])
    else:
        np.testing.assert_array_equal(state[0], hn)
    # streaming: chunks with the carried state equal one call
    if batch_first:
        y1, s1 = m(ids[:, :4])
        y2, s2 = m(ids[:, 4:], s1)
        np.testing.assert_allclose(np.concatenate([y1, y2], axis=1), y, atol=1e-5)
    else:
        y1, s1 = m(ids[:4])
        y2, s2 = m(ids[4:], s1)
        np.testing.assert_allclose(np.concatenate([y1, y2]), y, atol=1e-5)
    # step by step
    s = None
    for t in range(T):
        yt, s = m.step(ids[:, t] if batch_first else ids[t], s)
        np.testing.assert_allclose(yt, y[:, t] if batch_first else y[t], atol=1e-5)
    # unbatched
    one = ids[0] if batch_first else ids[:, 0]
    yu, su = m(one)
    np.testing.assert_allclose(yu, y[0] if batch_first else y[:, 0], atol=1e-5)


def test_sequential_state_list_and_errors():
    m = Sequential(fastrnn.LSTM(3, 5, seed=0), fastrnn.GRU(5, 4, seed=1), Linear(4, 2, seed=0))
    x = rng_().standard_normal((6, 2, 3)).astype(np.float32)
    y, state = m(x)
    assert y.shape == (6, 2, 2) and len(state) == 2
    assert isinstance(state[0], tuple) and state[1].shape == (1, 2, 4)
    y2, _ = m(x, [None, None])
    np.testing.assert_array_equal(y, y2)
    with pytest.raises(ValueError, match="2 recurrent"):
        m(x, [None])
    with pytest.raises(TypeError):
        m(x, state=np.zeros(3))
    with pytest.raises(ValueError, match="3-D"):
        m(np.zeros((1, 2, 3, 4), np.float32))


def test_select_last_and_lengths():
    rnn = fastrnn.LSTM(3, 5, seed=0)
    m = Sequential(rnn, Select(-1), Linear(5, 2, seed=0))
    x = rng_().standard_normal((7, 4, 3)).astype(np.float32)
    y, _ = m(x)
    out, _ = rnn(x)
    lin = m[2]
    np.testing.assert_allclose(y, lin(out[-1]), atol=1e-6)
    lengths = [7, 3, 1, 0]
    y, _ = m(x, lengths=lengths)
    out, _ = rnn(x, lengths=lengths)
    for b, L in enumerate(lengths):
        want = lin(out[L - 1, b]) if L else lin(np.zeros(5, np.float32))
        np.testing.assert_allclose(y[b], want, atol=1e-6)
    # batch_first and unbatched
    mb = Sequential(fastrnn.GRU(3, 5, batch_first=True, seed=0), "last")
    xb = x.transpose(1, 0, 2)
    np.testing.assert_allclose(mb(xb)[0], mb[0](xb)[0][:, -1], atol=1e-6)
    np.testing.assert_allclose(mb(xb[0])[0], mb[0](xb[0])[0][-1], atol=1e-6)
    assert Select(0)(x).shape == (4, 3)
    # T = 0: every length is 0, zeros go on to the Linear
    y0, _ = m(np.zeros((0, 2, 3), np.float32), lengths=[0, 0])
    np.testing.assert_allclose(y0, np.tile(lin(np.zeros(5, np.float32)), (2, 1)), atol=1e-7)
    # lengths are checked by the model, also with no recurrent layer before the Select
    feat = Sequential(Linear(3, 2, seed=0), Select(-1))
    for bad, err, match in (([-3, 2, 1, 1], ValueError, "0..7"), ([9, 2, 1, 1], ValueError, "0..7"),
                            ([2.7, 2, 1, 1], TypeError, "integers"), ([3], ValueError, r"\(4,\)")):
        for model in (feat, m):
            with pytest.raises(err, match=match):
                model(x, lengths=bad)
    np.testing.assert_array_equal(feat(x, lengths=[7, 3, 1, 0])[0][1], feat[0](x[2, 1]))


def test_state_dict_names_and_strict_load():
    m = lm()
    sd = m.state_dict()
    assert "0.weight" in sd and "1.weight_ih_l0" in sd and "1.weight_hh_l1" in sd and "2.bias" in sd
    m2 = lm(seed=5).load_state_dict(sd)
    ids = rng_().integers(0, 23, (5, 2))
    np.testing.assert_array_equal(m(ids)[0], m2(ids)[0])
    with pytest.raises(ValueError, match="unexpected"):
        m2.load_state_dict({**sd, "7.weight": np.zeros(1)})
    with pytest.raises(ValueError, match="module 2"):
        m2.load_state_dict({k: v for k, v in sd.items() if k != "2.bias"})
    with pytest.raises(ValueError, match="size mismatch"):
        m2.load_state_dict({**sd, "0.weight": np.zeros((3, 3))})
    np.testing.assert_array_equal(m(ids)[0], m2(ids)[0])  # a failed load changes nothing
    # the whole model swapped at once; a layer's own thread setting carries over
    m2[1].num_threads = 1
    m2.load_state_dict(lm(seed=7).state_dict())
    assert m2[1].num_threads == 1
    np.testing.assert_array_equal(m2[1].state_dict()["weight_hh_l1"], lm(seed=7).state_dict()["1.weight_hh_l1"])
    m3 = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(m(ids)[0], m3(ids)[0])


# ------------------------------------------------------------------------------ files
def test_save_load_roundtrip(tmp_path):
    m = Sequential(Embedding(11, 4, padding_idx=0, seed=0),
                   fastrnn.GRU(4, 6, num_layers=2, batch_first=True, seed=0),
                   "relu", Linear(6, 11, seed=0), Softmax(-1))
    path = tmp_path / "m.safetensors"
    save_model(m, path, metadata={"vocab": json.dumps(list("abcdefghijk"))})
    assert is_model_file(path)
    m2, meta = load_model(path, return_metadata=True)
    assert json.loads(meta["vocab"])[0] == "a" and json.loads(meta["fastrnn_model"])["type"] == "Sequential"
    assert repr(m2) == repr(m) and m2.batch_first
    ids = rng_().integers(0, 11, (2, 5))
    np.testing.assert_array_equal(m(ids)[0], m2(ids)[0])
    from fastrnn._safetensors import read_safetensors
    tensors, _ = read_safetensors(path)
    assert set(tensors) == set(m.state_dict())
    # single modules too; single RNN layers belong to fastrnn.save
    save_model(Linear(3, 2, seed=0), tmp_path / "lin.safetensors")
    assert isinstance(load_model(tmp_path / "lin.safetensors"), Linear)
    with pytest.raises(TypeError):
        save_model(fastrnn.LSTM(2, 3), tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="reserved"):
        save_model(m, tmp_path / "y.safetensors", metadata={"fastrnn_model": "x"})


def test_load_errors(tmp_path):
    from fastrnn._safetensors import write_safetensors
    p = tmp_path / "a.safetensors"
    write_safetensors(p, {"w": np.zeros(2, np.float32)})
    assert not is_model_file(p)
    assert not is_model_file(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="not a fastrnn model file"):
        load_model(p)
    write_safetensors(p, {"w": np.zeros(2, np.float32)}, {"fastrnn_model": "{bad json"})
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(p)
    write_safetensors(p, {"0.weight": np.zeros((2, 2), np.float32)},
                      {"fastrnn_model": json.dumps({"type": "Sequential", "modules": [{"type": "Conv"}]})})
    with pytest.raises(ValueError, match="unknown module type"):
        load_model(p)
    m = Sequential(Linear(2, 2, seed=0))
    save_model(m, p)
    from fastrnn._safetensors import read_safetensors
    t, meta = read_safetensors(p)
    write_safetensors(p, {**t, "0.extra": np.zeros(1, np.float32)}, meta)
    with pytest.raises(ValueError, match="unexpected"):
        load_model(p)
    write_safetensors(p, t, {**meta, "fastrnn_format": "9"})
    with pytest.raises(ValueError, match="format"):
        load_model(p)
    # a config claiming far more layers than the file holds fails at once, not after minutes
    arch = {"type": "Sequential", "modules": [{"type": "RNNLayer", "config": {
        "cell": "RNN", "input_size": 1, "hidden_size": 1, "num_layers": 10**8}}]}
    write_safetensors(p, {"0.weight_ih_l0": np.zeros((1, 1), np.float32)},
                      {"fastrnn_model": json.dumps(arch), "fastrnn_format": "1"})
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="num_layers=100000000"):
        load_model(p)
    assert time.perf_counter() - t0 < 5


# ------------------------------------------------------------------------------ torch conversion
def test_from_torch_module():
    torch = pytest.importorskip("torch")
    from fastrnn.models import from_torch_module
    nn = torch.nn
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Dropout(0.1), nn.Sequential(nn.Linear(8, 4), nn.ReLU()),
                        nn.Linear(4, 3), nn.LogSoftmax(dim=-1)).eval()
    m = from_torch_module(seq)
    assert [type(x).__name__ for x in m] == ["Linear", "Tanh", "Identity", "Linear", "ReLU", "Linear", "LogSoftmax"]
    x = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    with torch.no_grad():
        want = seq(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(m(x[None])[0][0], want, atol=1e-5)
    emb = from_torch_module(nn.Embedding(7, 3, padding_idx=2))
    assert isinstance(emb, Embedding) and emb.padding_idx == 2
    lstm = from_torch_module(nn.LSTM(3, 4))
    assert isinstance(lstm, fastrnn.LSTM)
    assert isinstance(from_torch_module(nn.Sigmoid()), Sigmoid)
    with pytest.raises(TypeError, match="cannot convert"):
        from_torch_module(nn.Conv1d(1, 1, 1))
    with pytest.raises(ValueError, match="dim"):
        from_torch_module(nn.Softmax())
    # every dropout is the identity at inference (Dropout2d and FeatureAlphaDropout were refused)
    for d in (nn.Dropout2d(0.3), nn.Dropout3d(0.3), nn.FeatureAlphaDropout(0.3)):
        assert isinstance(from_torch_module(d), Identity)

    # a module holding a Tree-LSTM and other parameters: refused, not converted without them
    class TreeModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 3)
            self.ioux, self.iouh, self.fx, self.fh = nn.Linear(3, 12), nn.Linear(4, 12), nn.Linear(3, 4), nn.Linear(4, 4)
            self.drop = nn.Dropout(0.1)

    with pytest.raises(TypeError, match="other modules with parameters \\(emb\\)"):
        from_torch_module(TreeModel())
    # only parameter-free extras (a dropout) beside the Tree-LSTM: converts
    tm = nn.Module()
    tm.ioux, tm.iouh, tm.fx, tm.fh, tm.drop = nn.Linear(3, 12), nn.Linear(4, 12), nn.Linear(3, 4), nn.Linear(4, 4), nn.Dropout()
    assert type(from_torch_module(tm)).__name__ == "ChildSumTreeLSTM"
    # a torch Sequential's state dict loads into the same fastrnn Sequential
    tl = nn.Sequential(nn.Embedding(9, 3), nn.GRU(3, 5), nn.Linear(5, 9))
    fm = Sequential(Embedding(9, 3), fastrnn.GRU(3, 5), Linear(5, 9)).load_state_dict(tl.state_dict())
    np.testing.assert_array_equal(fm[1].state_dict()["weight_hh_l0"], tl[1].weight_hh_l0.detach().numpy())


# ------------------------------------------------------------------------------ generation
def _torch_lm(torch, cell, V, E, H, layers, batch_first, seed=0):
    torch.manual_seed(seed)
    nn = torch.nn
    return (nn.Embedding(V, E), getattr(nn, cell)(E, H, num_layers=layers, batch_first=batch_first),
            nn.Linear(H, V))


def _torch_greedy(torch, mods, ids, n):
    emb, rnn, fc = mods
    bf = rnn.batch_first
    x = torch.from_numpy(ids)
    with torch.no_grad():
        out, st = rnn(emb(x if bf else x.T))
        logits = fc(out[:, -1] if bf else out[-1])
        toks = []
        for _ in range(n):
            tok = logits.argmax(-1)
            toks.append(tok)
            out, st = rnn(emb(tok[:, None] if bf else tok[None]), st)
            logits = fc(out[:, -1] if bf else out[-1])
    return np.concatenate([ids, torch.stack(toks, 1).numpy()], axis=1)


@pytest.mark.parametrize("cell,batch_first", [("LSTM", False), ("LSTM", True), ("GRU", False), ("RNN", True)])
def test_greedy_generation_matches_torch(cell, batch_first):
    torch = pytest.importorskip("torch")
    from fastrnn.models import from_torch_module
    V, E, H = 37, 8, 24
    mods = _torch_lm(torch, cell, V, E, H, 2, batch_first)
    m = from_torch_module(torch.nn.ModuleList(list(mods)))
    ids = np.random.default_rng(0).integers(0, V, (4, 6))
    got = m.generate(ids, 40, temperature=0)
    want = _torch_greedy(torch, mods, ids, 40)
    assert got.shape == (4, 46) and got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(m.generate(ids[1], 40, temperature=0), want[1])


def test_generation_sampling():
    m = lm(V=23)
    ids = np.array([[1, 2, 3], [4, 5, 6]])
    a = m.generate(ids, 30, temperature=1.0, seed=7)
    b = m.generate(ids, 30, temperature=1.0, seed=7)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[:, :3], ids)
    assert a.min() >= 0 and a.max() < 23
    c = m.generate(ids, 30, temperature=1.0, seed=8)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(m.generate(ids, 20, top_k=1, seed=3), m.generate(ids, 20, temperature=0))
    np.testing.assert_array_equal(m.generate(ids, 20, temperature=1e-4, seed=3), m.generate(ids, 20, temperature=0))
    # a temperature so small that logits / T overflow: still the greedy limit (token 0 before)
    np.testing.assert_array_equal(m.generate(ids, 20, temperature=1e-320, seed=3), m.generate(ids, 20, temperature=0))
    # top_k restricts the choice to the k most likely tokens at every step
    k = 3
    out = m.generate(ids, 25, top_k=k, seed=1)
    logits, _ = m(out.T)
    for t in range(3, 28):
        prev = logits[t - 1]
        allowed = np.argsort(-prev, axis=-1)[:, :k]
        assert all(out[b, t] in allowed[b] for b in range(2))
    # the sampling distribution follows softmax(logits / T): one step, many draws
    one = np.full((4000, 1), 5)
    draws = m.generate(one, 1, temperature=1.0, seed=0)[:, 1]
    lg, _ = m(np.array([[5]]))
    p = np.exp(lg[0, 0] - lg[0, 0].max())
    p /= p.sum()
    freq = np.bincount(draws, minlength=23) / len(draws)
    assert np.abs(freq - p).max() < 0.03
    # top_k keeps exactly k candidates even where scores tie at the k-th (it kept all tied)
    from fastrnn.models import _next_token
    tied = np.array([[2.0, 1.0, 2.0, 1.0, 0.0, -1.0]] * 3000)
    for k, allowed in ((1, {0, 2}), (3, {0, 1, 2, 3})):
        got = _next_token(tied, 1.0, k, np.random.default_rng(0))
        assert len(set(got.tolist())) == k and set(got.tolist()) <= allowed
    # a final Softmax is undone: same greedy result
    ms = Sequential(*m.modules, "softmax")
    np.testing.assert_array_equal(ms.generate(ids, 10, temperature=0), m.generate(ids, 10, temperature=0))
    assert m.generate(ids, 0).shape == (2, 3)


def test_generation_errors():
    m = lm()
    with pytest.raises(ValueError, match="temperature"):
        m.generate([[1]], 3, temperature=-1)
    with pytest.raises(TypeError):
        m.generate([[1.0]], 3)
    with pytest.raises(ValueError, match="at least one"):
        m.generate(np.zeros((2, 0), np.int64), 3)
    with pytest.raises(ValueError, match="language model"):
        Sequential(fastrnn.LSTM(2, 3), Linear(3, 2)).generate([[1]], 2)
    with pytest.raises(ValueError, match="bidirectional"):
        Sequential(Embedding(5, 2), fastrnn.LSTM(2, 3, bidirectional=True), Linear(6, 5)).generate([[1]], 2)
    with pytest.raises(IndexError):
        m.generate([[99]], 2)
    # an output that does not score every token id: said before any token is drawn
    wide = Sequential(Embedding(3, 4, seed=0), fastrnn.LSTM(4, 8, batch_first=True, seed=0), Linear(8, 50, seed=0))
    with pytest.raises(ValueError, match="50 values per step.*3 token ids"):
        wide.generate([[1, 2]], 20, seed=0)
    # NaN / +inf scores: refused, not turned into token 0 or V-1
    for bad in (np.nan, np.inf):
        sd = m.state_dict()
        sd["2.bias"][4] = bad
        broken = lm().load_state_dict(sd)
        for kw in ({"temperature": 0}, {"seed": 0}, {"top_k": 3, "seed": 0}):
            with pytest.raises(ValueError, match="sequence 0 for new token 0 hold NaN or \\+inf"):
                broken.generate([[1, 2]], 3, **kw)


# ------------------------------------------------------------------------------ forecasting
@pytest.mark.parametrize("batch_first", [False, True])
def test_forecast_matches_torch_loop(batch_first):
    torch = pytest.importorskip("torch")
    from fastrnn.models import from_torch_module
    nn = torch.nn
    torch.manual_seed(0)
    F, H = 2, 16
    lstm, fc = nn.LSTM(F, H, num_layers=2, batch_first=batch_first), nn.Linear(H, F)
    m = Sequential(from_torch_module(lstm), Select(-1), from_torch_module(fc))
    series = np.random.default_rng(0).standard_normal((3, 20, F)).astype(np.float32)
    horizon = 15
    with torch.no_grad():
        x = torch.from_numpy(series if batch_first else series.transpose(1, 0, 2).copy())
        out, st = lstm(x)
        y = fc(out[:, -1] if batch_first else out[-1])
        preds = [y]
        for _ in range(horizon - 1):
            out, st = lstm(y[:, None] if batch_first else y[None], st)
            y = fc(out[:, -1] if batch_first else out[-1])
            preds.append(y)
    want = torch.stack(preds, 1).numpy()
    got = m.forecast(series, horizon)
    assert got.shape == (3, horizon, F)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(m.forecast(series[1], horizon), want[1], atol=1e-5)


def test_forecast_forms_and_errors():
    m = Sequential(fastrnn.GRU(1, 8, seed=0), "last", Linear(8, 1, seed=0))
    s = np.sin(np.arange(30) / 3).astype(np.float32)
    a = m.forecast(s, 7)
    assert a.shape == (7,)
    np.testing.assert_allclose(m.forecast(s[:, None], 7)[:, 0], a, atol=1e-6)
    np.testing.assert_allclose(m.forecast(s[None, :, None], 7)[0, :, 0], a, atol=1e-6)
    # the first prediction is the model's output on the series
    np.testing.assert_allclose(a[0], m(s[:, None])[0][0], atol=1e-6)
    # feeding the prediction back by hand gives the same path
    y, st = m(s[:, None, None])
    path = [y[0, 0]]
    for _ in range(6):
        y, st = m(y[None], st)
        path.append(y[0, 0])
    np.testing.assert_allclose(a, path, atol=1e-5)
    # without Select the last step's output is used
    m2 = Sequential(*[x for x in m if not isinstance(x, Select)])
    np.testing.assert_allclose(m2.forecast(s, 7), a, atol=1e-6)
    with pytest.raises(ValueError, match="map 1 features"):
        Sequential(fastrnn.GRU(1, 8), "last", Linear(8, 2)).forecast(s, 3)
    with pytest.raises(ValueError, match="horizon|>= 1"):
        m.forecast(s, 0)
    with pytest.raises(ValueError):
        m.forecast(np.zeros((1, 2, 3, 4), np.float32), 2)
    with pytest.raises(ValueError, match="Embedding"):
        lm().forecast(s, 2)
