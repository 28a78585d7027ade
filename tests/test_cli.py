"""The ``fastrnn`` command line (fastrnn/cli.py): info, convert, run, bench, demo, errors.

Most tests call ``fastrnn.cli.main(argv)`` in-process (fast); a few run ``python -m fastrnn``
(and the ``fastrnn`` console script when it is installed) in a subprocess.
"""
import io
import json
import os
import shutil
import subprocess
import sys
import types
import zipfile

import numpy as np
import pytest

import fastrnn
from fastrnn import cli
from fastrnn._safetensors import write_safetensors
from test_keras import write_legacy_h5

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *needles, status=1):
    assert rc == status, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fastrnn: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("FASTRNN_DEBUG", None)
    return env


def run_cmd(*argv, exe=None):
    cmd = (exe or [sys.executable, "-m", "fastrnn"]) + [str(a) for a in argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)


# ---------------------------------------------------------------------------------------------
# model files
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    lstm = fastrnn.LSTM(5, 8, num_layers=2, bidirectional=True, proj_size=3, seed=1)
    fastrnn.save(lstm, d / "lstm.safetensors")
    gru = fastrnn.GRU(4, 6, seed=2)
    rnn = fastrnn.RNN(6, 3, nonlinearity="relu", seed=3)
    sd = {f"enc.{k}": v for k, v in gru.state_dict().items()}
    sd.update({f"dec.{k}": v.astype(np.float16) for k, v in rnn.state_dict().items()})
    sd["head.weight"] = rng.standard_normal((2, 3)).astype(np.float32)
    write_safetensors(d / "two.safetensors", sd)
    np.save(d / "x.npy", rng.standard_normal((7, 2, 5)).astype(np.float32))
    np.save(d / "x_gru.npy", rng.standard_normal((6, 3, 4)).astype(np.float32))
    return types.SimpleNamespace(dir=d, lstm=lstm, gru=gru, rnn=rnn, rng=rng)


# -- Keras-3-layout files written with h5py (no Keras needed) --------------------------------
def _keras_layers(rng):
    def w(*shape):
        return rng.uniform(-0.5, 0.5, shape).astype(np.float32)
    return [
        ("LSTM", dict(name="lstm_a", units=3, activation="tanh", recurrent_activation="sigmoid",
                      use_bias=True, go_backwards=False, return_sequences=True), [w(5, 12), w(3, 12), w(12)]),
        ("GRU", dict(name="gru_back", units=4, activation="tanh", recurrent_activation="sigmoid",
                     use_bias=True, reset_after=True, go_backwards=True, return_sequences=True),
         [w(5, 12), w(4, 12), w(2, 12)]),
    ]


def _write_keras(path, layers, weights_path=None):
    h5py = pytest.importorskip("h5py")
    cfg = {"module": "keras", "class_name": "Sequential", "config": {"name": "seq", "layers": [
        {"module": "keras.layers", "class_name": "InputLayer",
         "config": {"batch_shape": [None, 7, 5], "name": "input"}}] + [
        {"module": "keras.layers", "class_name": c, "config": dict(k)} for c, k, _ in layers]}}
    b = io.BytesIO()
    with h5py.File(b, "w") as f:
        used = {}
        for cls, c, ws in layers:
            key = cls.lower()
            used[key] = used.get(key, -1) + 1
            if used[key]:
                key = f"{key}_{used[key]}"
            f.create_group(f"layers/{key}/vars").attrs["name"] = c["name"]
            g = f.create_group(f"layers/{key}/cell/vars")
            for i, a in enumerate(ws):
                g.create_dataset(str(i), data=a)
        f.create_group("vars")
    if weights_path is not None:
        weights_path.write_bytes(b.getvalue())
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
        zf.writestr("config.json", json.dumps(cfg))
        zf.writestr("model.weights.h5", b.getvalue())
    return cfg


@pytest.fixture(scope="module")
def keras_files(files):
    pytest.importorskip("h5py")
    layers = _keras_layers(np.random.default_rng(5))
    cfg = _write_keras(files.dir / "m.keras", layers, weights_path=files.dir / "m.weights.h5")
    write_legacy_h5(files.dir / "legacy.h5", cfg, layers)
    (files.dir / "m_config.json").write_text(json.dumps(cfg))
    (files.dir / "lstm_config.json").write_text(json.dumps({"class_name": "LSTM", "config": layers[0][1]}))
    return types.SimpleNamespace(keras=files.dir / "m.keras", weights=files.dir / "m.weights.h5",
                                 legacy=files.dir / "legacy.h5",
                                 config=files.dir / "m_config.json", lstm_config=files.dir / "lstm_config.json",
                                 layers=layers)


# -- ONNX: an LSTM feeding a bidirectional GRU, and a reverse LSTM ---------------------------
@pytest.fixture(scope="module")
def onnx_files(files):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    I, H = 5, 4

    def init(name, *shape):
        return numpy_helper.from_array(rng.uniform(-0.5, 0.5, shape).astype(np.float32), name)

    inits = [init("W", 1, 4 * H, I), init("R", 1, 4 * H, H), init("B", 1, 8 * H),
             init("gW", 2, 3 * H, H), init("gR", 2, 3 * H, H),
             numpy_helper.from_array(np.array([1], np.int64), "axes")]
    nodes = [helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y", "Y_h", "Y_c"], name="encoder", hidden_size=H),
             helper.make_node("Squeeze", ["Y", "axes"], ["Ys"]),
             helper.make_node("GRU", ["Ys", "gW", "gR"], ["GY"], name="decoder", hidden_size=H,
                              direction="bidirectional")]
    xin = [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)]
    g = helper.make_graph(nodes, "g", xin, [helper.make_tensor_value_info("GY", TensorProto.FLOAT, None)], inits)
    two = files.dir / "two.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)]), str(two))
    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], name="rev", hidden_size=H, direction="reverse")
    g = helper.make_graph([node], "g", xin, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits[:3])
    rev = files.dir / "rev.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)]), str(rev))
    return types.SimpleNamespace(two=two, rev=rev)


