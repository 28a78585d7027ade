"""Every bad input raises a clear error: ValueError for shape/value problems, TypeError for
dtype/kind problems (see docs/API_CONTRACT.md)."""
import re

import numpy as np
import pytest

I, H, L, B, T = 4, 6, 2, 3, 5


@pytest.fixture(scope="module")
def layers(fastrnn):
    """One layer of each cell, 2 layers, bidirectional (D=2) so states are (4, B, H)."""
    return {
        "LSTM": fastrnn.LSTM(I, H, num_layers=L, bidirectional=True, seed=0),
        "LSTMP": fastrnn.LSTM(I, H, num_layers=L, bidirectional=True, proj_size=2, seed=0),
        "GRU": fastrnn.GRU(I, H, num_layers=L, bidirectional=True, seed=0),
        "RNN": fastrnn.RNN(I, H, num_layers=L, bidirectional=True, seed=0),
    }


CELLS = ["LSTM", "LSTMP", "GRU", "RNN"]


def _x(shape=(T, B, I), dtype=np.float32):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


def _states(cell, b=B, hout=None, hid=H, n=2 * L):
    hout = hout if hout is not None else (2 if cell == "LSTMP" else H)
    h = np.zeros((n, b, hout), np.float32)
    if cell.startswith("LSTM"):
        return h, np.zeros((n, b, hid), np.float32)
    return h


def test_valid_call_works(layers):
    """Sanity: the inputs used below are valid except for the one thing each test breaks."""
    for cell, layer in layers.items():
        layer(_x(), _states(cell), [5, 1, 0])
        layer(_x((T, I)))


# --------------------------------------------------------------------------------------------
# x
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", [(I,), (1, T, B, I), (2, 1, T, B, I), ()])
def test_x_wrong_rank(layers, cell, shape):
    with pytest.raises(ValueError, match=rf"got {len(shape)}-D with shape {re.escape(str(shape))}"):
        layers[cell](np.zeros(shape, np.float32))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", [(T, B, I + 1), (T, B, I - 1), (T, B, 0), (T, I + 2), (T, B, 1)])
def test_x_wrong_feature_size(layers, cell, shape):
    with pytest.raises(ValueError, match=str(shape[-1])):
        layers[cell](np.zeros(shape, np.float32))


def test_x_feature_size_batch_first(fastrnn):
    """With batch_first the feature axis is still the last one; a time-major array whose last
    axis is not input_size must be rejected, not reinterpreted."""
    layer = fastrnn.GRU(I, H, batch_first=True, seed=0)
    layer(np.zeros((B, T, I), np.float32))
    with pytest.raises(ValueError):
        layer(np.zeros((B, I, T), np.float32))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.int8, bool, np.complex64,
                                   np.complex128, object])
def test_x_bad_dtype(layers, cell, dtype):
    x = np.ones((T, B, I)).astype(dtype)
    with pytest.raises(TypeError):
        layers[cell](x)


@pytest.mark.parametrize("cell", CELLS)
def test_x_python_ints_and_strings(layers, cell):
    with pytest.raises(TypeError):
        layers[cell]([[[1] * I] * B] * T)              # nested python ints -> int array
    with pytest.raises(TypeError):
        layers[cell](np.full((T, B, I), "a"))
    with pytest.raises(TypeError):
        layers[cell](None)


# --------------------------------------------------------------------------------------------
# states
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["GRU", "RNN"])
@pytest.mark.parametrize("shape", [
    (2 * L + 1, B, H), (2 * L - 1, B, H), (L, B, H), (2 * L, B + 1, H), (2 * L, B - 1, H),
    (2 * L, B, H + 1), (2 * L, B, H - 1), (2 * L, B * H), (2 * L, B, H, 1), (B, H), (2 * L, 1, H),
])
def test_h0_wrong_shape(layers, cell, shape):
    with pytest.raises(ValueError):
        layers[cell](_x(), np.zeros(shape, np.float32))


@pytest.mark.parametrize("cell", ["GRU", "RNN"])
def test_h0_unbatched_wrong_shape(layers, cell):
    layers[cell](_x((T, I)), np.zeros((2 * L, H), np.float32))
    for shape in [(2 * L, H + 1), (2 * L + 1, H), (2 * L, 1, H + 1), (H,)]:
        with pytest.raises(ValueError):
            layers[cell](_x((T, I)), np.zeros(shape, np.float32))


