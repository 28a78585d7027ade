"""safetensors save/load (fastrnn/_safetensors.py) and config inference (fastrnn/_infer.py)."""

import json
import struct

import numpy as np
import pytest

import fastrnn
from fastrnn._infer import infer_config, select_rnn_state_dict
from fastrnn._safetensors import (bf16_bits_to_float32, float32_to_bf16_bits, load, read_safetensors,
                                  read_safetensors_header, save, write_safetensors)

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")

LAYERS = [
    ("LSTM", dict(input_size=3, hidden_size=5)),
    ("LSTM", dict(input_size=4, hidden_size=6, num_layers=2, bidirectional=True)),
    ("LSTM", dict(input_size=3, hidden_size=6, num_layers=2, bidirectional=True, proj_size=2)),
    ("LSTM", dict(input_size=3, hidden_size=5, proj_size=3, batch_first=True)),
    ("LSTM", dict(input_size=3, hidden_size=5, peephole=True)),
    ("LSTM", dict(input_size=3, hidden_size=4, num_layers=2, bias=False, peephole=True, bidirectional=True)),
    ("LSTM", dict(input_size=3, hidden_size=4, input_forget=True, clip=2.5)),
    ("LSTM", dict(input_size=3, hidden_size=4, activations=["hardsigmoid", "tanh", "softsign"],
                  activation_alpha=[0.3, None, None], activation_beta=[0.4, None, None])),
    ("GRU", dict(input_size=3, hidden_size=5)),
    ("GRU", dict(input_size=4, hidden_size=3, num_layers=3, bidirectional=True, bias=False)),
    ("GRU", dict(input_size=4, hidden_size=3, linear_before_reset=False, batch_first=True)),
    ("RNN", dict(input_size=3, hidden_size=5)),
    ("RNN", dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True, nonlinearity="relu")),
]
IDS = [f"{c}-" + "-".join(f"{k}={v}" for k, v in kw.items() if k not in ("input_size", "hidden_size"))
       for c, kw in LAYERS]


def make(cell, kw, seed=0):
    return getattr(fastrnn, cell)(**kw, seed=seed)


def outputs(layer, seed=1, T=7, B=3):
    cfg = layer.config()
    rng = np.random.default_rng(seed)
    shape = (B, T, cfg["input_size"]) if cfg.get("batch_first") else (T, B, cfg["input_size"])
    out, state = layer(rng.standard_normal(shape).astype(np.float32))
    states = list(state) if isinstance(state, tuple) else [state]
    return [np.asarray(out)] + [np.asarray(s) for s in states]


def assert_bit_identical(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x.view(np.uint32), y.view(np.uint32))


def assert_same_state(sd1, sd2):
    assert sorted(sd1) == sorted(sd2)
    for k in sd1:
        a, b = np.asarray(sd1[k]), np.asarray(sd2[k])
        assert a.shape == b.shape and np.array_equal(a, b), k


# --------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("cell,kw", LAYERS, ids=IDS)
def test_roundtrip_bit_identical(tmp_path, cell, kw):
    layer = make(cell, kw)
    path = tmp_path / "m.safetensors"
    save(layer, path)
    back = load(path)
    assert back.config() == layer.config()
    assert_same_state(back.state_dict(), layer.state_dict())
    assert_bit_identical(outputs(back), outputs(layer))


@pytest.mark.parametrize("cell,kw", LAYERS, ids=IDS)
def test_plain_state_dict_loads_with_inferred_config(tmp_path, cell, kw):
    """A torch-named state dict with no fastrnn metadata (written by our writer)."""
    layer = make(cell, kw)
    path = tmp_path / "plain.safetensors"
    write_safetensors(path, layer.state_dict())
    assert read_safetensors(path)[1] == {}
    back = load(path, nonlinearity=kw.get("nonlinearity", "tanh"))
    want = infer_config(layer.state_dict(), nonlinearity=kw.get("nonlinearity", "tanh"))
    got = back.config()
    for key, val in want.items():
        assert got[key] == val, key
    assert_same_state(back.state_dict(), layer.state_dict())
    # Options the weights cannot tell (batch_first, activations, clip, ...) are the defaults; when
    # the layer used only inferable options the outputs are identical.
    inferable = {"num_layers", "bidirectional", "proj_size", "bias", "peephole", "nonlinearity",
                 "input_size", "hidden_size"}
    if set(kw) <= inferable:
        assert_bit_identical(outputs(back), outputs(layer))


