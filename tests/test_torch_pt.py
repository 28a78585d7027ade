"""torch.save() state dicts read without torch (fastrnn/_torch_pt.py)."""

import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fastrnn
import fastrnn._safetensors
from fastrnn._safetensors import save, write_safetensors
from fastrnn._torch_pt import load_torch, read_torch_state_dict

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")


# ------------------------------------------------- a minimal torch.save() writer, no torch needed
def _g(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _s(text):
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _i(v):
    return b"J" + struct.pack("<i", v)


def _t(items):
    return b"(" + b"".join(items) + b"t"


_STORAGE = {np.dtype("f4"): "FloatStorage", np.dtype("f8"): "DoubleStorage", np.dtype("f2"): "HalfStorage",
            np.dtype("i1"): "CharStorage", np.dtype("u1"): "ByteStorage", np.dtype("i2"): "ShortStorage",
            np.dtype("i4"): "IntStorage", np.dtype("i8"): "LongStorage", np.dtype("?"): "BoolStorage"}


def tensor_pickle(key, storage_cls, numel, offset, size, stride, rebuild="_rebuild_tensor_v2"):
    args = [_t([_s("storage"), _g("torch", storage_cls), _s(key), _s("cpu"), _i(numel)]) + b"Q",
            _i(offset), _t([_i(v) for v in size]), _t([_i(v) for v in stride])]
    if rebuild == "_rebuild_tensor_v2":
        args += [b"\x89", _g("collections", "OrderedDict") + b")R"]
    return _g("torch._utils", rebuild) + _t(args) + b"R"


def state_dict_pickle(items):
    """items: list of (name, tensor_pickle bytes) -> pickle of an OrderedDict."""
    body = b"".join(_s(name) + tp for name, tp in items)
    return b"\x80\x02" + _g("collections", "OrderedDict") + b")R(" + body + b"u."


def write_pt_zip(path, data_pkl, storages, archive="archive", byteorder="little"):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{archive}/data.pkl", data_pkl)
        if byteorder is not None:
            z.writestr(f"{archive}/byteorder", byteorder)
        for key, raw in storages.items():
            z.writestr(f"{archive}/data/{key}", raw)
        z.writestr(f"{archive}/version", "3\n")
    return path


def write_pt(path, tensors, archive="archive", byteorder="little"):
    """torch.save(tensors) equivalent for a dict of numpy arrays (one storage per tensor)."""
    items, storages = [], {}
    for i, (name, arr) in enumerate(tensors.items()):
        arr = np.ascontiguousarray(arr)
        strides = [s // arr.itemsize for s in arr.strides] if arr.size else [1] * arr.ndim
        items.append((name, tensor_pickle(str(i), _STORAGE[arr.dtype], arr.size, 0, arr.shape, strides)))
        storages[str(i)] = arr.astype(arr.dtype.newbyteorder("<" if byteorder == "little" else ">")).tobytes()
    return write_pt_zip(path, state_dict_pickle(items), storages, archive, byteorder)


def outputs(layer, seed=1, T=6, B=2):
    cfg = layer.config()
    rng = np.random.default_rng(seed)
    shape = (B, T, cfg["input_size"]) if cfg.get("batch_first") else (T, B, cfg["input_size"])
    out, state = layer(rng.standard_normal(shape).astype(np.float32))
    return [out] + (list(state) if isinstance(state, tuple) else [state])


def assert_bit_identical(a, b):
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape and np.array_equal(x.view(np.uint32), y.view(np.uint32))


# ---------------------------------------------------------------------------- without torch
@pytest.mark.parametrize("byteorder", ["little", "big", None])
def test_handcrafted_pt_loads_bit_identical(tmp_path, byteorder):
    layer = fastrnn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, seed=4)
    path = write_pt(tmp_path / "m.pt", layer.state_dict(), byteorder=byteorder or "little")
    if byteorder is None:  # old files have no byteorder record: little-endian
        with zipfile.ZipFile(path) as z:
            entries = {n: z.read(n) for n in z.namelist() if not n.endswith("byteorder")}
        with zipfile.ZipFile(path, "w") as z:
            for n, b in entries.items():
                z.writestr(n, b)
    back = load_torch(path)
    assert back.config()["proj_size"] == 2 and back.config()["bidirectional"]
    assert_bit_identical(outputs(back), outputs(layer))


def test_views_offsets_strides_handcrafted(tmp_path):
    base = np.arange(60, dtype=np.float32).reshape(6, 10)
    raw = base.tobytes()
    items = [("a", tensor_pickle("0", "FloatStorage", 60, 0, (6, 10), (10, 1))),
             ("b", tensor_pickle("0", "FloatStorage", 60, 12, (3, 5), (10, 1))),
             ("c", tensor_pickle("0", "FloatStorage", 60, 0, (10, 6), (1, 10))),
             ("d", tensor_pickle("0", "FloatStorage", 60, 3, (6,), (10,), rebuild="_rebuild_tensor")),
             ("e", tensor_pickle("0", "FloatStorage", 60, 7, (4, 3), (0, 1))),
             ("f", tensor_pickle("0", "FloatStorage", 60, 59, (0, 5), (5, 1)))]
    path = write_pt_zip(tmp_path / "v.pt", state_dict_pickle(items), {"0": raw})
    got = read_torch_state_dict(path)
    assert np.array_equal(got["a"], base)
    assert np.array_equal(got["b"], base[1:4, 2:7])
    assert np.array_equal(got["c"], base.T)
    assert np.array_equal(got["d"], base[:, 3])
    assert np.array_equal(got["e"], np.broadcast_to(base[0, 7:10], (4, 3)))
    assert got["f"].shape == (0, 5)
    for v in got.values():
        assert v.flags.c_contiguous and v.flags.writeable and v.dtype == np.float32
    got["a"][0, 0] = 99  # copies, not views of a shared storage
    assert got["b"][0, 0] == 12


def test_nested_checkpoint_dict_handcrafted(tmp_path):
    gru = fastrnn.GRU(3, 4, seed=1)
    items = [(f"rnn.{k}", tensor_pickle(str(i), "FloatStorage", v.size, 0, v.shape, [s // 4 for s in v.strides]))
             for i, (k, v) in enumerate(gru.state_dict().items())]
    inner = b"".join(_s(n) + tp for n, tp in items)
    pkl = (b"\x80\x02}(" + _s("epoch") + _i(3) + _s("model") + _g("collections", "OrderedDict") + b")R("
           + inner + b"u" + _s("note") + _s("hi") + b"u.")
    path = write_pt_zip(tmp_path / "ckpt.pt", pkl, {str(i): v.tobytes() for i, v in enumerate(gru.state_dict().values())})
    assert sorted(read_torch_state_dict(path)) == sorted(f"model.rnn.{k}" for k in gru.state_dict())
    assert_bit_identical(outputs(load_torch(path)), outputs(gru))


# ------------------------------------------------------------------------------- with torch
def _torch_module(kind):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    nn = torch.nn
    return {
        "LSTM": (nn.LSTM(3, 5), {}),
        "LSTM-2l-bi": (nn.LSTM(4, 6, num_layers=2, bidirectional=True), {}),
        "LSTM-proj": (nn.LSTM(3, 6, proj_size=2), {}),
        "LSTM-proj-2l-bi-bf": (nn.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=3, batch_first=True),
                               {"batch_first": True}),
        "GRU": (nn.GRU(3, 5), {}),
        "GRU-3l-bi-nobias": (nn.GRU(4, 3, num_layers=3, bidirectional=True, bias=False), {}),
        "RNN-tanh-bi": (nn.RNN(3, 5, num_layers=2, bidirectional=True), {}),
        "RNN-relu": (nn.RNN(3, 5, nonlinearity="relu"), {"nonlinearity": "relu"}),
    }[kind]


KINDS = ["LSTM", "LSTM-2l-bi", "LSTM-proj", "LSTM-proj-2l-bi-bf", "GRU", "GRU-3l-bi-nobias", "RNN-tanh-bi",
         "RNN-relu"]


@pytest.mark.parametrize("kind", KINDS)
def test_load_torch_matches_torch_module(tmp_path, kind):
    mod, kw = _torch_module(kind)
    import torch

    path = tmp_path / "m.pt"
    torch.save(mod.state_dict(), path)
    layer = load_torch(path, **kw)
    x = np.random.default_rng(0).standard_normal((7, 2, mod.input_size)).astype(np.float32)
    with torch.no_grad():
        ref_out, ref_state = mod(torch.from_numpy(x))
    out, state = layer(x)
    refs = [ref_out] + list(ref_state if isinstance(ref_state, tuple) else (ref_state,))
    gots = [out] + list(state if isinstance(state, tuple) else (state,))
    for got, ref in zip(gots, refs, strict=True):
        assert got.shape == tuple(ref.shape)
        assert np.abs(got - ref.numpy()).max() <= 1e-5
    # same parameters as the in-memory converter
    conv = fastrnn.from_torch(mod).state_dict()
    assert all(np.array_equal(conv[k], v) for k, v in layer.state_dict().items())
    assert fastrnn.load_torch(path, **kw).config() == layer.config()


def test_dtypes_from_torch_save(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ts = {"f32": torch.randn(3, 4), "f16": torch.randn(5).half(), "bf16": torch.randn(2, 3).bfloat16(),
          "f64": torch.randn(4).double(), "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
          "u8": torch.tensor([0, 255], dtype=torch.uint8), "i16": torch.tensor([-3, 4], dtype=torch.int16),
          "i32": torch.tensor([2 ** 31 - 1], dtype=torch.int32), "i64": torch.tensor([-(2 ** 62)]),
          "bool": torch.tensor([True, False]), "scalar": torch.tensor(3.5), "empty": torch.zeros(0, 3)}
    path = tmp_path / "d.pt"
    torch.save(ts, path)
    got = read_torch_state_dict(path)
    for k, t in ts.items():
        want = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
        assert got[k].dtype == want.dtype and got[k].shape == want.shape and np.array_equal(got[k], want), k


def test_views_and_shared_storage_from_torch_save(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.arange(60.0).reshape(6, 10)
    ts = {"a": base, "b": base[1:4, 2:7], "c": base.t(), "d": base[2], "e": base[:, 3],
          "exp": torch.ones(1, 3).expand(4, 3), "half_view": base.half()[2:, ::3]}
    path = tmp_path / "v.pt"
    torch.save(ts, path)
    got = read_torch_state_dict(path)
    for k, t in ts.items():
        assert np.array_equal(got[k], t.numpy()), k


def test_handcrafted_writer_is_what_torch_reads(tmp_path):
    torch = pytest.importorskip("torch")
    layer = fastrnn.GRU(3, 4, num_layers=2, seed=0)
    path = write_pt(tmp_path / "h.pt", dict(layer.state_dict(), i64=np.arange(3)))
    loaded = torch.load(path, weights_only=True)
    for k, v in read_torch_state_dict(path).items():
        assert np.array_equal(loaded[k].numpy(), v)


def test_prefixed_model_state_dicts_and_checkpoints(tmp_path):
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 3)
            self.rnn = nn.LSTM(3, 4, bidirectional=True)
            self.fc = nn.Linear(8, 2)

    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.GRU(3, 4)
            self.decoder = nn.Sequential(nn.RNN(4, 4, nonlinearity="relu"))

    torch.manual_seed(0)
    tagger, s2s = Tagger(), Seq2Seq()
    p1, p2, p3 = tmp_path / "tagger.pt", tmp_path / "s2s.pt", tmp_path / "ckpt.pt"
    torch.save(tagger.state_dict(), p1)
    torch.save(s2s.state_dict(), p2)
    torch.save({"epoch": 7, "model": tagger.state_dict(), "lr": 0.1, "names": ["a", "b"]}, p3)
    want = outputs(fastrnn.from_torch(tagger.rnn))
    assert_bit_identical(outputs(load_torch(p1)), want)
    assert_bit_identical(outputs(load_torch(p3)), want)
    assert_bit_identical(outputs(load_torch(p3, prefix="model.rnn.")), want)
    with pytest.raises(ValueError, match=r"several RNNs.*'decoder\.0\.'.*'encoder\.'.*prefix="):
        load_torch(p2)
    assert_bit_identical(outputs(load_torch(p2, prefix="encoder")), outputs(fastrnn.from_torch(s2s.encoder)))
    dec = load_torch(p2, prefix="decoder.0.", nonlinearity="relu")
    assert_bit_identical(outputs(dec), outputs(fastrnn.from_torch(s2s.decoder[0])))


def test_keep_vars_parameters(tmp_path):
    torch = pytest.importorskip("torch")
    mod = torch.nn.GRU(3, 4)
    path = tmp_path / "p.pt"
    torch.save(mod.state_dict(keep_vars=True), path)  # pickles nn.Parameter via _rebuild_parameter
    assert_bit_identical(outputs(load_torch(path)), outputs(fastrnn.from_torch(mod)))


def test_whole_module_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "module.pt"
    torch.save(torch.nn.LSTM(2, 3), path)
    with pytest.raises(ValueError, match=r"refusing to load global 'torch\.nn\.modules\.rnn\.LSTM'.*state_dict"):
        load_torch(path)


# --------------------------------------------------------------- loading with torch unavailable
BLOCKER = textwrap.dedent("""
    import sys, importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "safetensors"):
                raise ModuleNotFoundError("blocked for this test: " + name)
    sys.meta_path.insert(0, Block())
    for m in list(sys.modules):
        if m.split(".")[0] in ("torch", "safetensors"):
            del sys.modules[m]
    try:
        import torch
    except ImportError:
        pass
    else:
        raise SystemExit("blocker failed")
""")


def test_each_format_loads_without_torch_or_safetensors(tmp_path):
    lstm = fastrnn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, seed=7)
    gru = fastrnn.GRU(4, 3, seed=8)
    rnn = fastrnn.RNN(3, 4, nonlinearity="relu", seed=9)
    save(lstm, tmp_path / "lstm.safetensors")
    write_safetensors(tmp_path / "gru_plain.safetensors", {"rnn." + k: v for k, v in gru.state_dict().items()})
    write_pt(tmp_path / "gru.pt", gru.state_dict())
    write_pt(tmp_path / "rnn.pt", rnn.state_dict())
    script = BLOCKER + textwrap.dedent(f"""
        import numpy as np, fastrnn
        from fastrnn._safetensors import load
        from fastrnn._torch_pt import load_torch
        d = {str(tmp_path)!r}
        layers = {{"lstm": fastrnn.load(d + "/lstm.safetensors"), "gru_plain": load(d + "/gru_plain.safetensors"),
                   "gru": fastrnn.load_torch(d + "/gru.pt"), "rnn": load_torch(d + "/rnn.pt", nonlinearity="relu")}}
        for name, layer in layers.items():
            rng = np.random.default_rng(1)
            out, state = layer(rng.standard_normal((6, 2, layer.config()["input_size"])).astype(np.float32))
            np.save(d + "/out_" + name + ".npy", out)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "safetensors"))
        assert not loaded, loaded
        print("OK")
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", script], check=False, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr
    for name, layer in {"lstm": lstm, "gru_plain": gru, "gru": gru, "rnn": rnn}.items():
        got = np.load(tmp_path / f"out_{name}.npy")
        assert np.array_equal(got, outputs(layer)[0]), name


# ---------------------------------------------------------------------------- hostile pickles
def _marker_cmd(marker):
    return f"__import__('pathlib').Path({str(marker)!r}).write_text('pwned')"


STORE4 = {"0": np.arange(4, dtype=np.float32).tobytes()}
HOSTILE = {
    # name: (pickle builder taking the marker path, refused global in the message)
    "os.system": (lambda m: b"cos\nsystem\n(S'touch " + str(m).encode() + b"'\ntR.", "os.system"),
    "posix.system": (lambda m: b"\x80\x02cposix\nsystem\nX" + struct.pack("<I", len(f"touch {m}"))
                     + f"touch {m}".encode() + b"\x85R.", "posix.system"),
    "builtins.exec (STACK_GLOBAL)": (
        lambda m: b"\x80\x04" + b"\x8c\x08builtins\x94\x8c\x04exec\x94\x93" + _s(_marker_cmd(m)) + b"\x85R.",
        "builtins.exec"),
    "builtins.eval nested after a tensor": (
        lambda m: state_dict_pickle([("w", tensor_pickle("0", "FloatStorage", 4, 0, (4,), (1,))),
                                     ("x", _g("builtins", "eval") + _t([_s(_marker_cmd(m))]) + b"R")]),
        "builtins.eval"),
    "getattr gadget": (lambda m: _g("builtins", "getattr") + _t([_s("x"), _s("upper")]) + b"R.", "builtins.getattr"),
    "subprocess.Popen via INST": (lambda m: b"(S'touch " + str(m).encode() + b"'\nisubprocess\nPopen\n.",
                                  "subprocess.Popen"),
    "torch.nn.Module": (lambda m: b"\x80\x02" + _g("torch.nn.modules.rnn", "LSTM") + b")\x81.",
                        "torch.nn.modules.rnn.LSTM"),
    "numpy gadget": (lambda m: _g("numpy.core.multiarray", "_reconstruct") + b")R.",
                     "numpy.core.multiarray._reconstruct"),
    "persistent id with evil storage class": (
        lambda m: b"\x80\x02" + _t([_s("storage"), _g("os", "system"), _s("0"), _s("cpu"), _i(1)]) + b"Q.",
        "os.system"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_pickle_is_refused_before_running(tmp_path, case):
    marker = tmp_path / "pwned"
    build, refused = HOSTILE[case]
    path = write_pt_zip(tmp_path / "evil.pt", build(marker), {"0": np.zeros(4, np.float32).tobytes()})
    with pytest.raises(ValueError) as err:
        load_torch(path)
    msg = str(err.value)
    assert str(path) in msg and f"refusing to load global '{refused}'" in msg
    assert not marker.exists()
    with pytest.raises(ValueError):
        read_torch_state_dict(path)
    assert not marker.exists()


POISON = {
    # BUILD opcodes trying to modify the shared stand-in objects for later loads
    "storage tag slot state": _g("torch", "FloatStorage") + b"N}(" + _s("dtype") + _i(5) + b"u\x86b.",
    "storage tag dict state": _g("torch", "FloatStorage") + b"}(" + _s("dtype") + _i(5) + b"ub.",
    "function defaults": _g("torch._utils", "_rebuild_tensor_v2") + b"N}(" + _s("__defaults__") + b")u\x86b.",
    "OrderedDict class attr": _g("collections", "OrderedDict") + b"N}(" + _s("fromkeys") + _i(1) + b"u\x86b.",
}


@pytest.mark.parametrize("case", list(POISON))
def test_build_cannot_poison_later_loads(tmp_path, case):
    path = write_pt_zip(tmp_path / "p.pt", b"\x80\x02" + POISON[case], STORE4)
    with pytest.raises(ValueError, match="corrupt|not allowed|read-only"):
        read_torch_state_dict(path)
    layer = fastrnn.GRU(2, 3, seed=0)
    assert_bit_identical(outputs(load_torch(write_pt(tmp_path / "ok.pt", layer.state_dict()))), outputs(layer))


def test_hostile_pickles_really_are_live(tmp_path):
    """Sanity check of the fixtures: the plain pickle module *would* run the exec one."""
    marker = tmp_path / "pwned"
    pickle.loads(HOSTILE["builtins.exec (STACK_GLOBAL)"][0](marker))
    assert marker.exists()


# ------------------------------------------------------------------------------- bad structure
def _good_items():
    return [("w", tensor_pickle("0", "FloatStorage", 4, 0, (4,), (1,)))]


def _zip_with(path, entries, mode="w"):
    with zipfile.ZipFile(path, mode) as z:
        for name, data in entries.items():
            z.writestr(name, data)
BAD = {
    "not a zip": (lambda p: p.write_bytes(b"\x80\x02}q\x00."), "not a zip archive"),
    "empty file": (lambda p: p.write_bytes(b""), "not a zip archive"),
    "zip without data.pkl": (lambda p: _zip_with(p, {"archive/other": b"x"}), "no '<name>/data.pkl'"),
    "torchscript-like zip": (lambda p: _zip_with(p, {"archive/constants.pkl": b".", "archive/code/x.py": b""}),
                             "TorchScript"),
    "two data.pkl": (lambda p: [write_pt_zip(p, state_dict_pickle(_good_items()), STORE4),
                                _zip_with(p, {"other/data.pkl": b"."}, "a")], "several data.pkl"),
    "missing storage": (lambda p: write_pt_zip(p, state_dict_pickle(_good_items()), {}), "'data/0' is missing"),
    "storage too small": (lambda p: write_pt_zip(p, state_dict_pickle(_good_items()), {"0": b"\0" * 8}),
                          "has 8 bytes, 4 elements need 16"),
    "huge numel": (lambda p: write_pt_zip(p, state_dict_pickle([("w", tensor_pickle("0", "FloatStorage", 2 ** 31 - 1, 0,
                                                                                     (4,), (1,)))]), STORE4),
                   "need 8589934588"),
    "view past storage": (lambda p: write_pt_zip(p, state_dict_pickle([("w", tensor_pickle("0", "FloatStorage", 4, 2,
                                                                                            (3,), (1,)))]), STORE4),
                          "runs past its storage"),
    "huge broadcast view": (lambda p: write_pt_zip(p, state_dict_pickle(
        [("w", tensor_pickle("0", "FloatStorage", 4, 0, (2 ** 20, 2 ** 20), (0, 0)))]), STORE4), "implausibly large"),
    "negative stride": (lambda p: write_pt_zip(p, state_dict_pickle([("w", tensor_pickle("0", "FloatStorage", 4, 3,
                                                                                          (4,), (-1,)))]), STORE4),
                        "negative"),
    "size/stride mismatch": (lambda p: write_pt_zip(p, state_dict_pickle([("w", tensor_pickle("0", "FloatStorage", 4,
                                                                                               0, (2, 2), (1,)))]),
                                                    STORE4), "do not match"),
    "rebuild without storage": (lambda p: write_pt_zip(p, b"\x80\x02" + _g("torch._utils", "_rebuild_tensor_v2")
                                                       + _t([_i(1), _i(0), _t([]), _t([]), b"\x89", b"N"]) + b"R.",
                                                       STORE4), "not a storage reference"),
    "unknown persistent id": (lambda p: write_pt_zip(p, b"\x80\x02" + _t([_s("module"), _i(1)]) + b"Q.", STORE4),
                              "unsupported persistent id"),
    "bad byteorder": (lambda p: write_pt_zip(p, state_dict_pickle(_good_items()), STORE4, byteorder="middle"),
                      "unknown byteorder"),
    "list at top level": (lambda p: write_pt_zip(p, b"\x80\x02]q\x00.", STORE4), "holds a list"),
    "single tensor": (lambda p: write_pt_zip(p, b"\x80\x02" + tensor_pickle("0", "FloatStorage", 4, 0, (4,), (1,))
                                             + b".", STORE4), "single tensor"),
    "no rnn in dict": (lambda p: write_pt_zip(p, state_dict_pickle(_good_items()), STORE4), "no RNN parameters"),
    "bytearray8 bomb": (lambda p: write_pt_zip(p, b"\x80\x05\x96" + struct.pack("<Q", 2 ** 40) + b"x.", STORE4),
                        "corrupt data.pkl"),
    "memo bomb": (lambda p: write_pt_zip(p, b"\x80\x02N" + b"r" + struct.pack("<I", 2 ** 31) + b".", STORE4),
                  "implausible LONG_BINPUT"),
    "extension opcode": (lambda p: write_pt_zip(p, b"\x80\x02\x82\x01.", STORE4), "unsupported pickle opcode EXT1"),
    "truncated pickle": (lambda p: write_pt_zip(p, state_dict_pickle(_good_items())[:-7], STORE4), "corrupt"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_pt_files(tmp_path, case):
    build, msg = BAD[case]
    path = tmp_path / "bad.pt"
    build(path)
    with pytest.raises(ValueError, match=msg) as err:
        load_torch(path)
    assert str(path) in str(err.value)


def test_wrong_format_hints(tmp_path):
    layer = fastrnn.GRU(2, 3, seed=0)
    st = save(layer, tmp_path / "m.safetensors")
    pt = write_pt(tmp_path / "m.pt", layer.state_dict())
    with pytest.raises(ValueError, match="looks like a .safetensors file: use fastrnn.load"):
        load_torch(st)
    with pytest.raises(ValueError, match="zip archive.*use fastrnn.load_torch"):
        fastrnn._safetensors.load(pt)


def test_missing_file_is_filenotfound(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_torch(tmp_path / "nope.pt")


def test_truncations_and_mutations_only_raise_valueerror(tmp_path):
    layer = fastrnn.LSTM(2, 3, num_layers=2, seed=0)
    items, storages = [], {}
    for i, (k, v) in enumerate(layer.state_dict().items()):
        items.append((k, tensor_pickle(str(i), "FloatStorage", v.size, 0, v.shape, [s // 4 for s in v.strides])))
        storages[str(i)] = v.tobytes()
    pkl = state_dict_pickle(items)
    good = write_pt_zip(tmp_path / "good.pt", pkl, storages)
    raw = good.read_bytes()
    bad = tmp_path / "bad.pt"
    rng = np.random.default_rng(0)
    # truncated archives
    for cut in list(range(0, len(raw), 7)) + list(range(len(raw) - 64, len(raw))):
        bad.write_bytes(raw[:cut])
        with pytest.raises(ValueError):
            load_torch(bad)
    # byte flips anywhere in the archive (CRC / header damage)
    for pos in rng.integers(0, len(raw), 400):
        mutated = bytearray(raw)
        mutated[pos] ^= int(rng.integers(1, 256))
        bad.write_bytes(bytes(mutated))
        try:
            load_torch(bad)
        except ValueError:
            pass
    # mutations of data.pkl itself, re-zipped with valid CRCs, so the unpickler sees them
    ok = err = 0
    for pos in range(len(pkl)):
        for val in {int(rng.choice([0, 0x2E, 0x52, 0x63, 0x71, 0xFF])), int(rng.integers(256))}:
            if val == pkl[pos]:
                continue
            m = bytearray(pkl)
            m[pos] = val
            write_pt_zip(bad, bytes(m), storages)
            try:
                load_torch(bad)
                ok += 1
            except ValueError:
                err += 1
    assert err > 1000 and ok > 10