@pytest.fixture(scope="module")
def torch_files(files):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    mod = torch.nn.LSTM(5, 6, num_layers=2, bidirectional=True)
    pt = files.dir / "lstm.pt"
    torch.save(mod.state_dict(), pt)
    gru = torch.nn.GRU(4, 3)
    bf = files.dir / "gru_bf16.pt"
    torch.save({k: v.bfloat16() for k, v in gru.state_dict().items()}, bf)
    return types.SimpleNamespace(pt=pt, mod=mod, bf=bf, torch=torch)


# ---------------------------------------------------------------------------------------------
# info
# ---------------------------------------------------------------------------------------------
def test_info_fastrnn_file(files, capsys):
    rc, out, err = run_main(capsys, "info", files.dir / "lstm.safetensors")
    assert rc == 0, err
    for s in ("fastrnn .safetensors", "LSTM", "num_layers:  2", "directions:  2 (bidirectional)",
              "input_size:  5", "hidden_size: 8", "proj_size:   3", "float32",
              f"{files.lstm.parameters_count():,}"):
        assert s in out, (s, out)
    rc, out, err = run_main(capsys, "info", "--json", files.dir / "lstm.safetensors")
    assert rc == 0, err
    info = json.loads(out)
    assert info["format"] == "fastrnn"
    (layer,) = info["layers"]
    assert {k: layer[k] for k in ("cell", "num_layers", "directions", "input_size", "hidden_size",
                                  "proj_size", "dtype", "parameters")} == dict(
        cell="LSTM", num_layers=2, directions=2, input_size=5, hidden_size=8, proj_size=3, dtype="float32",
        parameters=files.lstm.parameters_count())
    assert info["parameters"] == files.lstm.parameters_count()