def test_file_layout_follows_spec(tmp_path):
    layer = fastrnn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, seed=3)
    path = tmp_path / "m.safetensors"
    save(layer, path, metadata={"author": "me"})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 8 == 0
    text = raw[8:8 + n].decode("utf-8")
    assert text.startswith("{") and text == text.rstrip(" ") + " " * (len(text) - len(text.rstrip(" ")))
    header = json.loads(text)
    meta = header.pop("__metadata__")
    assert meta["author"] == "me" and meta["format"] == "pt"
    assert all(isinstance(v, str) for v in meta.values())
    assert json.loads(meta["fastrnn_config"]) == layer.config()
    spans = sorted(tuple(v["data_offsets"]) for v in header.values())
    pos = 0
    for b, e in spans:
        assert b == pos
        pos = e
    assert 8 + n + pos == len(raw)
    sd = layer.state_dict()
    for name, info in header.items():
        b, e = info["data_offsets"]
        assert info["dtype"] == "F32" and info["shape"] == list(sd[name].shape)
        arr = np.frombuffer(raw[8 + n + b:8 + n + e], dtype="<f4").reshape(info["shape"])
        assert np.array_equal(arr, sd[name])
        assert (8 + n + b) % 4 == 0  # aligned


# ----------------------------------------------------------------------- interop: safetensors pkg
def test_layer_file_opens_in_safetensors_package(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open

    layer = fastrnn.GRU(4, 3, num_layers=2, bidirectional=True, seed=5)
    path = tmp_path / "m.safetensors"
    save(layer, path)
    assert_same_state(st_numpy.load_file(str(path)), layer.state_dict())
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
        assert json.loads(meta["fastrnn_config"]) == layer.config()
        assert sorted(f.keys()) == sorted(layer.state_dict())


def test_layer_file_loads_into_torch_module(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    layer = fastrnn.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=2, seed=5)
    path = tmp_path / "m.safetensors"
    save(layer, path)
    mod = torch.nn.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=2)
    mod.load_state_dict(st_torch.load_file(str(path)))  # strict: same names and shapes
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    with torch.no_grad():
        ref = mod(torch.from_numpy(x))[0].numpy()
    assert np.abs(layer(x)[0] - ref).max() <= 1e-5


GENERIC = {
    "f32": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    "f16": (np.arange(6, dtype=np.float16) - 2.5).reshape(2, 3),
    "f64": np.linspace(-1, 1, 5),
    "i8": np.array([-128, -1, 0, 127], dtype=np.int8),
    "u8": np.array([0, 1, 255], dtype=np.uint8),
    "i16": np.array([-30000, 5], dtype=np.int16),
    "i32": np.array([[-(2 ** 31), 2 ** 31 - 1]], dtype=np.int32),
    "i64": np.array([-(2 ** 62), 3], dtype=np.int64),
    "u32": np.array([2 ** 32 - 1], dtype=np.uint32),
    "bool": np.array([True, False, True]),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "scalar": np.float32(2.5),
}


def test_generic_dtypes_roundtrip_and_interop(tmp_path):
    path = tmp_path / "g.safetensors"
    bf = np.array([1.0, -2.5, 3.14159, 1e-3, np.inf], dtype=np.float32)
    tensors = dict(GENERIC, bf16=float32_to_bf16_bits(bf))
    write_safetensors(path, tensors, {"kind": "test"}, dtypes={"bf16": "BF16"})
    info, meta, _ = read_safetensors_header(path)
    assert meta == {"kind": "test"} and info["bf16"]["dtype"] == "BF16" and info["i8"]["dtype"] == "I8"
    got, meta = read_safetensors(path)
    for k, v in GENERIC.items():
        assert got[k].dtype == np.asarray(v).dtype and np.array_equal(got[k], v), k
    assert got["bf16"].dtype == np.float32
    assert np.array_equal(got["bf16"], bf16_bits_to_float32(float32_to_bf16_bits(bf)))
    assert np.array_equal(read_safetensors(path, bf16="bits")[0]["bf16"], tensors["bf16"])

    st_numpy = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open
    with safe_open(str(path), framework="numpy") as f:  # opens (numpy has no bf16: skip that tensor)
        assert f.metadata() == {"kind": "test"}
        for k, v in GENERIC.items():
            assert np.array_equal(f.get_tensor(k), v), k
    # ... and we read what the reference writer produces.
    path2 = tmp_path / "ref.safetensors"
    st_numpy.save_file({k: np.asarray(v) for k, v in GENERIC.items()}, str(path2), metadata={"a": "b"})
    got2, meta2 = read_safetensors(path2)
    assert meta2 == {"a": "b"}
    for k, v in GENERIC.items():
        assert np.array_equal(got2[k], v) and got2[k].shape == np.shape(v), k