@pytest.mark.parametrize("cell", ["LSTM", "LSTMP"])
@pytest.mark.parametrize("which,shape", [
    ("h", (2 * L + 1, B, None)), ("h", (2 * L, B + 1, None)), ("h", (2 * L, B, 7)),
    ("c", (2 * L - 1, B, H)), ("c", (2 * L, B - 1, H)), ("c", (2 * L, B, H + 1)),
    ("c", (2 * L, B, H, 1)), ("h", (2 * L, B)),
])
def test_lstm_states_wrong_shape(layers, cell, which, shape):
    h, c = _states(cell)
    bad = np.zeros(tuple(h.shape[2] if s is None else s for s in shape), np.float32)
    hx = (bad, c) if which == "h" else (h, bad)
    with pytest.raises(ValueError):
        layers[cell](_x(), hx)


def test_lstm_proj_h_and_c_sizes_not_swapped(layers):
    """With proj_size, h0 has proj_size features and c0 hidden_size; the swapped pair is bad."""
    h, c = _states("LSTMP")
    layers["LSTMP"](_x(), (h, c))
    with pytest.raises(ValueError):
        layers["LSTMP"](_x(), (c, h))
    with pytest.raises(ValueError):
        layers["LSTMP"](_x(), (c, c))


@pytest.mark.parametrize("cell", ["LSTM", "LSTMP"])
def test_lstm_bare_array_state(fastrnn, layers, cell):
    h, c = _states(cell)
    with pytest.raises(TypeError):
        layers[cell](_x(), h)
    # a bare array whose first axis happens to be 2 must not be unpacked as (h0, c0)
    lstm2 = fastrnn.LSTM(I, H, num_layers=2, seed=0)
    with pytest.raises(TypeError):
        lstm2(_x(), np.zeros((2, B, H), np.float32))


@pytest.mark.parametrize("cell", ["LSTM", "LSTMP"])
def test_lstm_state_tuple_of_wrong_length(layers, cell):
    h, c = _states(cell)
    for hx in [(h,), (h, c, c), ()]:
        with pytest.raises((TypeError, ValueError)):
            layers[cell](_x(), hx)
    # two entries, one of them None: the message names which
    for hx, which in (((h, None), "c0=None"), ((None, c), "h0=None")):
        with pytest.raises(TypeError, match=which):
            layers[cell](_x(), hx)
        with pytest.raises(TypeError, match=which):
            layers[cell].step(_x()[0], hx)


@pytest.mark.parametrize("cell", ["GRU", "RNN"])
def test_tuple_state_for_gru_rnn(layers, cell):
    """(h, h) where one array is needed must be rejected, not reinterpreted."""
    h = _states(cell)
    with pytest.raises((TypeError, ValueError)):
        layers[cell](_x(), (h, h))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.complex64, object, bool])
def test_state_bad_dtype(layers, cell, dtype):
    st = _states(cell)
    if isinstance(st, tuple):
        bad = (st[0].astype(dtype), st[1])
    else:
        bad = st.astype(dtype)
    with pytest.raises(TypeError):
        layers[cell](_x(), bad)


# --------------------------------------------------------------------------------------------
# lengths
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("lengths", [[5, 5], [5, 5, 5, 5], np.zeros(0, np.int64), 5,
                                     np.array([5, 5], np.int32)])
def test_lengths_wrong_count(layers, cell, lengths):
    with pytest.raises(ValueError):
        layers[cell](_x(), None, lengths)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("lengths", [[5, 6, 1], [-1, 2, 3], [0, 0, T + 100], [2**40, 1, 1],
                                     np.array([5, 1, -2**31], np.int64)])
def test_lengths_out_of_range(layers, cell, lengths):
    with pytest.raises(ValueError):
        layers[cell](_x(), None, lengths)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("lengths", [[2.5, 1.0, 3.0], np.array([2.0, 1.0, 3.0]),
                                     np.array([1 + 0j, 2, 3]), ["2", "1", "3"],
                                     np.array([True, False, True])])
def test_lengths_non_integer(layers, cell, lengths):
    with pytest.raises(TypeError):
        layers[cell](_x(), None, lengths)


def test_lengths_with_batch_first_counts_batch(fastrnn):
    layer = fastrnn.GRU(I, H, batch_first=True, seed=0)
    x = _x((B, T, I))
    layer(x, None, [T] * B)
    with pytest.raises(ValueError):
        layer(x, None, [T] * T)        # one per time step is not one per batch entry
    with pytest.raises(ValueError):
        layer(x, None, [T + 1] * B)


# --------------------------------------------------------------------------------------------
# load_state_dict
# --------------------------------------------------------------------------------------------

def _shape_pattern(shape):
    """Regex matching a shape printed as (a, b), [a, b], (a,), a x b or torch.Size([a, b])."""
    nums = [str(s) for s in shape]
    sep = r"\s*[,x×]\s*"
    body = sep.join(nums)
    return rf"[\(\[]?\s*{body}\s*,?\s*[\)\]]?"


