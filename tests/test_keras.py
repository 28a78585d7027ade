"""Keras 3 -> fastrnn conversion (fastrnn/_keras.py, issue 4).

Tests that need Keras take the module-scoped ``keras`` fixture (skipped when Keras is missing);
Keras runs on the torch backend (KERAS_BACKEND=torch unless already set).  The file-format tests
that do not need Keras build Keras-3-layout archives with h5py + zipfile and check against a numpy
transcription of the Keras cells.
"""

import io
import json
import os
import subprocess
import sys
import zipfile

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest

import fastrnn
from fastrnn._keras import KerasRecurrent, from_keras

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras/torch internals

TOL = 1e-5
B, T, I, H = 3, 7, 5, 4
ACTS = ["tanh", "sigmoid", "relu", "linear", "hard_sigmoid", "elu", "softsign", "softplus",
        "leaky_relu"]


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


def _h5py():
    return pytest.importorskip("h5py")


def _np(keras, y):
    if isinstance(y, (list, tuple)):
        return [_np(keras, t) for t in y]
    return np.asarray(keras.ops.convert_to_numpy(y), dtype=np.float32)


def _x(seed=0, b=B, t=T, i=I):
    return np.random.default_rng(seed).standard_normal((b, t, i)).astype(np.float32)


def _randomize(layer, seed=0, scale=0.5):
    """Random weights including biases (Keras initialises biases to 0, which would hide
    bias-layout mistakes)."""
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.uniform(-scale, scale, w.shape).astype(np.float32)
                       for w in layer.get_weights()])
    return layer


def _built(keras, layer, seed=0, i=I):
    layer(_x(seed, 1, 2, i))  # build
    return _randomize(layer, seed + 1)


def _maxdiff(a, b):
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b)
        return max(_maxdiff(p, q) for p, q in zip(a, b))
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.float64) - b).max()) if a.size else 0.0


def _check_layer(keras, layer, x=None, seed=0):
    x = _x(seed) if x is None else x
    ref = _np(keras, layer(x))
    conv = from_keras(layer)
    assert isinstance(conv, KerasRecurrent)
    out, _ = conv(x)
    if isinstance(ref, list):
        assert isinstance(out, list)
    else:
        assert out.dtype == np.float32
    assert _maxdiff(ref, out) <= TOL
    return conv


# ------------------------------------------------------------------------------------------------
# Layer types x go_backwards x use_bias x reset_after
# ------------------------------------------------------------------------------------------------

VARIANTS = []
for _cls in ("LSTM", "GRU", "SimpleRNN"):
    for _gb in (False, True):
        for _bias in (True, False):
            for _ra in ((True, False) if _cls == "GRU" else (None,)):
                VARIANTS.append((_cls, _gb, _bias, _ra))


@pytest.mark.parametrize("cls,go_backwards,use_bias,reset_after", VARIANTS)
def test_layer_variants(keras, cls, go_backwards, use_bias, reset_after):
    kw = dict(return_sequences=True, go_backwards=go_backwards, use_bias=use_bias)
    if reset_after is not None:
        kw["reset_after"] = reset_after
    layer = _built(keras, getattr(keras.layers, cls)(H, **kw))
    conv = _check_layer(keras, layer)
    assert conv.go_backwards == go_backwards and conv.class_name == cls
    assert conv.config["config"]["name"] == layer.name
    sd = conv.layer.state_dict()
    assert ("bias_ih_l0" in sd) == use_bias
    if cls == "GRU":
        assert conv.layer.config()["linear_before_reset"] == reset_after


def test_gru_gate_order_and_bias_layout(keras):
    """Explicit torch-layout check of the converted GRU(reset_after=True) parameters."""
    layer = _built(keras, keras.layers.GRU(H, return_sequences=True))
    k, rk, b = layer.get_weights()
    sd = from_keras(layer).layer.state_dict()

    def perm(a):  # Keras (z, r, h) -> torch (r, z, n) along axis 0
        return np.concatenate([a[H:2 * H], a[:H], a[2 * H:]])

    np.testing.assert_array_equal(sd["weight_ih_l0"], perm(k.T))
    np.testing.assert_array_equal(sd["weight_hh_l0"], perm(rk.T))
    np.testing.assert_array_equal(sd["bias_ih_l0"], perm(b[0]))
    np.testing.assert_array_equal(sd["bias_hh_l0"], perm(b[1]))


def test_lstm_layout(keras):
    layer = _built(keras, keras.layers.LSTM(H, return_sequences=True))
    k, rk, b = layer.get_weights()
    sd = from_keras(layer).layer.state_dict()
    np.testing.assert_array_equal(sd["weight_ih_l0"], k.T)
    np.testing.assert_array_equal(sd["weight_hh_l0"], rk.T)
    np.testing.assert_array_equal(sd["bias_ih_l0"], b)
    np.testing.assert_array_equal(sd["bias_hh_l0"], np.zeros_like(b))