def test_bf16_from_reference_writer(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    t = torch.randn(5, 7).to(torch.bfloat16)
    path = tmp_path / "bf.safetensors"
    st_torch.save_file({"w": t, "h": t.half()}, str(path))
    got, _ = read_safetensors(path)
    assert np.array_equal(got["w"], t.float().numpy())
    assert np.array_equal(got["h"], t.half().numpy())
    x = torch.randn(1000) * 100
    assert np.array_equal(float32_to_bf16_bits(x.numpy()), x.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16))


@pytest.mark.parametrize("dtype", ["F16", "BF16", "F64"])
def test_low_and_high_precision_state_dicts_load_as_float32(tmp_path, dtype):
    layer = fastrnn.LSTM(3, 4, num_layers=2, seed=2)
    sd = layer.state_dict()
    path = tmp_path / "p.safetensors"
    write_safetensors(path, sd, dtypes={k: dtype for k in sd})
    back = load(path)
    np_dt = {"F16": np.float16, "F64": np.float64}.get(dtype)
    for k, v in sd.items():
        want = bf16_bits_to_float32(float32_to_bf16_bits(v)) if dtype == "BF16" else v.astype(np_dt).astype(np.float32)
        assert back.state_dict()[k].dtype == np.float32
        assert np.array_equal(back.state_dict()[k], want)
    if dtype == "F64":
        assert_bit_identical(outputs(back), outputs(layer))


@pytest.mark.parametrize("kind", ["LSTM", "LSTM-proj-bi", "GRU-bi", "RNN-relu"])
def test_plain_torch_state_dict_from_safetensors_torch(tmp_path, kind):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    mod, kw = {
        "LSTM": (lambda: torch.nn.LSTM(3, 5), {}),
        "LSTM-proj-bi": (lambda: torch.nn.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=2), {}),
        "GRU-bi": (lambda: torch.nn.GRU(4, 5, num_layers=2, bidirectional=True, bias=False), {}),
        "RNN-relu": (lambda: torch.nn.RNN(3, 5, nonlinearity="relu"), {"nonlinearity": "relu"}),
    }[kind]
    mod = mod()
    path = tmp_path / "t.safetensors"
    st_torch.save_file(mod.state_dict(), str(path))
    layer = load(path, **kw)
    x = np.random.default_rng(0).standard_normal((6, 2, mod.input_size)).astype(np.float32)
    with torch.no_grad():
        ref_out, ref_state = mod(torch.from_numpy(x))
    out, state = layer(x)
    assert np.abs(out - ref_out.numpy()).max() <= 1e-5
    ref_states = ref_state if isinstance(ref_state, tuple) else (ref_state,)
    states = state if isinstance(state, tuple) else (state,)
    for a, b in zip(states, ref_states):
        assert np.abs(a - b.numpy()).max() <= 1e-5


def test_prefixed_and_multiple_rnns(tmp_path):
    enc = fastrnn.GRU(3, 4, seed=1)
    dec = fastrnn.LSTM(4, 2, seed=2)
    sd = {f"enc.rnn.{k}": v for k, v in enc.state_dict().items()}
    sd["fc.weight"] = np.ones((2, 2), np.float32)
    single = tmp_path / "single.safetensors"
    write_safetensors(single, sd)
    assert_bit_identical(outputs(load(single)), outputs(enc))  # common prefix stripped
    sd.update({f"dec.rnn.{k}": v for k, v in dec.state_dict().items()})
    multi = tmp_path / "multi.safetensors"
    write_safetensors(multi, sd)
    with pytest.raises(ValueError, match=r"several RNNs.*'dec\.rnn\.'.*'enc\.rnn\.'.*prefix="):
        load(multi)
    assert_bit_identical(outputs(load(multi, prefix="dec.rnn")), outputs(dec))
    assert_bit_identical(outputs(load(multi, prefix="enc.rnn.")), outputs(enc))
    with pytest.raises(ValueError, match="no RNN parameters with prefix 'x'"):
        load(multi, prefix="x")


def test_batch_first_override(tmp_path):
    layer = fastrnn.GRU(3, 4, seed=1)
    path = tmp_path / "p.safetensors"
    write_safetensors(path, layer.state_dict())
    assert load(path, batch_first=True).config()["batch_first"] is True