def _assert_names_shapes(excinfo, name, *shapes):
    msg = str(excinfo.value)
    assert name in msg, f"error message does not name {name!r}: {msg!r}"
    for s in shapes:
        assert re.search(_shape_pattern(s), msg), f"error message lacks shape {s}: {msg!r}"


@pytest.mark.parametrize("cell", CELLS)
def test_load_state_dict_missing(layers, cell):
    layer = layers[cell]
    sd = layer.state_dict()
    for name in list(sd):
        bad = dict(sd)
        del bad[name]
        with pytest.raises((ValueError, KeyError), match=re.escape(name)):
            layer.load_state_dict(bad)
    with pytest.raises((ValueError, KeyError)):
        layer.load_state_dict({})


@pytest.mark.parametrize("cell", CELLS)
def test_load_state_dict_unexpected(layers, cell):
    layer = layers[cell]
    sd = layer.state_dict()
    for extra in ["weight_ih_l2", "weight_ih_l0_forward", "bias", "weight_hr_l0", "weight_ph_l0"]:
        if extra in sd:
            continue
        bad = dict(sd, **{extra: np.zeros(3, np.float32)})
        with pytest.raises((ValueError, KeyError), match=re.escape(extra)):
            layer.load_state_dict(bad)


def test_load_state_dict_unexpected_bias_when_bias_false(fastrnn):
    layer = fastrnn.GRU(I, H, bias=False, seed=0)
    sd = layer.state_dict()
    assert not any(k.startswith("bias") for k in sd)
    bad = dict(sd, bias_ih_l0=np.zeros(3 * H, np.float32))
    with pytest.raises((ValueError, KeyError), match="bias_ih_l0"):
        layer.load_state_dict(bad)


@pytest.mark.parametrize("cell", CELLS)
def test_load_state_dict_misshapen(layers, cell):
    layer = layers[cell]
    sd = layer.state_dict()
    for name, v in sd.items():
        swapped = v.shape[::-1] if v.ndim == 2 and v.shape[0] != v.shape[1] else v.shape + (1,)
        for bad_shape in [tuple(s + 1 for s in v.shape), swapped]:
            bad = dict(sd, **{name: np.zeros(bad_shape, np.float32)})
            with pytest.raises(ValueError) as ei:
                layer.load_state_dict(bad)
            _assert_names_shapes(ei, name, v.shape, bad_shape)
    # a transposed weight_ih (common mistake: Keras layout)
    w = sd["weight_ih_l0"]
    with pytest.raises(ValueError) as ei:
        layer.load_state_dict(dict(sd, weight_ih_l0=w.T.copy()))
    _assert_names_shapes(ei, "weight_ih_l0", w.shape, w.T.shape)


@pytest.mark.parametrize("cell", CELLS)
def test_load_state_dict_failure_leaves_layer_usable(layers, cell):
    """A rejected load_state_dict must not leave the layer half-updated."""
    layer = layers[cell]
    sd = layer.state_dict()
    x = _x()
    before = layer(x)[0]
    names = list(sd)
    bad = {k: np.full(v.shape, 0.5, np.float32) for k, v in sd.items()}
    bad[names[-1]] = np.zeros((1, 2, 3), np.float32)
    with pytest.raises(ValueError):
        layer.load_state_dict(bad)
    np.testing.assert_array_equal(layer(x)[0], before)
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(v, sd[k], err_msg=k)


@pytest.mark.parametrize("cell", CELLS)
def test_load_state_dict_bad_dtype(layers, cell):
    layer = layers[cell]
    sd = layer.state_dict()
    name = next(iter(sd))
    for bad_v in [sd[name].astype(np.complex64) + 1j, np.full(sd[name].shape, "x")]:
        with pytest.raises(TypeError):
            layer.load_state_dict(dict(sd, **{name: bad_v}))


def test_load_state_dict_peephole(fastrnn):
    layer = fastrnn.LSTM(I, H, peephole=True, seed=0)
    sd = layer.state_dict()
    assert sd["weight_ph_l0"].shape == (3 * H,)
    bad = dict(sd)
    del bad["weight_ph_l0"]
    with pytest.raises((ValueError, KeyError), match="weight_ph_l0"):
        layer.load_state_dict(bad)
    with pytest.raises(ValueError) as ei:
        layer.load_state_dict(dict(sd, weight_ph_l0=np.zeros(4 * H, np.float32)))
    _assert_names_shapes(ei, "weight_ph_l0", (3 * H,), (4 * H,))