def test_go_backwards_output_is_time_reversed(keras):
    """Keras 3 go_backwards + return_sequences returns outputs in processing order (reversed)."""
    fwd = _built(keras, keras.layers.GRU(H, return_sequences=True))
    bwd = keras.layers.GRU(H, return_sequences=True, go_backwards=True)
    bwd(_x(0, 1, 2))
    bwd.set_weights(fwd.get_weights())
    x = _x(3)
    y_b = _np(keras, bwd(x))
    y_f_on_reversed = _np(keras, fwd(x[:, ::-1].copy()))
    assert _maxdiff(y_b, y_f_on_reversed) <= TOL
    assert _maxdiff(from_keras(bwd)(x)[0], y_b) <= TOL


# ------------------------------------------------------------------------------------------------
# Activations
# ------------------------------------------------------------------------------------------------

ACT_CASES = ([("LSTM", a, r) for r in ("sigmoid", "hard_sigmoid") for a in ACTS]
             + [("GRU", a, r) for r in ("sigmoid", "hard_sigmoid") for a in ACTS]
             + [(c, "tanh", r) for c in ("LSTM", "GRU") for r in ("tanh", "relu", "linear", "elu",
                                                                   "softsign", "softplus")]
             + [("SimpleRNN", a, None) for a in ACTS])


@pytest.mark.parametrize("cls,act,rec_act", ACT_CASES)
def test_activations(keras, cls, act, rec_act):
    kw = dict(return_sequences=True, activation=act)
    if rec_act is not None:
        kw["recurrent_activation"] = rec_act
    layer = _built(keras, getattr(keras.layers, cls)(H, **kw))
    _check_layer(keras, layer, seed=1)


def test_hard_sigmoid_saturates(keras):
    """Large inputs push hard_sigmoid into both saturated regions (x <= -3, x >= 3)."""
    layer = _built(keras, keras.layers.LSTM(H, return_sequences=True,
                                            recurrent_activation="hard_sigmoid",
                                            activation="hard_sigmoid"))
    _check_layer(keras, layer, x=_x(5) * 8)


def test_activation_callables(keras):
    layer = _built(keras, keras.layers.GRU(H, return_sequences=True,
                                           activation=keras.activations.relu,
                                           recurrent_activation=keras.activations.hard_sigmoid))
    _check_layer(keras, layer)


@pytest.mark.parametrize("act", ["selu", "gelu", "silu", "exponential"])
def test_unsupported_activation_live(keras, act):
    layer = _built(keras, keras.layers.SimpleRNN(H, activation=act, return_sequences=True))
    with pytest.raises(ValueError, match=act):
        from_keras(layer)


def test_unsupported_recurrent_activation_live(keras):
    layer = _built(keras, keras.layers.LSTM(H, recurrent_activation="hard_silu"))
    with pytest.raises(ValueError, match="hard_silu"):
        from_keras(layer)


def test_unsupported_custom_activation(keras):
    def my_act(x):
        return x * 0.5
    layer = _built(keras, keras.layers.GRU(H, activation=my_act, return_sequences=True))
    with pytest.raises(ValueError, match="my_act"):
        from_keras(layer)


# ------------------------------------------------------------------------------------------------
# Bidirectional
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("merge_mode", ["concat", "sum", "ave", "mul", None])
@pytest.mark.parametrize("cls", ["LSTM", "GRU", "SimpleRNN"])
def test_bidirectional(keras, cls, merge_mode):
    layer = keras.layers.Bidirectional(getattr(keras.layers, cls)(H, return_sequences=True),
                                       merge_mode=merge_mode)
    layer = _built(keras, layer)
    conv = _check_layer(keras, layer)
    assert conv.bidirectional and conv.fused and conv.merge_mode == merge_mode
    assert conv.layer.config()["bidirectional"]


def test_bidirectional_gru_reset_before_activations(keras):
    inner = keras.layers.GRU(H, return_sequences=True, reset_after=False, activation="relu",
                             recurrent_activation="hard_sigmoid", use_bias=True)
    _check_layer(keras, _built(keras, keras.layers.Bidirectional(inner, merge_mode="ave")))


@pytest.mark.parametrize("merge_mode", ["concat", "mul", None])
def test_bidirectional_custom_backward_layer(keras, merge_mode):
    """Different backward layer (type, size, activations): two fastrnn layers, not fused."""
    layer = keras.layers.Bidirectional(
        keras.layers.GRU(H, return_sequences=True),
        backward_layer=keras.layers.LSTM(H, return_sequences=True, go_backwards=True,
                                         use_bias=False, activation="softsign"),
        merge_mode=merge_mode)
    conv = _check_layer(keras, _built(keras, layer))
    assert not conv.fused and isinstance(conv.layer, tuple) and len(conv.layer) == 2