# ------------------------------------------------------------------------------- infer_config
def _shapes_sd(cell, I, H, L=1, D=1, P=0, bias=True, peephole=False):
    g = {"LSTM": 4, "GRU": 3, "RNN": 1}[cell]
    sd = {}
    for k in range(L):
        for d in range(D):
            s = f"_l{k}" + ("_reverse" if d else "")
            sd["weight_ih" + s] = np.zeros((g * H, I if k == 0 else D * (P or H)))
            sd["weight_hh" + s] = np.zeros((g * H, P or H))
            if bias:
                sd["bias_ih" + s] = np.zeros(g * H)
                sd["bias_hh" + s] = np.zeros(g * H)
            if P:
                sd["weight_hr" + s] = np.zeros((P, H))
            if peephole:
                sd["weight_ph" + s] = np.zeros(3 * H)
    return sd


def test_infer_config_cases():
    assert infer_config(_shapes_sd("LSTM", 3, 5)) == dict(
        cell="LSTM", input_size=3, hidden_size=5, num_layers=1, bias=True, batch_first=False,
        bidirectional=False, proj_size=0, peephole=False)
    assert infer_config(_shapes_sd("GRU", 7, 2, L=3, D=2, bias=False)) == dict(
        cell="GRU", input_size=7, hidden_size=2, num_layers=3, bias=False, batch_first=False, bidirectional=True)
    assert infer_config(_shapes_sd("RNN", 3, 5, D=2), nonlinearity="relu") == dict(
        cell="RNN", input_size=3, hidden_size=5, num_layers=1, nonlinearity="relu", bias=True,
        batch_first=False, bidirectional=True)
    cfg = infer_config(_shapes_sd("LSTM", 3, 6, L=2, D=2, P=2))
    assert (cfg["hidden_size"], cfg["proj_size"], cfg["num_layers"], cfg["bidirectional"]) == (6, 2, 2, True)
    assert infer_config(_shapes_sd("LSTM", 3, 4, peephole=True))["peephole"] is True
    assert infer_config(_shapes_sd("GRU", 3, 4), cell="gru")["cell"] == "GRU"


def test_infer_config_errors():
    with pytest.raises(ValueError, match="cell="):  # 2x gate multiple: no such cell
        infer_config({"weight_ih_l0": np.zeros((8, 3)), "weight_hh_l0": np.zeros((8, 4))})
    with pytest.raises(ValueError, match="expected 3\\*4 for cell=GRU"):
        infer_config(_shapes_sd("LSTM", 3, 4), cell="GRU")
    with pytest.raises(ValueError, match="cell must be one of"):
        infer_config(_shapes_sd("LSTM", 3, 4), cell="LSTMX")
    with pytest.raises(ValueError, match="nonlinearity"):
        infer_config(_shapes_sd("RNN", 3, 4), nonlinearity="sigmoid")
    sd = _shapes_sd("LSTM", 3, 4, L=2)
    del sd["bias_hh_l1"]
    with pytest.raises(ValueError, match="missing parameter bias_hh_l1"):
        infer_config(sd)
    sd = _shapes_sd("GRU", 3, 4, D=2)
    del sd["weight_ih_l0_reverse"]
    with pytest.raises(ValueError, match="missing parameter weight_ih_l0_reverse"):
        infer_config(sd)
    sd = _shapes_sd("GRU", 3, 4, L=2)
    sd["weight_ih_l1"] = np.zeros((12, 5))
    with pytest.raises(ValueError, match=r"weight_ih_l1 has shape \(12, 5\), expected \(12, 4\)"):
        infer_config(sd)
    with pytest.raises(ValueError, match="unexpected keys"):
        infer_config(dict(_shapes_sd("GRU", 3, 4), extra=np.zeros(2)))
    with pytest.raises(ValueError, match="only valid for LSTM"):
        infer_config(_shapes_sd("LSTM", 3, 4, P=2), cell="RNN")
    with pytest.raises(ValueError, match="no RNN parameters"):
        select_rnn_state_dict({"fc.weight": np.zeros(2)})


# ---------------------------------------------------------------------------------- bad input
def _raw(path, header, data=b"", n=None, pad=True):
    hb = header if isinstance(header, bytes) else json.dumps(header).encode()
    if pad:
        hb += b" " * (-(8 + len(hb)) % 8)
    path.write_bytes(struct.pack("<Q", len(hb) if n is None else n) + hb + data)
    return path