def test_model_files(files, capsys):
    """A whole-model file (fastrnn.save_model, like the bundled demo models): info lists the
    model and its recurrent layers; convert and run take its recurrent layer, and say so."""
    import fastrnn.models as fm
    path = files.dir / "lm.safetensors"
    model = fm.Sequential(fm.Embedding(11, 5, seed=0), fastrnn.GRU(5, 7, batch_first=True, seed=1),
                          fm.Linear(7, 11, seed=2))
    fm.save_model(model, path)
    rc, out, err = run_main(capsys, "info", "--json", path)
    assert rc == 0, err
    info = json.loads(out)
    assert info["format"] == "fastrnn-model" and [d["name"] for d in info["layers"]] == ["1"]
    assert info["layers"][0]["cell"] == "GRU" and "Embedding(11, 5) -> GRU" in info["metadata"]["model"]
    out_path = files.dir / "lm_gru.safetensors"
    rc, out, err = run_main(capsys, "convert", path, out_path)
    assert rc == 0 and "warning" in err and "GRU layer '1' alone" in err, err
    x = np.random.default_rng(0).standard_normal((2, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(fastrnn.load(out_path)(x)[0], model.modules[1](x)[0])
    np.save(files.dir / "lm_x.npy", x)
    rc, out, err = run_main(capsys, "run", path, "--input", files.dir / "lm_x.npy",
                            "--output", files.dir / "lm_y.npy")
    assert rc == 0 and "alone (fastrnn.load_model runs the whole model)" in err, err
    np.testing.assert_array_equal(np.load(files.dir / "lm_y.npy"), model.modules[1](x)[0])
    # the bundled demo models
    for name in ("char_lm", "forecaster"):
        bundled = os.path.join(os.path.dirname(fastrnn.__file__), "models", f"{name}.safetensors")
        rc, out, err = run_main(capsys, "info", bundled)
        assert rc == 0 and "LSTM" in out, err
    # a model without a recurrent layer: said so
    fm.save_model(fm.Sequential(fm.Linear(3, 2, seed=0)), files.dir / "lin.safetensors")
    rc, out, err = run_main(capsys, "info", files.dir / "lin.safetensors")
    assert_one_line_error(rc, err, "no LSTM/GRU/RNN layer", "Linear")


def test_info_plain_state_dict_safetensors(files, capsys):
    rc, out, err = run_main(capsys, "info", "--json", "--nonlinearity", "relu", files.dir / "two.safetensors")
    assert rc == 0, err
    info = json.loads(out)
    assert info["format"] == "safetensors"
    layers = {d["name"]: d for d in info["layers"]}
    assert set(layers) == {"enc", "dec"}
    assert layers["enc"]["cell"] == "GRU" and layers["enc"]["options"]["linear_before_reset"] is True
    assert layers["enc"]["parameters"] == files.gru.parameters_count()
    assert layers["dec"]["cell"] == "RNN" and layers["dec"]["dtype"] == "float16"
    assert layers["dec"]["options"]["nonlinearity"] == "relu"
    rc, out, err = run_main(capsys, "info", "--json", "--name", "dec", files.dir / "two.safetensors")
    assert rc == 0 and [d["name"] for d in json.loads(out)["layers"]] == ["dec"]
    rc, out, err = run_main(capsys, "info", "--index", "5", files.dir / "two.safetensors")
    assert_one_line_error(rc, err, "--index 5", "'dec'", "'enc'")
    rc, out, err = run_main(capsys, "info", "--name", "nope", files.dir / "two.safetensors")
    assert_one_line_error(rc, err, "'nope'", "'dec'", "'enc'")


def test_info_torch_pt(torch_files, capsys):
    rc, out, err = run_main(capsys, "info", "--json", torch_files.pt)
    assert rc == 0, err
    info = json.loads(out)
    assert info["format"] == "torch"
    (d,) = info["layers"]
    assert (d["cell"], d["num_layers"], d["directions"], d["input_size"], d["hidden_size"]) == ("LSTM", 2, 2, 5, 6)
    assert d["parameters"] == sum(p.numel() for p in torch_files.mod.parameters())
    assert d["dtype"] == "float32"
    rc, out, err = run_main(capsys, "info", torch_files.bf)
    assert rc == 0, err
    assert "bfloat16" in out and "GRU" in out


def test_info_keras(keras_files, capsys):
    rc, out, err = run_main(capsys, "info", "--json", keras_files.keras)
    assert rc == 0, err
    info = json.loads(out)
    assert info["format"] == "keras"
    assert [d["name"] for d in info["layers"]] == ["lstm_a", "gru_back"]
    assert info["layers"][1]["keras"]["go_backwards"] is True
    assert info["layers"][0]["batch_first"] is True and info["layers"][0]["hidden_size"] == 3
    # .weights.h5 needs --config: a file, or an inline JSON string
    rc, out, err = run_main(capsys, "info", keras_files.weights)
    assert_one_line_error(rc, err, "--config")
    rc, out, err = run_main(capsys, "info", "--json", keras_files.weights, "--config", keras_files.config)
    assert rc == 0, err
    assert json.loads(out)["format"] == "keras-weights" and len(json.loads(out)["layers"]) == 2
    inline = keras_files.lstm_config.read_text()
    rc, out, err = run_main(capsys, "info", keras_files.weights, "--config", inline)
    assert rc == 0, err
    assert "lstm_a" in out and "Keras 3 .weights.h5" in out
    rc, out, err = run_main(capsys, "info", keras_files.weights, "--config", "{not json")
    assert_one_line_error(rc, err, "--config", "JSON")
    # a legacy .h5 model carries its architecture: no --config, same layers and numbers
    rc, out, err = run_main(capsys, "info", "--json", keras_files.legacy)
    assert rc == 0, err
    assert json.loads(out)["format"] == "keras-h5"
    assert [d["name"] for d in json.loads(out)["layers"]] == ["lstm_a", "gru_back"]
    x = np.random.default_rng(0).standard_normal((2, 7, 5)).astype(np.float32)
    for a, b in zip(fastrnn.from_keras(keras_files.legacy), fastrnn.from_keras(keras_files.keras)):
        np.testing.assert_array_equal(a(x)[0], b(x)[0])


def test_info_onnx(onnx_files, capsys):
    rc, out, err = run_main(capsys, "info", "--json", onnx_files.two)
    assert rc == 0, err
    info = json.loads(out)
    assert info["format"] == "onnx"
    enc, dec = info["layers"]
    assert (enc["name"], enc["cell"], enc["directions"], enc["input_size"]) == ("encoder", "LSTM", 1, 5)
    assert (dec["name"], dec["cell"], dec["directions"]) == ("decoder", "GRU", 2)
    assert dec["options"]["linear_before_reset"] is False
    assert enc["dtype"] == "float32"
    rc, out, err = run_main(capsys, "info", onnx_files.rev)
    assert rc == 0, err
    assert "direction=reverse" in out


# ---------------------------------------------------------------------------------------------
# convert
# ---------------------------------------------------------------------------------------------
def test_convert_torch_pt(torch_files, files, capsys):
    torch = torch_files.torch
    dst = files.dir / "from_pt.safetensors"
    rc, out, err = run_main(capsys, "convert", torch_files.pt, dst)
    assert rc == 0, err
    assert "wrote" in out
    layer = fastrnn.load(dst)
    x = np.random.default_rng(1).standard_normal((9, 2, 5)).astype(np.float32)
    with torch.no_grad():
        ref = torch_files.mod(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(layer(x)[0], ref, atol=1e-5)
    rc, out, err = run_main(capsys, "info", "--json", dst)
    meta = json.loads(out)["metadata"]
    assert meta["fastrnn_source"] == "lstm.pt" and meta["fastrnn_source_format"] == "torch"
    # --batch-first
    rc, out, err = run_main(capsys, "convert", "-q", "--batch-first", torch_files.pt, dst)
    assert rc == 0 and out == ""
    assert fastrnn.load(dst).batch_first


def test_convert_state_dict_safetensors_needs_a_choice(files, capsys):
    dst = files.dir / "picked.safetensors"
    rc, out, err = run_main(capsys, "convert", files.dir / "two.safetensors", dst)
    assert_one_line_error(rc, err, "--name", "'dec'", "'enc'")
    assert not dst.exists()
    rc, out, err = run_main(capsys, "convert", "--name", "enc", files.dir / "two.safetensors", dst)
    assert rc == 0, err
    got = fastrnn.load(dst).state_dict()
    for k, v in files.gru.state_dict().items():
        assert np.array_equal(got[k], v)


def test_convert_keras(keras_files, files, capsys):
    from fastrnn._keras import from_keras

    dst = files.dir / "k.safetensors"
    rc, out, err = run_main(capsys, "convert", keras_files.keras, dst)
    assert_one_line_error(rc, err, "lstm_a", "gru_back")
    rc, out, err = run_main(capsys, "convert", keras_files.keras, dst, "--name", "gru_back")
    assert_one_line_error(rc, err, "go_backwards")
    rc, out, err = run_main(capsys, "convert", keras_files.keras, dst, "--index", "0")
    assert rc == 0, err
    x = np.random.default_rng(2).standard_normal((2, 7, 5)).astype(np.float32)
    ref = from_keras(keras_files.keras)[0](x)[0]
    layer = fastrnn.load(dst)
    assert layer.batch_first
    assert np.array_equal(layer(x)[0], ref)
    rc, out, err = run_main(capsys, "convert", keras_files.weights, dst, "--config", keras_files.lstm_config)
    assert rc == 0, err
    assert np.array_equal(fastrnn.load(dst)(x)[0], ref)


def test_convert_onnx(onnx_files, files, capsys):
    dst = files.dir / "o.safetensors"
    rc, out, err = run_main(capsys, "convert", onnx_files.two, dst)
    assert_one_line_error(rc, err, "'encoder'", "'decoder'")
    rc, out, err = run_main(capsys, "convert", onnx_files.two, dst, "--name", "decoder")
    assert rc == 0, err
    node = fastrnn.from_onnx(onnx_files.two, name="decoder")
    x = np.random.default_rng(3).standard_normal((6, 2, 4)).astype(np.float32)
    Y = node.run(x)[0]  # (T, D, B, H)
    out_ = fastrnn.load(dst)(x)[0]  # (T, B, D*H)
    assert np.array_equal(out_, Y.transpose(0, 2, 1, 3).reshape(6, 2, -1))
    rc, out, err = run_main(capsys, "convert", onnx_files.two, dst, "--index", "0")
    assert rc == 0, err
    rc, out, err = run_main(capsys, "convert", onnx_files.rev, dst)
    assert_one_line_error(rc, err, "reverse")


def test_convert_refuses_to_overwrite_its_input(files, capsys):
    src = files.dir / "lstm.safetensors"
    before = src.read_bytes()
    rc, out, err = run_main(capsys, "convert", src, src)
    assert_one_line_error(rc, err, "overwrite")
    assert src.read_bytes() == before


# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------
def test_run_matches_the_layer(files, capsys):
    d, layer = files.dir, files.lstm
    x = np.load(d / "x.npy")
    rng = np.random.default_rng(4)
    h0 = rng.standard_normal((4, 2, 3)).astype(np.float32)
    c0 = rng.standard_normal((4, 2, 8)).astype(np.float32)
    np.save(d / "h0.npy", h0)
    np.save(d / "c0.npy", c0)
    np.save(d / "len.npy", np.array([7, 3]))
    rc, out, err = run_main(capsys, "run", d / "lstm.safetensors", "--input", d / "x.npy", "--lengths",
                            d / "len.npy", "--h0", d / "h0.npy", "--c0", d / "c0.npy", "--output", d / "y.npy",
                            "--states-output", d / "s.npz")
    assert rc == 0, err
    ref, (h, c) = layer(x, (h0, c0), lengths=[7, 3])
    assert np.array_equal(np.load(d / "y.npy"), ref)
    with np.load(d / "s.npz") as s:
        assert set(s.keys()) == {"h_n", "c_n"}
        assert np.array_equal(s["h_n"], h) and np.array_equal(s["c_n"], c)
    # lengths as a comma list
    rc, out, err = run_main(capsys, "run", d / "lstm.safetensors", "-i", d / "x.npy", "--lengths", "7,3",
                            "--h0", d / "h0.npy", "--c0", d / "c0.npy", "-o", d / "y2.npy")
    assert rc == 0, err
    assert np.array_equal(np.load(d / "y2.npy"), ref)


def test_run_streaming_with_states_input(files, capsys):
    d = files.dir
    x = np.load(d / "x_gru.npy")
    np.save(d / "xa.npy", x[:4])
    np.save(d / "xb.npy", x[4:])
    rc, _, err = run_main(capsys, "run", d / "two.safetensors", "--name", "enc", "-i", d / "xa.npy",
                          "-o", d / "ya.npy", "--states-output", d / "sa.npz")
    assert rc == 0, err
    rc, _, err = run_main(capsys, "run", d / "two.safetensors", "--name", "enc", "-i", d / "xb.npy",
                          "-o", d / "yb.npy", "--states-input", d / "sa.npz", "--states-output", d / "sb.npz")
    assert rc == 0, err
    ref, h = files.gru(x)
    assert np.array_equal(np.concatenate([np.load(d / "ya.npy"), np.load(d / "yb.npy")]), ref)
    with np.load(d / "sb.npz") as s:
        assert list(s.keys()) == ["h_n"] and np.array_equal(s["h_n"], h)


def test_run_threads_and_isa_give_the_same_numbers(files, capsys):
    d = files.dir
    old = fastrnn.get_num_threads(), fastrnn.get_isa()
    try:
        outs = []
        for extra in (["--threads", "1", "--isa", "scalar"], ["--threads", "2"]):
            rc, _, err = run_main(capsys, "run", d / "lstm.safetensors", "-i", d / "x.npy", "-o", d / "yt.npy",
                                  "-q", *extra)
            assert rc == 0, err
            outs.append(np.load(d / "yt.npy"))
        np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)
    finally:
        fastrnn.set_num_threads(old[0])
        fastrnn.set_isa(old[1])


def test_run_onnx_and_keras_use_their_semantics(onnx_files, keras_files, files, capsys):
    from fastrnn._keras import from_keras

    d = files.dir
    x = np.random.default_rng(5).standard_normal((6, 2, 5)).astype(np.float32)
    np.save(d / "xo.npy", x)
    rc, _, err = run_main(capsys, "run", onnx_files.two, "--name", "encoder", "-i", d / "xo.npy",
                          "--lengths", "6,2", "-o", d / "yo.npy", "--states-output", d / "so.npz")
    assert rc == 0, err
    Y, Y_h, Y_c = fastrnn.from_onnx(onnx_files.two, name="encoder").run(x, np.array([6, 2]))
    assert np.array_equal(np.load(d / "yo.npy"), Y)
    with np.load(d / "so.npz") as s:
        assert np.array_equal(s["h_n"], Y_h) and np.array_equal(s["c_n"], Y_c)
    xk = np.random.default_rng(6).standard_normal((2, 7, 5)).astype(np.float32)
    np.save(d / "xk.npy", xk)
    rc, _, err = run_main(capsys, "run", keras_files.keras, "--name", "gru_back", "-i", d / "xk.npy",
                          "-o", d / "yk.npy")
    assert rc == 0, err
    assert np.array_equal(np.load(d / "yk.npy"), from_keras(keras_files.keras)[1](xk)[0])


@pytest.mark.parametrize("case", ["bad_shape", "bad_dtype", "missing_input", "npz_input", "lstm_h0_only",
                                  "gru_c0", "bad_lengths", "lengths_text", "missing_output_dir",
                                  "states_not_npz", "states_and_h0", "states_h_only"])
def test_run_errors_are_one_line(files, capsys, case):
    d = files.dir
    np.save(d / "bad.npy", np.zeros((3, 2, 7), np.float32))
    np.save(d / "str.npy", np.array(["a", "b"]))
    np.savez(d / "arch.npz", a=np.zeros(3))
    np.save(d / "h0_gru.npy", np.zeros((1, 3, 6), np.float32))
    np.savez(d / "st_h.npz", h_n=np.zeros((4, 2, 3), np.float32))
    base = ["run", d / "lstm.safetensors", "-i", d / "x.npy"]
    argv, needle = {
        "bad_shape": (["run", d / "lstm.safetensors", "-i", d / "bad.npy"], "input_size"),
        "bad_dtype": (["run", d / "lstm.safetensors", "-i", d / "str.npy"], "dtype"),
        "missing_input": (["run", d / "lstm.safetensors", "-i", d / "nope.npy"], "nope.npy"),
        "npz_input": (["run", d / "lstm.safetensors", "-i", d / "arch.npz"], ".npz"),
        "lstm_h0_only": (base + ["--h0", d / "h0_gru.npy"], "--c0"),
        "gru_c0": (["run", d / "two.safetensors", "--name", "enc", "-i", d / "x_gru.npy", "--h0", d / "h0_gru.npy",
                    "--c0", d / "h0_gru.npy"], "cell state"),
        "bad_lengths": (base + ["--lengths", "9,1"], "length"),
        "lengths_text": (base + ["--lengths", "a,b"], "--lengths"),
        "missing_output_dir": (base + ["-o", d / "no" / "such" / "dir" / "y.npy"], "y.npy"),
        "states_not_npz": (base + ["--states-input", d / "x.npy"], ".npz"),
        "states_and_h0": (base + ["--states-input", d / "arch.npz", "--h0", d / "h0_gru.npy"], "--h0"),
        "states_h_only": (base + ["--states-input", d / "st_h.npz"], "st_h.npz has h_n but no c_n"),
    }[case]
    rc, out, err = run_main(capsys, *argv)
    assert_one_line_error(rc, err, needle, status=2 if case == "states_and_h0" else 1)


# ---------------------------------------------------------------------------------------------
# errors and debug
# ---------------------------------------------------------------------------------------------
def test_error_handling(files, capsys, tmp_path):
    rc, out, err = run_main(capsys, "info", tmp_path / "missing.safetensors")
    assert_one_line_error(rc, err, "no such file", "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    rc, out, err = run_main(capsys, "info", junk)
    assert_one_line_error(rc, err, "junk.safetensors")
    odd = tmp_path / "model.xyz"
    odd.write_bytes(b"hello")
    rc, out, err = run_main(capsys, "info", odd)
    assert_one_line_error(rc, err, "--format")
    rc, out, err = run_main(capsys, "info", tmp_path)
    assert_one_line_error(rc, err, "directory")
    # usage errors: exit status 2, still one line
    rc, out, err = run_main(capsys, "frobnicate")
    assert_one_line_error(rc, err, "frobnicate", status=2)
    rc, out, err = run_main(capsys, "run", files.dir / "lstm.safetensors")
    assert_one_line_error(rc, err, "--input", status=2)
    rc, out, err = run_main(capsys, "info", files.dir / "lstm.safetensors", "--bogus")
    assert_one_line_error(rc, err, "--bogus", status=2)
    # --debug: the traceback too
    rc, out, err = run_main(capsys, "--debug", "info", junk)
    assert rc == 1 and "Traceback" in err and err.strip().splitlines()[-1].startswith("fastrnn: error: ")
    rc, out, err = run_main(capsys, "info", junk, "--debug")
    assert rc == 1 and "Traceback" in err


def test_help_and_version(capsys):
    rc, out, err = run_main(capsys, "--help")
    assert rc == 0 and all(c in out for c in ("info", "convert", "run", "bench", "demo"))
    rc, out, err = run_main(capsys, "run", "--help")
    assert rc == 0 and "--states-output" in out
    rc, out, err = run_main(capsys, "--version")
    assert rc == 0 and fastrnn.__version__ in out
    rc, out, err = run_main(capsys)
    assert rc == 2 and "COMMAND" in err


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------
def test_demo_dispatch(capsys, monkeypatch):
    calls = []
    fake = types.ModuleType("fastrnn.demo")
    fake.main = lambda argv: calls.append(list(argv)) or 0
    monkeypatch.setitem(sys.modules, "fastrnn.demo", fake)
    rc, out, err = run_main(capsys, "demo", "--fast", "x")
    assert rc == 0 and calls == [["--fast", "x"]]


def test_demo_missing_is_one_clear_line(capsys, monkeypatch):
    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(cli.importlib, "import_module", missing)
    rc, out, err = run_main(capsys, "demo")
    assert_one_line_error(rc, err, "demo")

    def broken(name):
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")

    monkeypatch.setattr(cli.importlib, "import_module", broken)
    rc, out, err = run_main(capsys, "demo", "--x")
    assert_one_line_error(rc, err, "matplotlib")


# ---------------------------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------------------------
def test_bench_builtin_grid(capsys):
    rc, out, err = run_main(capsys, "bench", "--builtin", "--cells", "lstm,rnn", "--shapes", "5,1,8;4,2,6,3",
                            "--min-time", "0.001", "--against", "torch", "--threads", "1", "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert [(r["cell"], r["T"], r["B"], r["H"], r["I"]) for r in res["rows"]] == [
        ("lstm", 5, 1, 8, 8), ("lstm", 4, 2, 6, 3), ("rnn", 5, 1, 8, 8), ("rnn", 4, 2, 6, 3)]
    for r in res["rows"]:
        assert r["engines"]["fastrnn"]["ms"] > 0
        if "ms" in r["engines"]["torch"]:
            assert r["agree"]
    rc, out, err = run_main(capsys, "bench", "--builtin", "--cells", "gru", "--shapes", "3,1,4",
                            "--min-time", "0.001", "--against", "onnxruntime")
    assert rc == 0, err
    assert "fastrnn ms" in out and "onnxruntime" in out  # skipped with a note


def test_bench_model_file(files, capsys):
    rc, out, err = run_main(capsys, "bench", files.dir / "lstm.safetensors", "--batch", "2", "--steps", "3",
                            "--min-time", "0.001", "--against", "torch,onnxruntime", "--threads", "1", "--json")
    assert rc == 0, err
    res = json.loads(out)
    (row,) = res["rows"]
    assert (row["T"], row["B"], row["H"], row["I"], row["directions"]) == (3, 2, 8, 5, 2)
    assert "skipped" in row["engines"]["onnxruntime"]  # two stacked layers: no single ONNX node


@pytest.mark.skipif(not os.path.isfile(os.path.join(ROOT, "benchmarks", "compare.py")),
                    reason="no benchmarks/compare.py in this checkout")
def test_bench_uses_benchmarks_compare(capsys, monkeypatch):
    mod = cli._load_compare_module()
    assert mod is not None and hasattr(mod, "run_comparison")
    seen = {}
    real = mod.run_comparison

    def spy(*a, **k):
        seen.update(k)
        return real(*a, **k)

    monkeypatch.setattr(cli, "_load_compare_module", lambda: mod)
    monkeypatch.setattr(mod, "run_comparison", spy)
    rc, out, err = run_main(capsys, "bench", "--cells", "rnn", "--shapes", "4,1,8", "--min-time", "0.001",
                            "--against", "torch", "--threads", "1", "--json")
    assert rc == 0, err
    assert seen["threads"] == 1 and seen["engines"] == ["fastrnn", "torch"]
    (row,) = json.loads(out)["rows"]
    assert (row["cell"], row["T"], row["B"], row["H"]) == ("rnn", 4, 1, 8)


@pytest.mark.skipif(not os.path.isfile(os.path.join(ROOT, "benchmarks", "compare.py")),
                    reason="no benchmarks/compare.py in this checkout")
def test_compare_engines_take_turns(monkeypatch):
    """With rounds, the engines of a shape are timed in turns (the order rotating), each turn
    after a warm-up call, and an engine's median is over the calls of all its turns."""
    mod = cli._load_compare_module()
    turns, peer_calls = [], []

    def fake_engine(name, cell, sd, x, threads, bidirectional, onnx_path, onnx_model, dtype="fp32"):
        layer = fastrnn.RNN(x.shape[2], sd["weight_hh_l0"].shape[0])
        layer.load_state_dict(sd)

        def call():
            peer_calls.append(name)
            return layer(x)

        return call, lambda r: (r[0], r[1])

    monkeypatch.setattr(mod, "make_engine", fake_engine)
    rows = mod.run_comparison(["rnn"], [(3, 2, 8)], threads=1, engines=["fastrnn", "torch"], repeat=5,
                              rounds=3, min_time=0.0, warmup=2, pause=0.0, limits=None,
                              retries=0,  # on a busy machine, disturbed turns would be re-timed
                              progress=lambda msg: turns.append(msg))
    order = [m.rsplit(": ", 1)[1] for m in turns if "(round " in m]
    assert order == ["fastrnn (round 1/3)", "torch (round 1/3)", "torch (round 2/3)",
                     "fastrnn (round 2/3)", "fastrnn (round 3/3)", "torch (round 3/3)"]
    (row,) = rows
    for eng in ("fastrnn", "torch"):
        assert row["engines"][eng]["calls"] == 3 * 2   # ceil(5 / 3) calls per turn
    assert row["engines"]["torch"]["max_abs_diff"] == 0.0
    # the agreement call, then per turn a warm-up call and the timed calls
    assert len(peer_calls) == 1 + 3 * (1 + 2)
    with pytest.raises(ValueError, match="rounds"):
        mod.run_comparison(["rnn"], [(3, 2, 8)], engines=["fastrnn"], rounds=0, progress=False)


@pytest.mark.skipif(not os.path.isfile(os.path.join(ROOT, "benchmarks", "compare.py")),
                    reason="no benchmarks/compare.py in this checkout")
def test_compare_retimes_disturbed_turns(monkeypatch):
    """A turn during which other processes took the CPU is timed again after waiting for quiet,
    at most ``retries`` times, and the least disturbed timing is the one kept."""
    mod = cli._load_compare_module()
    monkeypatch.setattr(mod.os, "cpu_count", lambda: 2)
    shares = iter([0.9, 0.6, 0.8])     # threads=2 on 2 CPUs: disturbance = share of the machine
    attempts, waits = [], []

    def fake_time_calls(fn, *, warmup, repeat, min_time, max_calls):
        fn()
        others = next(shares)
        attempts.append(warmup)
        return {"median_s": others * 1e-3, "min_s": others * 1e-3, "calls": 1,
                "times": [others * 1e-3], "others": others}

    monkeypatch.setattr(mod, "time_calls", fake_time_calls)
    monkeypatch.setattr(mod, "wait_until_quiet", lambda *a, **k: waits.append(k) or 0.0)
    (row,) = mod.run_comparison(["rnn"], [(3, 1, 8)], threads=2, engines=["fastrnn"], repeat=1,
                                rounds=1, min_time=0.0, warmup=1, pause=0.0, limits=None,
                                retries=2, busy_threshold=0.2, progress=False)
    assert attempts == [0, 1, 1]       # warmup - 1 first (the agreement call warmed it), then 1
    assert len(waits) == 2             # waited for quiet before each re-timing
    res = row["engines"]["fastrnn"]
    assert res["others"] == 0.6 and res["ms"] == pytest.approx(0.6)   # the least disturbed kept
    # a quiet turn is not timed again
    shares = iter([0.1])
    attempts.clear()
    mod.run_comparison(["rnn"], [(3, 1, 8)], threads=2, engines=["fastrnn"], repeat=1, rounds=1,
                       min_time=0.0, warmup=1, pause=0.0, limits=None, retries=2, progress=False)
    assert attempts == [0]


@pytest.mark.skipif(not os.path.isfile(os.path.join(ROOT, "benchmarks", "compare.py")),
                    reason="no benchmarks/compare.py in this checkout")
def test_compare_batch1_bound(monkeypatch):
    """The batch-1 bound: W_hh read from L2 (from beyond L2 where it does not fit the L2s) plus
    the step's share of the input projection at the sgemm rate (fp32 only), against a call's
    time over T."""
    mod = cli._load_compare_module()
    limits = {"cpus": 2, "sgemm_gflops": {1: 100.0, 2: 200.0}, "l2_read_gbs": {1: 50.0, 2: 100.0},
              "mem_read_gbs": {1: 10.0, 2: 20.0}, "l2_bytes_per_core": 2 << 20}
    row = {"cell": "lstm", "T": 100, "B": 1, "H": 256, "I": 128, "directions": 1, "dtype": "fp32",
           "engines": {"fastrnn": {"ms": 1.0}}}
    mod._finish_row(row, limits, 2)
    whh = 4 * 256 * 256 * 4
    assert row["l2_bound_us"] == pytest.approx(whh / 100e9 * 1e6)
    assert row["proj_bound_us"] == pytest.approx(2 * 4 * 256 * 128 / 200e9 * 1e6)
    assert row["bound_us"] == pytest.approx(row["l2_bound_us"] + row["proj_bound_us"])
    assert row["step_us"] == pytest.approx(10.0)
    assert row["x_bound"] == pytest.approx(10.0 / row["bound_us"])
    table = mod.format_bound_table([row])
    assert f"{row['bound_us']:.2f}" in table and f"{row['x_bound']:.2f}" in table
    q = dict(row, dtype="int8", engines={"fastrnn": {"ms": 1.0}})
    mod._finish_row(q, limits, 1)
    assert q["proj_bound_us"] == 0.0 and q["l2_bound_us"] == pytest.approx(whh / 4 / 50e9 * 1e6)
    # W_hh beyond the L2s of the threads used: the bound reads it from beyond L2
    big = dict(row, H=1024, engines={"fastrnn": {"ms": 10.0}})
    mod._finish_row(big, limits, 2)
    whh = 4 * 1024 * 1024 * 4
    assert big["whh_fits_l2"] is False
    assert big["mem_bound_us"] == pytest.approx(whh / 20e9 * 1e6 + big["proj_bound_us"])
    assert big["bound_us"] == big["mem_bound_us"] and big["x_bound"] == pytest.approx(100.0 / big["bound_us"])
    assert row["whh_fits_l2"] is True and row["mem_bound_us"] > row["bound_us"]
    assert big["mem_read_gbs"] == 20.0 and "| 20 |" in mod.format_bound_table([big])
    # where each thread's slice was measured streaming back and forth (on the threads used),
    # that rate: 16 MB over 2 threads, 8 MB each
    streamed = dict(limits, stream_threads=2, stream_read_gbs={str(8 << 20): 40.0, str(4 << 20): 99.0})
    b2 = dict(big, engines={"fastrnn": {"ms": 10.0}})
    mod._finish_row(b2, streamed, 2)
    assert b2["mem_bound_us"] == pytest.approx(whh / 40e9 * 1e6 + big["proj_bound_us"])
    assert b2["bound_us"] == b2["mem_bound_us"] and b2["mem_read_gbs"] == 40.0
    bi = dict(big, directions=2, engines={"fastrnn": {"ms": 10.0}})   # a direction at a time: 8 MB each
    mod._finish_row(bi, streamed, 2)
    assert bi["mem_read_gbs"] == 40.0 and bi["whh_bytes"] == 2 * whh
    one = dict(big, engines={"fastrnn": {"ms": 10.0}})   # measured on 2 threads, not this row's 1
    mod._finish_row(one, streamed, 1)
    assert one["mem_read_gbs"] == 10.0
    assert mod.stream_slice_bytes(whh, 1, 2) == 8 << 20 and mod.stream_slice_bytes(2 * whh, 2, 2) == 8 << 20
    # the slices to measure: batch-1 rows whose W_hh does not fit the L2s of the threads used
    monkeypatch.setattr(mod, "l2_bytes_per_core", lambda: 1 << 20)
    monkeypatch.setattr(mod, "available_cpus", lambda: 2)
    shapes = [(100, 1, 256), (100, 1, 1024), (100, 64, 1024)]
    assert mod.stream_sizes(["lstm", "rnn"], shapes, 2) == [2 << 20, 8 << 20]
    assert mod.stream_sizes(["lstm"], shapes, 2, directions=2) == [8 << 20]
    assert mod.stream_sizes(["lstm"], shapes, 1) == [16 << 20]   # (1 MB fits a 1 MB L2)


@pytest.mark.skipif(not os.path.isfile(os.path.join(ROOT, "benchmarks", "compare.py")),
                    reason="no benchmarks/compare.py in this checkout")
def test_compare_variants():
    """gru0 (the original-form GRU) and lstmp (proj_size H // 2) run against the peers that
    have them and skip the others for that row only; the peers agree with fastrnn."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    mod = cli._load_compare_module()
    rows = mod.run_comparison(["gru0", "lstmp", "gru"], [(5, 3, 16)], threads=1,
                              engines=["fastrnn", "torch", "onnxruntime"], repeat=1, rounds=1,
                              min_time=0.0, warmup=0, pause=0.0, limits=None, progress=False)
    gru0, lstmp, gru = rows
    assert "original-form" in gru0["engines"]["torch"]["skipped"]
    assert gru0["engines"]["onnxruntime"]["max_abs_diff"] <= 1e-5
    assert "projection" in lstmp["engines"]["onnxruntime"]["skipped"]
    assert lstmp["engines"]["torch"]["max_abs_diff"] <= 1e-5
    assert lstmp["gflop"] == pytest.approx(2 * (4 * 16 * (16 + 8) + 8 * 16) * 5 * 3 / 1e9)
    for eng in ("torch", "onnxruntime"):   # skipped for a variant's row, not for good
        assert gru["engines"][eng]["max_abs_diff"] <= 1e-5
    # the original form really differs from torch's (so the ONNX node is built in that form)
    layer = fastrnn.GRU(16, 16, linear_before_reset=False, seed=0)
    x = np.random.default_rng(1).standard_normal((5, 3, 16), dtype=np.float32)
    other = fastrnn.GRU(16, 16, seed=0)
    other.load_state_dict(layer.state_dict())
    assert np.abs(layer(x)[0] - other(x)[0]).max() > 1e-3


def test_bench_usage_errors(capsys):
    rc, out, err = run_main(capsys, "bench", "--against", "tensorflow")
    assert_one_line_error(rc, err, "tensorflow", status=2)
    rc, out, err = run_main(capsys, "bench", "--cells", "lstm,transformer")
    assert_one_line_error(rc, err, "--cells", status=2)
    rc, out, err = run_main(capsys, "bench", "--shapes", "1,2")
    assert_one_line_error(rc, err, "--shapes", status=2)


def test_progress_bar_draws_and_clears():
    buf = io.StringIO()
    with cli.ProgressBar(3, "bench", stream=buf, enabled=True) as bar:
        for i in range(3):
            bar.update(f"step {i}")
    text = buf.getvalue()
    assert "[########################] 3/3" in text and "step 2" in text
    assert text.endswith("\r")  # the line is cleared at the end
    quiet = io.StringIO()
    with cli.ProgressBar(3, stream=quiet) as bar:  # not a terminal: draws nothing
        bar.update("x")
    assert quiet.getvalue() == ""


# ---------------------------------------------------------------------------------------------
# subprocess: python -m fastrnn and the console script
# ---------------------------------------------------------------------------------------------
def test_python_dash_m(files):
    r = run_cmd("info", "--json", files.dir / "lstm.safetensors")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["layers"][0]["cell"] == "LSTM"
    r = run_cmd("run", files.dir / "lstm.safetensors", "-i", files.dir / "x.npy", "-o", files.dir / "ysub.npy")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(files.dir / "ysub.npy"), files.lstm(np.load(files.dir / "x.npy"))[0])
    r = run_cmd("info", files.dir / "does-not-exist.onnx")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"fastrnn: error: no such file: {files.dir / 'does-not-exist.onnx'}"]
    r = run_cmd("--debug", "info", files.dir / "does-not-exist.onnx")
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_console_script(files):
    exe = shutil.which("fastrnn")
    if exe is None:
        pytest.skip("the fastrnn console script is not installed (pip install -e .)")
    r = run_cmd("info", files.dir / "lstm.safetensors", exe=[exe])
    assert r.returncode == 0, r.stderr
    assert "LSTM" in r.stdout


def test_info_quantized_layer(tmp_path, capsys):
    layer = fastrnn.LSTM(8, 16, seed=0)
    if not hasattr(layer, "quantize"):
        pytest.skip("this fastrnn has no layer.quantize")
    p = tmp_path / "q.safetensors"
    fastrnn.save(layer.quantize("int8"), p)
    rc, out, err = run_main(capsys, "info", "--json", p)
    assert rc == 0, err
    (d,) = json.loads(out)["layers"]
    assert d["precision"] == "int8" and "int8" in d["dtype"]
    rc, out, err = run_main(capsys, "info", p)
    assert "precision:   int8" in out