def test_bidirectional_swapped_directions(keras):
    """Forward sub-layer with go_backwards=True, backward one with go_backwards=False."""
    layer = keras.layers.Bidirectional(
        keras.layers.SimpleRNN(H, return_sequences=True, go_backwards=True),
        backward_layer=keras.layers.SimpleRNN(H, return_sequences=True, go_backwards=False),
        merge_mode="sum")
    _check_layer(keras, _built(keras, layer))


def test_rnn_wrapping_cells(keras):
    for cell, gb in ((keras.layers.LSTMCell(H, recurrent_activation="hard_sigmoid"), False),
                     (keras.layers.GRUCell(H, reset_after=False), True),
                     (keras.layers.SimpleRNNCell(H, activation="relu"), True)):
        layer = _built(keras, keras.layers.RNN(cell, return_sequences=True, go_backwards=gb))
        _check_layer(keras, layer)
    bi = keras.layers.Bidirectional(keras.layers.RNN(keras.layers.GRUCell(H),
                                                     return_sequences=True))
    _check_layer(keras, _built(keras, bi))


# ------------------------------------------------------------------------------------------------
# States, hx, lengths (masks), unbatched input
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_state_and_initial_state(keras, cls, go_backwards):
    layer = _built(keras, getattr(keras.layers, cls)(H, return_sequences=True, return_state=True,
                                                     go_backwards=go_backwards))
    x = _x(2)
    rng = np.random.default_rng(9)
    n_states = 2 if cls == "LSTM" else 1
    init = [rng.uniform(-1, 1, (B, H)).astype(np.float32) for _ in range(n_states)]
    conv = from_keras(layer)
    for use_init in (False, True):
        ref = _np(keras, layer(x, initial_state=init if use_init else None))
        hx = None
        if use_init:
            hx = (init[0][None], init[1][None]) if cls == "LSTM" else init[0][None]
        out, state = conv(x, hx)
        assert _maxdiff(ref[0], out) <= TOL
        if cls == "LSTM":
            assert _maxdiff(ref[1], state[0][0]) <= TOL and _maxdiff(ref[2], state[1][0]) <= TOL
        else:
            assert _maxdiff(ref[1], state[0]) <= TOL


def test_bidirectional_state(keras):
    layer = _built(keras, keras.layers.Bidirectional(
        keras.layers.LSTM(H, return_sequences=True, return_state=True), merge_mode="sum"))
    x = _x(4)
    y, hf, cf, hb, cb = _np(keras, layer(x))
    out, (h, c) = from_keras(layer)(x)
    assert _maxdiff(y, out) <= TOL
    assert _maxdiff(np.stack([hf, hb]), h) <= TOL and _maxdiff(np.stack([cf, cb]), c) <= TOL


KERAS_CALL_CASES = [
    ("LSTM", dict(return_sequences=False, return_state=True, go_backwards=True)),
    ("GRU", dict(return_sequences=False, return_state=False)),
    ("SimpleRNN", dict(return_sequences=True, return_state=True)),
    ("BiLSTM", dict(return_sequences=False, return_state=True, merge_mode="concat")),
    ("BiGRU", dict(return_sequences=False, return_state=False, merge_mode=None)),
    ("BiGRU", dict(return_sequences=True, return_state=True, merge_mode="ave")),
    ("BiMixed", dict(return_sequences=False, return_state=True, merge_mode="sum")),
    ("BiMixed", dict(return_sequences=False, return_state=False, merge_mode=None)),
]


@pytest.mark.parametrize("cls,kw", KERAS_CALL_CASES)
def test_keras_call_matches_layer_output_structure(keras, cls, kw):
    """keras_call(x) reproduces the Keras layer's own return_sequences / return_state output."""
    L = keras.layers
    kw = dict(kw)
    mm = kw.pop("merge_mode", "concat")
    if cls == "BiLSTM":
        layer = L.Bidirectional(L.LSTM(H, **kw), merge_mode=mm)
    elif cls == "BiGRU":
        layer = L.Bidirectional(L.GRU(H, **kw), merge_mode=mm)
    elif cls == "BiMixed":
        layer = L.Bidirectional(L.GRU(H, **kw), merge_mode=mm,
                                backward_layer=L.GRU(H, go_backwards=True, reset_after=False,
                                                     **kw))
    else:
        layer = getattr(L, cls)(H, **kw)
    layer = _built(keras, layer)
    x = _x(13)
    ref = _np(keras, layer(x))
    got = from_keras(layer).keras_call(x)
    if isinstance(ref, list):
        assert isinstance(got, list) and len(got) == len(ref)
    assert _maxdiff(ref, got) <= TOL


MASK_CASES = [
    ("LSTM", dict(zero_output_for_mask=True)),
    ("LSTM", dict(zero_output_for_mask=True, go_backwards=True)),
    ("GRU", dict(zero_output_for_mask=True, go_backwards=True, reset_after=False)),
    ("SimpleRNN", dict(go_backwards=True)),  # masked steps come first: zeros either way
    ("BiGRU", dict()),
    ("BiMixed", dict()),
]