F32_2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
BAD = {
    "empty file": (b"", None, None, "need an 8-byte header length"),
    "header length > file": ({"a": F32_2}, b"\0" * 8, 4096, "larger than the file"),
    "huge header length": ({"a": F32_2}, b"\0" * 8, 2 ** 63 + 5, "exceeds"),
    "non-JSON header": (b"{not json", b"", None, "not valid JSON"),
    "non-UTF8 header": (b'{"\xff": 1}', b"", None, "UTF-8"),
    "not an object": (b"[1, 2]", b"", None, "start with"),
    "offsets past end": ({"a": F32_2}, b"\0" * 4, None, "run past the end|cover"),
    "overlap": ({"a": F32_2, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, None,
                "overlaps"),
    "gap": ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, None, "gap"),
    "trailing bytes": ({"a": F32_2}, b"\0" * 12, None, "trailing"),
    "unknown dtype": ({"a": {"dtype": "F7", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, None,
                      "unknown or unsupported dtype 'F7'"),
    "shape/span mismatch": ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, None,
                            "needs 12 bytes"),
    "negative shape": ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, None,
                       "invalid shape"),
    "float shape": ({"a": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}, b"\0" * 8, None,
                    "invalid shape"),
    "reversed offsets": ({"a": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}}, b"\0" * 8, None,
                         "invalid data_offsets"),
    "missing field": ({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, None, "missing data_offsets"),
    "bad metadata": ({"__metadata__": {"a": 1}, "a": F32_2}, b"\0" * 8, None, "__metadata__"),
    "duplicate key": (b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "a": {}}', b"\0" * 8, None,
                      "duplicate"),
    "huge shape": ({"a": {"dtype": "F32", "shape": [2 ** 40, 2 ** 40], "data_offsets": [0, 8]}}, b"\0" * 8, None,
                   "needs"),
    "deep nesting": (b"{" + b'"a":[' * 100000 + b"]" * 100000 + b"}", b"", None, "not valid JSON"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_files_raise_valueerror(tmp_path, case):
    header, data, n, msg = BAD[case]
    path = tmp_path / "bad.safetensors"
    if header == b"":
        path.write_bytes(b"")
    else:
        _raw(path, header, data, n)
    with pytest.raises(ValueError, match=msg) as err:
        read_safetensors(path)
    assert str(path) in str(err.value)
    with pytest.raises(ValueError):
        load(path)


def test_missing_file_is_filenotfound(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.safetensors")


def test_config_contradicting_tensors_is_rejected(tmp_path):
    layer = fastrnn.LSTM(3, 4, seed=0)
    path = tmp_path / "m.safetensors"
    cfg = dict(layer.config(), hidden_size=10 ** 6)  # must fail before allocating a huge layer
    write_safetensors(path, layer.state_dict(), {"fastrnn_config": json.dumps(cfg)})
    with pytest.raises(ValueError, match="hidden_size=1000000 but the tensors imply 4"):
        load(path)
    write_safetensors(path, layer.state_dict(), {"fastrnn_config": "{oops"})
    with pytest.raises(ValueError, match="not valid JSON"):
        load(path)
    write_safetensors(path, layer.state_dict(), {"fastrnn_config": json.dumps(dict(layer.config(), cell="GRU"))})
    with pytest.raises(ValueError):
        load(path)
    write_safetensors(path, layer.state_dict(), {"fastrnn_config": json.dumps(layer.config()), "fastrnn_format": "2"})
    with pytest.raises(ValueError, match="file format '2'"):
        load(path)
    sd = layer.state_dict()
    sd["weight_ih_l0"] = sd["weight_ih_l0"].astype(np.int32)
    write_safetensors(path, sd, {"fastrnn_config": json.dumps(layer.config())})
    with pytest.raises(ValueError, match="floating-point"):
        load(path)


def test_truncations_and_mutations_only_raise_valueerror(tmp_path):
    layer = fastrnn.LSTM(2, 3, num_layers=2, bidirectional=True, seed=0)
    good = tmp_path / "good.safetensors"
    save(layer, good)
    raw = good.read_bytes()
    bad = tmp_path / "bad.safetensors"
    (n,) = struct.unpack("<Q", raw[:8])
    for cut in list(range(8 + n + 16)) + list(range(8 + n + 16, len(raw), 5)):
        bad.write_bytes(raw[:cut])
        with pytest.raises(ValueError):
            load(bad)
    rng = np.random.default_rng(0)
    positions = list(range(8 + n)) + list(rng.integers(8 + n, len(raw), 64))
    outcomes = {"ok": 0, "ValueError": 0}
    for pos in positions:
        for val in {int(rng.choice([0, 0x20, 0x22, 0x7B, 0x7D, 0xFF])), int(rng.integers(256))}:
            if val == raw[pos]:
                continue
            mutated = bytearray(raw)
            mutated[pos] = val
            bad.write_bytes(bytes(mutated))
            try:
                load(bad)
                outcomes["ok"] += 1
            except ValueError:
                outcomes["ValueError"] += 1
    assert outcomes["ValueError"] > 1000 and outcomes["ok"] > 50