# --------------------------------------------------------------------------------------------
# constructors
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("kwargs", [
    dict(hidden_size=0), dict(hidden_size=-3), dict(input_size=-1), dict(num_layers=0),
    dict(num_layers=-1), dict(clip=0.0), dict(clip=-1.0), dict(clip=float("nan")),
    dict(activations=["nosuchfn"] * 3), dict(activations=[]),
    dict(activations=["tanh"] * 7),
])
def test_constructor_bad_values(fastrnn, cls, kwargs):
    kw = dict(input_size=I, hidden_size=H)
    kw.update(kwargs)
    if "activations" in kwargs and kwargs["activations"] and kwargs["activations"][0] == "nosuchfn":
        kw["activations"] = ["nosuchfn"] * {"LSTM": 3, "GRU": 2, "RNN": 1}[cls]
    with pytest.raises(ValueError):
        getattr(fastrnn, cls)(**kw)


@pytest.mark.parametrize("cls,n", [("LSTM", 3), ("GRU", 2), ("RNN", 1)])
def test_constructor_activation_counts(fastrnn, cls, n):
    C = getattr(fastrnn, cls)
    C(I, H, activations=["tanh"] * n)                        # n: fine
    C(I, H, activations=["tanh"] * (2 * n), bidirectional=True)   # 2n: fine with 2 directions
    for bad in [c for c in (n + 1, 2 * n + 1, 3 * n, 4 * n) if c not in (n, 2 * n)]:
        with pytest.raises(ValueError):
            C(I, H, activations=["tanh"] * bad, bidirectional=True)
    with pytest.raises(ValueError):                          # 2n needs bidirectional
        C(I, H, activations=["tanh"] * (2 * n))
    # alpha/beta must be aligned one-to-one with activations
    with pytest.raises(ValueError):
        C(I, H, activations=["leakyrelu"] * n, activation_alpha=[0.1] * (n + 1))
    with pytest.raises(ValueError):
        C(I, H, activations=["scaledtanh"] * n, activation_beta=[0.1] * (n + 2))
    with pytest.raises(ValueError):   # alpha without activations has nothing to align with
        C(I, H, activation_alpha=[0.1] * n + [0.2])
    with pytest.raises(ValueError):
        C(I, H, activations=["tanh", "nosuchfn", "sigmoid"][:n] if n > 1 else ["nosuchfn"])
    with pytest.raises(TypeError, match="list of names, got int"):
        getattr(fastrnn, cls)(2, 3, activations=5)


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("kwargs", [
    dict(hidden_size=8.0), dict(hidden_size="8"), dict(input_size=4.5), dict(num_layers=1.5),
    dict(hidden_size=None),
])
def test_constructor_bad_types(fastrnn, cls, kwargs):
    kw = dict(input_size=I, hidden_size=H)
    kw.update(kwargs)
    with pytest.raises(TypeError):
        getattr(fastrnn, cls)(**kw)


def test_constructor_unknown_nonlinearity(fastrnn):
    for bad in ["gelu", "", "TANHH"]:
        with pytest.raises(ValueError, match=f"(?i){re.escape(bad)}"):
            fastrnn.RNN(I, H, nonlinearity=bad)
    fastrnn.RNN(I, H, nonlinearity="relu")
    fastrnn.RNN(I, H, nonlinearity="tanh")


def test_constructor_unknown_activation_named_in_message(fastrnn):
    with pytest.raises(ValueError, match="swish"):
        fastrnn.GRU(I, H, activations=["sigmoid", "swish"])


@pytest.mark.parametrize("proj", [H, H + 1, 100, -1])
def test_constructor_bad_proj_size(fastrnn, proj):
    with pytest.raises(ValueError):
        fastrnn.LSTM(I, H, proj_size=proj)


@pytest.mark.parametrize("cls,kwargs", [
    ("GRU", dict(peephole=True)), ("RNN", dict(peephole=True)), ("GRU", dict(input_forget=True)),
    ("RNN", dict(proj_size=2)), ("GRU", dict(proj_size=2)), ("LSTM", dict(nonlinearity="relu")),
    ("LSTM", dict(linear_before_reset=False)), ("RNN", dict(linear_before_reset=False)),
    ("LSTM", dict(no_such_option=1)),
])
def test_constructor_option_of_another_cell(fastrnn, cls, kwargs):
    with pytest.raises(TypeError):
        getattr(fastrnn, cls)(I, H, **kwargs)


def test_layer_from_config_bad(fastrnn):
    with pytest.raises((ValueError, KeyError)):
        fastrnn.layer_from_config({"cell": "Transformer", "input_size": 3, "hidden_size": 4})
    with pytest.raises((ValueError, TypeError)):
        fastrnn.layer_from_config({"cell": "GRU", "input_size": 3, "hidden_size": 0})


def test_from_torch_rejects_other_modules(fastrnn):
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError):
        fastrnn.from_torch(torch.nn.Conv1d(3, 4, 2))