@pytest.mark.parametrize("cls,kw", MASK_CASES)
def test_lengths_match_keras_masking(keras, cls, kw):
    """lengths= reproduces Keras' Masking on right-padded batches (zero_output_for_mask)."""
    L = keras.layers
    if cls == "BiGRU":
        rl = L.Bidirectional(L.GRU(H, return_sequences=True), merge_mode="concat")
    elif cls == "BiMixed":
        rl = L.Bidirectional(L.GRU(H, return_sequences=True),
                             backward_layer=L.SimpleRNN(2, return_sequences=True,
                                                        go_backwards=True))
    else:
        rl = getattr(L, cls)(H, return_sequences=True, **kw)
    inp = keras.Input((T, I))
    model = keras.Model(inp, rl(L.Masking(0.0)(inp)))
    _randomize(rl, 3)
    x = _x(6, b=4)
    lengths = [T, 3, 1, 0]
    for b, n in enumerate(lengths):
        x[b, n:] = 0.0
    ref = _np(keras, model(x))
    out, _ = from_keras(rl)(x, lengths=lengths)
    assert _maxdiff(ref, out) <= TOL


def test_unbatched_input(keras):
    layer = _built(keras, keras.layers.GRU(H, return_sequences=True, go_backwards=True))
    x = _x(7)
    ref = _np(keras, layer(x))
    conv = from_keras(layer)
    assert _maxdiff(ref[1], conv(x[1])[0]) <= TOL


def test_unbuilt_and_unsupported_objects(keras):
    with pytest.raises(ValueError, match="not built"):
        from_keras(keras.layers.LSTM(3))
    with pytest.raises(ValueError):
        from_keras(_built(keras, keras.layers.Dense(3)))
    with pytest.raises(ValueError):
        from_keras(object())
    with pytest.raises(ValueError, match="config="):
        from_keras(_built(keras, keras.layers.LSTM(3)), config={})


# ------------------------------------------------------------------------------------------------
# Files: .keras archives and .weights.h5 + config
# ------------------------------------------------------------------------------------------------

def _build_model(keras):
    """A functional model with every supported recurrent kind, incl. a nested Sequential."""
    L = keras.layers
    inner = keras.Sequential([
        keras.Input((T, 8)),
        L.GRU(5, return_sequences=True, reset_after=False, name="inner_gru"),
        L.RNN(L.LSTMCell(3, recurrent_activation="hard_sigmoid"), return_sequences=True,
              name="inner_rnn"),
    ], name="inner")
    inp = keras.Input((T, I))
    h = L.LSTM(8, return_sequences=True, name="enc_lstm")(inp)       # saved as layers/lstm
    h = inner(h)
    h = L.Bidirectional(L.SimpleRNN(4, return_sequences=True, activation="relu"),
                        merge_mode="sum", name="bi_rnn")(h)
    h = L.Dense(6)(h)
    h = L.GRU(4, return_sequences=True, go_backwards=True, use_bias=False,
              activation="softsign", name="back_gru")(h)
    h = L.Bidirectional(L.LSTM(3, return_sequences=True),
                        backward_layer=L.GRU(2, return_sequences=True, go_backwards=True),
                        merge_mode=None, name="bi_mixed")(h)
    model = keras.Model(inp, h)
    for i, layer in enumerate(_recurrent_layers(keras, model)):
        _randomize(layer, 10 + i)
    return model


def _recurrent_layers(keras, model):
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_recurrent_layers(keras, layer))
        elif isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)):
            out.append(layer)
    return out


@pytest.fixture(scope="module")
def saved_model(keras, tmp_path_factory):
    d = tmp_path_factory.mktemp("keras_model")
    model = _build_model(keras)
    layers = _recurrent_layers(keras, model)
    inputs, refs = [], []
    for i, layer in enumerate(layers):
        x = _x(20 + i, i=layer.input.shape[-1])
        inputs.append(x)
        refs.append(_np(keras, layer(x)))
    path = d / "model.keras"
    model.save(path)
    wpath = d / "model.weights.h5"
    model.save_weights(wpath)
    return dict(model=model, layers=layers, inputs=inputs, refs=refs, path=path, wpath=wpath,
                dir=d)


def _check_converted(saved, conv):
    assert [c.name for c in conv] == [layer.name for layer in saved["layers"]]
    for c, x, ref in zip(conv, saved["inputs"], saved["refs"]):
        assert _maxdiff(ref, c(x)[0]) <= TOL, c


def test_keras_file(saved_model):
    conv = from_keras(saved_model["path"])
    assert isinstance(conv, list) and len(conv) == 6
    _check_converted(saved_model, conv)
    assert from_keras(str(saved_model["path"]))[0].name == "enc_lstm"
    assert [c.class_name for c in conv] == ["LSTM", "GRU", "RNN", "Bidirectional", "GRU",
                                            "Bidirectional"]


def test_live_model(keras, saved_model):
    _check_converted(saved_model, from_keras(saved_model["model"]))


def test_keras_file_reloaded_by_keras(keras, saved_model):
    model = keras.saving.load_model(saved_model["path"])
    _check_converted(saved_model, from_keras(model))


def test_weights_h5_with_model_config(saved_model):
    model = saved_model["model"]
    _check_converted(saved_model, from_keras(saved_model["wpath"], config=model.get_config()))
    with zipfile.ZipFile(saved_model["path"]) as zf:
        cfg_json = zf.read("config.json").decode()
    _check_converted(saved_model, from_keras(saved_model["wpath"], config=json.loads(cfg_json)))
    _check_converted(saved_model, from_keras(saved_model["wpath"], config=cfg_json))


def test_weights_h5_with_layer_configs(keras, saved_model):
    layers, wpath = saved_model["layers"], saved_model["wpath"]
    # a single layer's get_config() -> one wrapper
    for i in (0, 3, 4, 5):
        c = from_keras(wpath, config=layers[i].get_config())
        assert isinstance(c, KerasRecurrent) and c.name == layers[i].name
        assert _maxdiff(saved_model["refs"][i], c(saved_model["inputs"][i])[0]) <= TOL
    # serialized form {"class_name", "config"}
    c = from_keras(wpath, config=keras.saving.serialize_keras_object(layers[4]))
    assert _maxdiff(saved_model["refs"][4], c(saved_model["inputs"][4])[0]) <= TOL
    # list of top-level layer configs -> list
    top = [0, 3, 4, 5]
    conv = from_keras(wpath, config=[layers[i].get_config() for i in top])
    assert [c.name for c in conv] == [layers[i].name for i in top]
    for c, i in zip(conv, top):
        assert _maxdiff(saved_model["refs"][i], c(saved_model["inputs"][i])[0]) <= TOL


def test_weights_h5_sequential_single_layer(keras, tmp_path):
    layer = keras.layers.GRU(H, return_sequences=True, reset_after=False,
                             recurrent_activation="hard_sigmoid")
    model = keras.Sequential([keras.Input((T, I)), layer])
    _randomize(layer, 4)
    x = _x(8)
    ref = _np(keras, layer(x))
    p = tmp_path / "seq.weights.h5"
    model.save_weights(p)
    for cfg in (layer.get_config(), model.get_config(), [layer.get_config()]):
        c = from_keras(p, config=cfg)
        c = c[0] if isinstance(c, list) else c
        assert _maxdiff(ref, c(x)[0]) <= TOL
    bad = dict(layer.get_config(), units=H + 1)
    with pytest.raises(ValueError, match="seq.weights.h5"):
        from_keras(p, config=bad)
    with pytest.raises(ValueError, match="config="):
        from_keras(p)


def test_legacy_h5_model(keras, saved_model):
    """model.save("m.h5"): the legacy HDF5 format, architecture stored in the file."""
    path = saved_model["dir"] / "legacy.h5"
    saved_model["model"].save(path)
    _check_converted(saved_model, from_keras(path))
    _check_converted(saved_model, from_keras(str(path), config=saved_model["model"].get_config()))


def _tf_keras2_weights(src, dst):
    """A tf.keras-2-style legacy weights-only file (save_weights("w.h5")) from a legacy model
    file: layer groups at the root, weight names without the model prefix and with ":0"."""
    h5py = _h5py()
    with h5py.File(src, "r") as fin, h5py.File(dst, "w") as fout:
        mw = fin["model_weights"]
        fout.attrs["layer_names"] = mw.attrs["layer_names"]
        for lname in mw.attrs["layer_names"]:
            lname = lname.decode() if isinstance(lname, bytes) else lname
            g, out = mw[lname], fout.create_group(lname)
            names = []
            for n in g.attrs["weight_names"]:
                n = n.decode() if isinstance(n, bytes) else n
                # a nested model's variables are named without its own prefix in tf.keras 2
                short = (n.split("/", 1)[1] if lname == "inner" else n) + ":0"
                out.create_dataset(short, data=g[n][()])
                names.append(short.encode())
            out.attrs["weight_names"] = np.array(names, dtype=object) if names else \
                np.zeros(0, dtype="S1")


def test_legacy_h5_weights_only(keras, saved_model, tmp_path):
    path = saved_model["dir"] / "legacy_w.h5"
    saved_model["model"].save(path)
    wpath = tmp_path / "tf2.h5"
    _tf_keras2_weights(path, wpath)
    model, layers = saved_model["model"], saved_model["layers"]
    _check_converted(saved_model, from_keras(wpath, config=model.get_config()))
    c = from_keras(wpath, config=layers[5].get_config())      # one top-level layer
    assert isinstance(c, KerasRecurrent) and c.name == "bi_mixed"
    assert _maxdiff(saved_model["refs"][5], c(saved_model["inputs"][5])[0]) <= TOL
    with pytest.raises(ValueError, match="legacy HDF5 weights file holds no architecture"):
        from_keras(wpath)
    # a listed weight that is missing, and a Bidirectional short of weights: named errors
    h5py = _h5py()
    with h5py.File(wpath, "a") as f:
        del f["enc_lstm"]["enc_lstm/lstm_cell/bias:0"]
        f["bi_rnn"].attrs["weight_names"] = f["bi_rnn"].attrs["weight_names"][:5]
    with pytest.raises(ValueError, match="tf2.h5.*missing"):
        from_keras(wpath, config=layers[0].get_config())
    with pytest.raises(ValueError, match="tf2.h5.*'bi_rnn'.*5 weights"):
        from_keras(wpath, config=layers[3].get_config())


def test_keras_file_without_keras_tf_torch(saved_model, tmp_path):
    """Load the .keras file in a subprocess where keras, tensorflow and torch cannot be imported."""
    xin = tmp_path / "x.npz"
    np.savez(xin, *saved_model["inputs"])
    res = tmp_path / "y.npz"
    code = r"""
import sys, importlib.abc
BLOCKED = ("keras", "tensorflow", "tf_keras", "torch", "jax")
class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked for this test: " + name)
        return None
sys.meta_path.insert(0, _Blocker())
for _m in BLOCKED:
    sys.modules[_m] = None
import numpy as np
from fastrnn._keras import from_keras
conv = from_keras(sys.argv[1])
xs = np.load(sys.argv[2])
outs = {}
for i, c in enumerate(conv):
    o = c(xs["arr_%d" % i])[0]
    if isinstance(o, list):
        for j, t in enumerate(o):
            outs["%d_%d" % (i, j)] = t
    else:
        outs[str(i)] = o
np.savez(sys.argv[3], **outs)
leaked = [m for m, v in sys.modules.items() if v is not None and m.split(".")[0] in BLOCKED]
assert not leaked, leaked
print("names", ",".join(c.name for c in conv))
"""
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(fastrnn.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_root + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("KERAS_BACKEND", None)
    p = subprocess.run([sys.executable, "-c", code, str(saved_model["path"]), str(xin), str(res)],
                       capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120)
    assert p.returncode == 0, p.stderr
    assert "names enc_lstm,inner_gru,inner_rnn,bi_rnn,back_gru,bi_mixed" in p.stdout
    got = np.load(res)
    for i, ref in enumerate(saved_model["refs"]):
        if isinstance(ref, list):
            for j, r in enumerate(ref):
                assert _maxdiff(r, got[f"{i}_{j}"]) <= TOL
        else:
            assert _maxdiff(ref, got[str(i)]) <= TOL


# ------------------------------------------------------------------------------------------------
# Corrupt files
# ------------------------------------------------------------------------------------------------

def _valid_archive_bytes(tmp_path):
    """A small valid Keras-3-layout archive, written with h5py (no Keras needed)."""
    p = tmp_path / "ok.keras"
    _write_archive(p, _synthetic_layers(np.random.default_rng(0)))
    return p.read_bytes()


def test_corrupt_keras_files(tmp_path):
    _h5py()
    good = _valid_archive_bytes(tmp_path)
    assert len(from_keras(tmp_path / "ok.keras")) == 3

    cases = {}
    cases["truncated.keras"] = good[: len(good) // 2]
    cases["garbage.keras"] = os.urandom(2000)
    cases["empty.keras"] = b""
    # flipped bytes inside the stored weights member: CRC error on read
    buf = bytearray(good)
    i = buf.find(b"\x89HDF")
    with zipfile.ZipFile(io.BytesIO(good)) as zf:
        size = zf.getinfo("model.weights.h5").file_size
    assert i > 0 and size > 200
    for j in range(i + size // 2, i + size // 2 + 32):
        buf[j] ^= 0xFF
    cases["badcrc.keras"] = bytes(buf)
    # a zip without config.json
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as zf:
        zf.writestr("something.txt", "x")
    cases["noconfig.keras"] = b.getvalue()
    # a zip whose weights member is not HDF5
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as zf, zipfile.ZipFile(io.BytesIO(good)) as src:
        zf.writestr("config.json", src.read("config.json"))
        zf.writestr("model.weights.h5", b"not an hdf5 file" * 10)
    cases["badh5.keras"] = b.getvalue()
    # invalid json
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as zf, zipfile.ZipFile(io.BytesIO(good)) as src:
        zf.writestr("config.json", "{not json")
        zf.writestr("model.weights.h5", src.read("model.weights.h5"))
    cases["badjson.keras"] = b.getvalue()

    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            from_keras(p)
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            from_keras(str(p))

    bad_h5 = tmp_path / "bad.weights.h5"
    bad_h5.write_bytes(good[:100])
    with pytest.raises(ValueError, match=r"bad\.weights\.h5"):
        from_keras(bad_h5, config={"class_name": "LSTM", "config": {"name": "x", "units": 2}})
    with pytest.raises(FileNotFoundError):
        from_keras(tmp_path / "missing.keras")


# ------------------------------------------------------------------------------------------------
# Keras-free checks: hand-written Keras-3-layout files vs a numpy transcription of Keras' cells
# ------------------------------------------------------------------------------------------------

def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


_NP_ACTS = {"tanh": np.tanh, "sigmoid": _sig,
            "hard_sigmoid": lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
            "relu": lambda x: np.maximum(x, 0.0)}


def _keras_ref(kind, cfg, weights, x):
    """Keras 3 cell equations, Keras weight layout, float64."""
    act, ract = _NP_ACTS[cfg.get("activation", "tanh")], _NP_ACTS[cfg.get("recurrent_activation",
                                                                           "sigmoid")]
    u = cfg["units"]
    k, rk = weights[0].astype(np.float64), weights[1].astype(np.float64)
    b = weights[2].astype(np.float64) if cfg.get("use_bias", True) else None
    xs = x[:, ::-1] if cfg.get("go_backwards") else x
    h = np.zeros((x.shape[0], u))
    c = np.zeros_like(h)
    outs = []
    for t in range(x.shape[1]):
        xt = xs[:, t].astype(np.float64)
        if kind == "LSTM":
            z = xt @ k + h @ rk + (b if b is not None else 0)
            i, f, g, o = np.split(z, 4, axis=-1)
            c = ract(f) * c + ract(i) * act(g)
            h = ract(o) * act(c)
        else:  # GRU
            ra = cfg.get("reset_after", True)
            bi = (b[0] if ra else b) if b is not None else 0
            mx = xt @ k + bi
            xz, xr, xh = np.split(mx, 3, axis=-1)
            if ra:
                mi = h @ rk + (b[1] if b is not None else 0)
                hz, hr, hh = np.split(mi, 3, axis=-1)
                z, r = ract(xz + hz), ract(xr + hr)
                cand = act(xh + r * hh)
            else:
                z = ract(xz + h @ rk[:, :u])
                r = ract(xr + h @ rk[:, u:2 * u])
                cand = act(xh + (r * h) @ rk[:, 2 * u:])
            h = z * h + (1 - z) * cand
        outs.append(h)
    return np.stack(outs, axis=1)


def _synthetic_layers(rng):
    def w(*shape):
        return rng.uniform(-0.5, 0.5, shape).astype(np.float32)
    return [
        ("LSTM", dict(name="l_a", units=3, activation="tanh", recurrent_activation="hard_sigmoid",
                      use_bias=True, go_backwards=False), [w(I, 12), w(3, 12), w(12)]),
        ("GRU", dict(name="g_a", units=4, activation="tanh", recurrent_activation="sigmoid",
                     use_bias=True, reset_after=True, go_backwards=True),
         [w(I, 12), w(4, 12), w(2, 12)]),
        ("GRU", dict(name="g_b", units=2, activation="relu", recurrent_activation="sigmoid",
                     use_bias=True, reset_after=False, go_backwards=False),
         [w(I, 6), w(2, 6), w(6)]),
    ]


def _write_archive(path, layers, weights_only=None):
    """Keras 3 layout: config.json (Sequential) + model.weights.h5 with
    layers/<snake_case class>[_n]/cell/vars/<i>."""
    h5py = _h5py()
    cfg = {"module": "keras", "class_name": "Sequential", "config": {"name": "seq", "layers": [
        {"module": "keras.layers", "class_name": "InputLayer",
         "config": {"batch_shape": [None, T, I], "name": "input"}}] + [
        {"module": "keras.layers", "class_name": cls, "config": dict(c, return_sequences=True)}
        for cls, c, _ in layers]}}
    b = io.BytesIO()
    with h5py.File(b, "w") as f:
        used = {}
        for cls, c, ws in layers:
            key = cls.lower()
            if key in used:
                used[key] += 1
                key = f"{key}_{used[key]}"
            else:
                used[key] = 0
            f.create_group(f"layers/{key}/vars").attrs["name"] = c["name"]
            g = f.create_group(f"layers/{key}/cell/vars")
            for i, a in enumerate(ws):
                g.create_dataset(str(i), data=a)
        f.create_group("vars")
    if weights_only is not None:
        weights_only.write_bytes(b.getvalue())
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
        zf.writestr("config.json", json.dumps(cfg))
        zf.writestr("model.weights.h5", b.getvalue())
    return cfg


def test_synthetic_archive_without_keras(tmp_path):
    layers = _synthetic_layers(np.random.default_rng(1))
    wpath = tmp_path / "syn.weights.h5"
    cfg = _write_archive(tmp_path / "syn.keras", layers, weights_only=wpath)
    x = _x(11)
    for conv in (from_keras(tmp_path / "syn.keras"), from_keras(wpath, config=cfg),
                 from_keras(wpath, config=[{"class_name": c, "config": d} for c, d, _ in layers])):
        assert [c.name for c in conv] == ["l_a", "g_a", "g_b"]
        for c, (kind, d, ws) in zip(conv, layers):
            assert _maxdiff(_keras_ref(kind, d, ws, x), c(x)[0]) <= TOL
    # bare get_config()-style dict (class inferred from its keys) for a single layer
    c = from_keras(wpath, config=dict(layers[2][1]))
    assert _maxdiff(_keras_ref("GRU", layers[2][1], layers[2][2], x), c(x)[0]) <= TOL


def write_legacy_h5(path, cfg, layers):
    """A legacy HDF5 model (model.save("m.h5")): the model config as an attribute, a group per
    layer listing its datasets in ``weight_names``.  ``layers``: (class, config, weights)."""
    h5py = _h5py()
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(cfg)
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = np.array([c["name"].encode() for _, c, _ in layers], dtype=object)
        for cls, c, ws in layers:
            g = mw.create_group(c["name"])
            names = [f"{c['name']}/{cls.lower()}_cell/{v}:0"
                     for v in ("kernel", "recurrent_kernel", "bias")][:len(ws)]
            for n, a in zip(names, ws):
                g.create_dataset(n, data=a)
            g.attrs["weight_names"] = np.array([n.encode() for n in names], dtype=object)


def test_synthetic_legacy_h5_without_keras(tmp_path):
    layers = _synthetic_layers(np.random.default_rng(3))
    cfg = _write_archive(tmp_path / "syn.keras", layers)
    path = tmp_path / "syn.h5"
    write_legacy_h5(path, cfg, layers)
    x = _x(12)
    conv = from_keras(path)
    assert [c.name for c in conv] == ["l_a", "g_a", "g_b"]
    for c, (kind, d, ws) in zip(conv, layers):
        assert _maxdiff(_keras_ref(kind, d, ws, x), c(x)[0]) <= TOL
    # damaged files: one ValueError naming the file and what is wrong
    h5py = _h5py()
    cases = {"badjson": lambda f: f.attrs.__setitem__("model_config", "{not json"),
             "notamodel": lambda f: f.attrs.__setitem__("model_config", "5"),
             "deepjson": lambda f: f.attrs.__setitem__("model_config", "[" * 100000 + "]" * 100000),
             "nogroup": lambda f: f["model_weights"].__delitem__("g_a"),
             "missing": lambda f: f["model_weights/l_a"].__delitem__("l_a/lstm_cell/bias:0"),
             "badshape": lambda f: f["model_weights/g_b"].attrs.__setitem__(
                 "weight_names", f["model_weights/g_b"].attrs["weight_names"][::-1])}
    for name, damage in cases.items():
        p = tmp_path / f"{name}.h5"
        write_legacy_h5(p, cfg, layers)
        with h5py.File(p, "a") as f:
            damage(f)
        with pytest.raises(ValueError, match=rf"{name}\.h5: "):
            from_keras(p)


def test_unsupported_activation_in_file(tmp_path):
    layers = _synthetic_layers(np.random.default_rng(2))
    layers[1][1]["activation"] = "gelu"
    _write_archive(tmp_path / "gelu.keras", layers)
    with pytest.raises(ValueError, match="gelu"):
        from_keras(tmp_path / "gelu.keras")


def test_exported_from_package(tmp_path):
    _h5py()
    layers = _synthetic_layers(np.random.default_rng(3))
    _write_archive(tmp_path / "pkg.keras", layers)
    x = _x(12)
    conv = fastrnn.from_keras(tmp_path / "pkg.keras")
    assert [type(c) for c in conv] == [KerasRecurrent] * 3
    for c, (kind, d, ws) in zip(conv, layers):
        assert _maxdiff(_keras_ref(kind, d, ws, x), c(x)[0]) <= TOL


def test_unsupported_recurrent_layer_is_skipped_with_warning(keras, tmp_path):
    L = keras.layers
    inp = keras.Input((T, 6, 2))
    h = L.ConvLSTM1D(2, 3, return_sequences=True, name="conv_lstm")(inp)
    h = L.Reshape((T, -1))(h)
    lstm = L.LSTM(H, return_sequences=True, name="after_conv")
    model = keras.Model(inp, lstm(h))
    _randomize(lstm, 5)
    p = tmp_path / "conv.keras"
    model.save(p)
    with pytest.warns(UserWarning, match="ConvLSTM1D"):
        conv = from_keras(p)
    assert [c.name for c in conv] == ["after_conv"]
    x = _x(14, i=lstm.input.shape[-1])
    assert _maxdiff(_np(keras, lstm(x)), conv[0](x)[0]) <= TOL
