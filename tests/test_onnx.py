"""ONNX import (fastrnn.from_onnx / layer_from_onnx_node) and fastrnn.onnx_backend."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import fastrnn  # noqa: E402
import fastrnn.onnx_backend as backend  # noqa: E402
from fastrnn._onnx import OnnxRNN, ReversedLayer, from_onnx, layer_from_onnx_node  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastrnn.__file__)))
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def make_model(op, *, I=3, H=4, direction="forward", layout=0, bias=True, peephole=False,
               seq_lens=False, init_h=False, init_c=False, weights_as_inputs=False,
               outputs=None, seed=0, scale=0.6, opset=14, **attrs):
    """A one-node model; weights random (initializers unless weights_as_inputs)."""
    G, D = _GATES[op], 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(seed)
    w = {
        "W": rng.uniform(-scale, scale, (D, G * H, I)).astype(np.float32),
        "R": rng.uniform(-scale, scale, (D, G * H, H)).astype(np.float32),
    }
    if bias:
        w["B"] = rng.uniform(-scale, scale, (D, 2 * G * H)).astype(np.float32)
    if peephole:
        w["P"] = rng.uniform(-scale, scale, (D, 3 * H)).astype(np.float32)
    names = ["X", "W", "R", "B" if bias else "", "seq" if seq_lens else "",
             "h0" if init_h else "", "c0" if init_c else "", "P" if peephole else ""]
    names = names[:8 if op == "LSTM" else 6]
    while names[-1] == "":
        names.pop()
    if outputs is None:
        outputs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    node = helper.make_node(op, names, outputs, name=f"my_{op.lower()}", hidden_size=H,
                            direction=direction, layout=layout, **attrs)
    ginputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)]
    if seq_lens:
        ginputs.append(helper.make_tensor_value_info("seq", TensorProto.INT32, None))
    for nm in ("h0", "c0"):
        if nm in names:
            ginputs.append(helper.make_tensor_value_info(nm, TensorProto.FLOAT, None))
    inits = []
    for k, v in w.items():
        if weights_as_inputs:
            ginputs.append(helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)))
        else:
            inits.append(numpy_helper.from_array(v, k))
    gout = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs if o]
    graph = helper.make_graph([node], "g", ginputs, gout, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model, w


def make_feeds(op, *, I=3, H=4, T=5, B=3, direction="forward", layout=0, seq_lens=False,
               init_h=False, init_c=False, seed=1, **_):
    D = 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(seed)
    shape = (T, B, I) if layout == 0 else (B, T, I)
    feeds = {"X": rng.standard_normal(shape).astype(np.float32)}
    sshape = (D, B, H) if layout == 0 else (B, D, H)
    if seq_lens:
        feeds["seq"] = rng.integers(1, T + 1, size=B).astype(np.int32)
        feeds["seq"][0] = T
    if init_h:
        feeds["h0"] = rng.standard_normal(sshape).astype(np.float32) * 0.5
    if init_c and op == "LSTM":
        feeds["c0"] = rng.standard_normal(sshape).astype(np.float32) * 0.5
    return feeds


def ort_session(model):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def ort_reference(op, kw, feeds, **model_kw):
    """onnxruntime's outputs for make_model(op, **kw).

    onnxruntime has no layout=1 kernels: for those the same weights run as
    layout 0 on transposed inputs, and the outputs are transposed back.
    """
    model, w = make_model(op, **kw, **model_kw)
    try:
        sess = ort_session(model)
    except Exception:
        if kw.get("layout", 0) != 1:
            raise
    else:
        return sess.run(None, feeds)
    kw0 = dict(kw, layout=0)
    f0 = {k: (v.swapaxes(0, 1) if k in ("X", "h0", "c0") else v) for k, v in feeds.items()}
    ref = ort_session(make_model(op, **kw0, **model_kw)[0]).run(None, f0)
    return [ref[0].transpose(2, 0, 1, 3)] + [r.swapaxes(0, 1) for r in ref[1:]]


def run_from_onnx(node, feeds):
    return node.run(feeds["X"], sequence_lens=feeds.get("seq"), initial_h=feeds.get("h0"),
                    initial_c=feeds.get("c0"))


# Configurations exercising every attribute; compared against onnxruntime.
ATTR_CASES = {
    # LSTM
    "lstm_forward": ("LSTM", {}),
    "lstm_no_bias": ("LSTM", dict(bias=False)),
    "lstm_reverse_seq_states": ("LSTM", dict(direction="reverse", seq_lens=True, init_h=True, init_c=True)),
    "lstm_bidir_seq_states_peephole": ("LSTM", dict(direction="bidirectional", seq_lens=True, init_h=True,
                                                    init_c=True, peephole=True)),
    "lstm_layout1_bidir_seq_states": ("LSTM", dict(direction="bidirectional", layout=1, seq_lens=True,
                                                   init_h=True, init_c=True)),
    "lstm_layout1_reverse_seq": ("LSTM", dict(direction="reverse", layout=1, seq_lens=True, init_h=True)),
    "lstm_clip_peephole": ("LSTM", dict(clip=0.5, peephole=True, scale=1.5)),
    "lstm_input_forget": ("LSTM", dict(input_forget=1, peephole=True, seq_lens=True)),
    "lstm_activations": ("LSTM", dict(activations=["HardSigmoid", "LeakyRelu", "Softsign"],
                                      activation_alpha=[0.3, 0.05], activation_beta=[0.45])),
    "lstm_bidir_6_activations": ("LSTM", dict(direction="bidirectional",
                                              activations=["Sigmoid", "Tanh", "Tanh", "HardSigmoid", "Elu", "Softplus"],
                                              activation_alpha=[0.25, 0.8], activation_beta=[0.4])),
    "lstm_scaledtanh_affine": ("LSTM", dict(activations=["Sigmoid", "ScaledTanh", "Affine"],
                                            activation_alpha=[1.2, 0.7], activation_beta=[0.9, 0.1])),
    "lstm_explicit_default_acts_bidir": ("LSTM", dict(direction="bidirectional",
                                                      activations=["Sigmoid", "Tanh", "Tanh"] * 2)),
    # GRU
    "gru_forward": ("GRU", {}),
    "gru_linear_before_reset": ("GRU", dict(linear_before_reset=1, seq_lens=True, init_h=True)),
    "gru_reverse_seq": ("GRU", dict(direction="reverse", seq_lens=True, init_h=True, linear_before_reset=1)),
    "gru_bidir_seq": ("GRU", dict(direction="bidirectional", seq_lens=True, init_h=True)),
    "gru_layout1_bidir": ("GRU", dict(direction="bidirectional", layout=1, seq_lens=True, init_h=True)),
    "gru_clip": ("GRU", dict(clip=0.4, scale=1.5)),
    "gru_activations": ("GRU", dict(activations=["HardSigmoid", "Softsign"], activation_alpha=[0.3],
                                    activation_beta=[0.4])),
    "gru_bidir_activations": ("GRU", dict(direction="bidirectional",
                                          activations=["Sigmoid", "Tanh", "Sigmoid", "Relu"])),
    "gru_no_bias_lbr": ("GRU", dict(bias=False, linear_before_reset=1)),
    # RNN
    "rnn_tanh": ("RNN", {}),
    "rnn_relu": ("RNN", dict(activations=["Relu"])),
    "rnn_bidir_tanh_relu_seq": ("RNN", dict(direction="bidirectional", activations=["Tanh", "Relu"],
                                            seq_lens=True, init_h=True)),
    "rnn_reverse_layout1_seq": ("RNN", dict(direction="reverse", layout=1, seq_lens=True, init_h=True)),
    "rnn_affine": ("RNN", dict(activations=["Affine"], activation_alpha=[0.8], activation_beta=[0.2])),
    "rnn_leakyrelu": ("RNN", dict(activations=["LeakyRelu"], activation_alpha=[0.2])),
    "rnn_thresholdedrelu": ("RNN", dict(activations=["ThresholdedRelu"], activation_alpha=[0.1])),
    "rnn_elu_clip": ("RNN", dict(activations=["Elu"], activation_alpha=[0.5], clip=0.7, scale=1.5)),
    "rnn_bidir_scaledtanh_leaky": ("RNN", dict(direction="bidirectional",
                                               activations=["ScaledTanh", "LeakyRelu"],
                                               activation_alpha=[1.5, 0.3], activation_beta=[0.5])),
}


# --------------------------------------------------------------------------- #
# onnx stays optional
# --------------------------------------------------------------------------- #
def _run_py(code):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_import_fastrnn_does_not_import_onnx():
    r = _run_py("import sys, fastrnn, fastrnn._onnx\n"
                "assert 'onnx' not in sys.modules, 'onnx imported'\n"
                "print('ok')")
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


def test_converted_layer_runs_without_onnx(tmp_path):
    # a reverse LSTM with peepholes + lengths (OnnxRNN, pickled) ...
    model, _ = make_model("LSTM", direction="reverse", peephole=True, seq_lens=True, init_h=True)
    feeds = make_feeds("LSTM", direction="reverse", seq_lens=True, init_h=True)
    node = from_onnx(model)
    expected = run_from_onnx(node, feeds)
    with open(tmp_path / "node.pkl", "wb") as f:
        pickle.dump(node, f)
    np.savez(tmp_path / "lstm.npz", X=feeds["X"], seq=feeds["seq"], h0=feeds["h0"],
             Y=expected[0], Y_h=expected[1], Y_c=expected[2])
    # ... and a bidirectional GRU layer saved with fastrnn.save
    gmodel, _ = make_model("GRU", direction="bidirectional", linear_before_reset=0)
    layer = layer_from_onnx_node(gmodel.graph.node[0], gmodel.graph.initializer)
    x = np.random.default_rng(3).standard_normal((4, 2, 3)).astype(np.float32)
    out, h = layer(x)
    np.savez(tmp_path / "gru.npz", x=x, out=out, h=h)
    has_save = hasattr(fastrnn, "save")
    if has_save:
        fastrnn.save(layer, str(tmp_path / "gru.safetensors"))

    code = f"""
import sys
sys.modules['onnx'] = None  # make 'import onnx' fail
try:
    import onnx
except ImportError:
    pass
else:
    raise SystemExit('onnx is importable')
import pickle, numpy as np, fastrnn
d = {str(tmp_path)!r}
node = pickle.load(open(d + '/node.pkl', 'rb'))
io = np.load(d + '/lstm.npz')
got = node.run(io['X'], io['seq'], io['h0'])
for a, k in zip(got, ('Y', 'Y_h', 'Y_c')):
    np.testing.assert_allclose(a, io[k], rtol=0, atol=1e-6)
if {has_save!r}:
    layer = fastrnn.load(d + '/gru.safetensors')
    g = np.load(d + '/gru.npz')
    out, h = layer(g['x'])
    np.testing.assert_allclose(out, g['out'], rtol=0, atol=1e-6)
    np.testing.assert_allclose(h, g['h'], rtol=0, atol=1e-6)
print('ran without onnx')
"""
    r = _run_py(code)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ran without onnx" in r.stdout


# --------------------------------------------------------------------------- #
# the LSTM / GRU / RNN node test cases shipped with onnx
# --------------------------------------------------------------------------- #
EXPECTED_NODE_CASES = {
    "test_gru_defaults", "test_gru_with_initial_bias", "test_gru_seq_length", "test_gru_batchwise",
    "test_gru_reverse", "test_gru_bidirectional",
    "test_lstm_defaults", "test_lstm_with_initial_bias", "test_lstm_with_peepholes",
    "test_lstm_batchwise", "test_lstm_reverse", "test_lstm_bidirectional",
    "test_simple_rnn_defaults", "test_simple_rnn_with_initial_bias", "test_rnn_seq_length",
    "test_simple_rnn_batchwise", "test_simple_rnn_reverse", "test_simple_rnn_bidirectional",
}


def _collect_node_cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    prefixes = ("test_lstm_", "test_gru_", "test_simple_rnn_", "test_rnn_seq_length")
    return {c.name: c for c in cases if c.name.startswith(prefixes)}


_NODE_CASES = _collect_node_cases()


def test_all_rnn_node_cases_collected():
    assert EXPECTED_NODE_CASES <= set(_NODE_CASES)
    assert len(_NODE_CASES) >= 18


@pytest.mark.parametrize("case_name", sorted(_NODE_CASES))
def test_onnx_node_case(case_name):
    case = _NODE_CASES[case_name]
    rep = backend.prepare(case.model, "CPU")
    for inputs, ref_outputs in case.data_sets:
        outputs = rep.run(inputs)
        assert len(outputs) == len(ref_outputs)
        for got, ref in zip(outputs, ref_outputs):
            ref = numpy_helper.to_array(ref) if isinstance(ref, TensorProto) else ref
            assert got.shape == ref.shape
            assert got.dtype == ref.dtype
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case_name", ["test_lstm_with_peepholes", "test_gru_seq_length",
                                       "test_simple_rnn_bidirectional"])
def test_onnx_node_case_run_node_and_run_model(case_name):
    case = _NODE_CASES[case_name]
    inputs, ref_outputs = case.data_sets[0]
    node = case.model.graph.node[0]
    for outputs in (backend.run_node(node, inputs), backend.run_model(case.model, inputs)):
        assert len(outputs) == len(ref_outputs)
        for got, ref in zip(outputs, ref_outputs):
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    # dict feeding by name
    names = [i.name for i in case.model.graph.input]
    outputs = backend.prepare(case.model).run(dict(zip(names, inputs)))
    np.testing.assert_allclose(outputs[-1], ref_outputs[-1], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- #
# every attribute against onnxruntime
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("case_id", sorted(ATTR_CASES))
def test_from_onnx_attributes_match_onnxruntime(case_id):
    op, kw = ATTR_CASES[case_id]
    model, _ = make_model(op, **kw)
    feeds = make_feeds(op, **kw)
    ref = ort_reference(op, kw, feeds)
    got = run_from_onnx(from_onnx(model), feeds)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-5)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_zero_length_sequences_match_onnxruntime(op, direction):
    kw = dict(direction=direction, seq_lens=True, init_h=True, init_c=True)
    model, _ = make_model(op, **kw)
    feeds = make_feeds(op, **kw)
    feeds["seq"][1] = 0  # onnxruntime: Y and the final states of an empty sequence are 0
    ref = ort_reference(op, kw, feeds)
    got = run_from_onnx(from_onnx(model), feeds)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-5)


@pytest.mark.parametrize("case_id", ["lstm_bidir_seq_states_peephole", "gru_reverse_seq",
                                     "rnn_bidir_tanh_relu_seq", "lstm_layout1_reverse_seq"])
@pytest.mark.parametrize("weights_as_inputs", [False, True])
def test_backend_matches_onnxruntime(case_id, weights_as_inputs):
    op, kw = ATTR_CASES[case_id]
    model, w = make_model(op, weights_as_inputs=weights_as_inputs, **kw)
    feeds = make_feeds(op, **kw)
    ref = ort_reference(op, kw, feeds)
    if weights_as_inputs:
        feeds.update(w)
    rep = backend.prepare(model)
    for _ in range(2):  # a prepared rep is reusable
        got = rep.run(feeds)
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g, r, rtol=0, atol=1e-5)
    # positional inputs, in graph-input order
    order = [i.name for i in model.graph.input]
    got = rep.run([feeds[n] for n in order])
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-5)


def test_backend_optional_outputs_and_identity():
    model, _ = make_model("LSTM", outputs=["", "", "Y_c"], direction="bidirectional")
    feeds = make_feeds("LSTM", direction="bidirectional")
    y_c = backend.prepare(model).run(feeds)
    assert len(y_c) == 1
    full = from_onnx(model).run(feeds["X"])
    np.testing.assert_allclose(y_c[0], full[2], rtol=0, atol=0)
    assert y_c["Y_c"] is y_c[0]

    # Identity on the output, a Constant node for R
    model, w = make_model("GRU", outputs=["Y", ""])
    g = model.graph
    r_init = [t for t in g.initializer if t.name == "R"][0]
    g.node.insert(0, helper.make_node("Constant", [], ["R"], value=r_init))
    g.initializer.remove(r_init)
    g.node.append(helper.make_node("Identity", ["Y"], ["Y_out"]))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("Y_out", TensorProto.FLOAT, None))
    out = backend.prepare(model).run([make_feeds("GRU")["X"]])
    ref = from_onnx(model).run(make_feeds("GRU")["X"])[0]
    np.testing.assert_array_equal(out[0], ref)


def test_backend_device_and_unsupported_ops():
    assert backend.supports_device("CPU")
    assert not backend.supports_device("CUDA")
    model, _ = make_model("RNN")
    with pytest.raises(ValueError, match="CPU"):
        backend.prepare(model, device="CUDA:0")
    assert backend.is_compatible(model)

    # an op after the RNN
    g = model.graph
    g.node.append(helper.make_node("Relu", ["Y"], ["Z"], name="act"))
    g.output.append(helper.make_tensor_value_info("Z", TensorProto.FLOAT, None))
    for exc in (NotImplementedError, ValueError):
        with pytest.raises(exc, match="Relu"):
            backend.prepare(model)
    assert not backend.is_compatible(model)
    with pytest.raises(NotImplementedError, match="Relu"):
        backend.run_node(g.node[-1], [np.zeros((2, 2), np.float32)])

    # a node from another domain
    node = helper.make_node("DynamicQuantizeLSTM", ["X"], ["Y"], domain="com.microsoft")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14),
                                                helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(NotImplementedError, match="DynamicQuantizeLSTM"):
        backend.FastRNNBackendRep(m)


def test_constant_folded_weights():
    """W assembled from two initializers by Concat: folded at load."""
    model, w = make_model("LSTM", direction="bidirectional")
    g = model.graph
    w_init = [t for t in g.initializer if t.name == "W"][0]
    g.initializer.remove(w_init)
    g.initializer.extend([numpy_helper.from_array(w["W"][:1], "W_fwd"),
                          numpy_helper.from_array(w["W"][1:], "W_bwd")])
    g.node.insert(0, helper.make_node("Concat", ["W_fwd", "W_bwd"], ["W"], axis=0))
    feeds = make_feeds("LSTM", direction="bidirectional")
    ref = from_onnx(make_model("LSTM", direction="bidirectional")[0]).run(feeds["X"])
    got = from_onnx(model).run(feeds["X"])
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)
    got = backend.prepare(model).run(feeds)
    np.testing.assert_array_equal(got[0], ref[0])


# --------------------------------------------------------------------------- #
# layer-level conversion
# --------------------------------------------------------------------------- #
def test_layer_from_onnx_node_forms():
    model, w = make_model("LSTM", peephole=True)
    node = model.graph.node[0]
    x = make_feeds("LSTM")["X"]
    ref = from_onnx(model).run(x)
    for inits in (w, list(model.graph.initializer), model.graph, model,
                  {t.name: t for t in model.graph.initializer}):
        layer = layer_from_onnx_node(node, inits)
        assert isinstance(layer, fastrnn.LSTM)
        out, (h, c) = layer(x)
        np.testing.assert_array_equal(out, ref[0][:, 0])
        np.testing.assert_array_equal(h, ref[1])
    sd = layer.state_dict()
    H = 4
    # gate order: ONNX (i, o, f, c) -> torch (i, f, g, o); peepholes (i, o, f) -> (i, f, o)
    np.testing.assert_array_equal(sd["weight_ih_l0"][H:2 * H], w["W"][0][2 * H:3 * H])
    np.testing.assert_array_equal(sd["weight_ih_l0"][3 * H:], w["W"][0][H:2 * H])
    np.testing.assert_array_equal(sd["bias_hh_l0"][2 * H:3 * H], w["B"][0][4 * H + 3 * H:])
    np.testing.assert_array_equal(sd["weight_ph_l0"][H:2 * H], w["P"][0][2 * H:])
    with pytest.raises(ValueError, match="W"):
        layer_from_onnx_node(node, {})


def test_layer_from_onnx_node_reverse_and_layout():
    model, w = make_model("GRU", direction="reverse", layout=1, seq_lens=True)
    feeds = make_feeds("GRU", direction="reverse", layout=1, seq_lens=True)
    layer = layer_from_onnx_node(model.graph.node[0], w)
    assert isinstance(layer, ReversedLayer)
    assert layer.batch_first
    out, h = layer(feeds["X"], lengths=feeds["seq"])
    Y, Y_h = from_onnx(model).run(feeds["X"], feeds["seq"])
    np.testing.assert_array_equal(out, Y[:, :, 0])  # [B, T, D=1, H]
    np.testing.assert_array_equal(h[0], Y_h[:, 0])
    layer2 = pickle.loads(pickle.dumps(layer))
    np.testing.assert_array_equal(layer2(feeds["X"], lengths=feeds["seq"])[0], out)


def test_gru_linear_before_reset_mapping():
    model, w = make_model("GRU", linear_before_reset=0)
    layer = layer_from_onnx_node(model.graph.node[0], w)
    assert layer.linear_before_reset is False
    sd = layer.state_dict()
    H = 4  # ONNX (z, r, h) -> torch (r, z, n)
    np.testing.assert_array_equal(sd["weight_hh_l0"][:H], w["R"][0][H:2 * H])
    np.testing.assert_array_equal(sd["weight_hh_l0"][H:2 * H], w["R"][0][:H])


def test_onnxrnn_object():
    model, _ = make_model("LSTM", direction="bidirectional", layout=1)
    node = from_onnx(model)
    assert isinstance(node, OnnxRNN)
    assert (node.op_type, node.name, node.direction, node.layout) == ("LSTM", "my_lstm", "bidirectional", 1)
    assert node.hidden_size == 4 and node.input_size == 3 and node.num_directions == 2
    assert node.input_names["W"] == "W" and node.output_names["Y_c"] == "Y_c"
    x = make_feeds("LSTM", layout=1)["X"]
    Y, Y_h, Y_c = node(x)
    assert Y.shape == (3, 5, 2, 4) and Y_h.shape == (3, 2, 4) and Y_c.shape == (3, 2, 4)
    # float64 input -> float64 outputs, same values
    Y64 = node.run(x.astype(np.float64))[0]
    assert Y64.dtype == np.float64
    np.testing.assert_allclose(Y64, Y, rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="input size"):
        node.run(np.zeros((3, 5, 7), np.float32))
    with pytest.raises(ValueError, match="initial_h"):
        node.run(x, initial_h=np.zeros((2, 3, 4), np.float32))  # layout 1 wants [B, D, H]
    with pytest.raises(ValueError, match="sequence_lens"):
        node.run(x, sequence_lens=[1, 2, 9])
    # non-real X and non-integer lengths are refused, not cast (an imaginary part dropped,
    # 2.9 truncated to 2)
    for bad in (x + 1j, x.astype(object)):
        with pytest.raises(TypeError, match="X must hold floating-point"):
            node.run(bad)
    for lens in ([2.9, 5, 5], [np.nan, 5, 5], ["2", "5", "5"]):
        with pytest.raises(TypeError, match="sequence_lens must be integers"):
            node.run(x, sequence_lens=lens)
    # a reverse node's layer checks lengths before reversing by them
    rev = from_onnx(make_model("GRU", direction="reverse")[0])
    xr = make_feeds("GRU")["X"]
    with pytest.raises(ValueError, match="0..5"):
        rev.layer(xr, lengths=[7, 5, 5])
    with pytest.raises(TypeError, match="integers"):
        rev.layer(xr, lengths=[2.5, 5, 5])
    with pytest.raises(TypeError, match="floating-point"):
        rev.layer(xr.astype(object))
    np.testing.assert_array_equal(rev.layer(xr, lengths=[5, 2, 3])[0],
                                  rev.run(xr, sequence_lens=[5, 2, 3])[0][:, 0])
    assert callable(getattr(fastrnn, "from_onnx", None))
    assert isinstance(fastrnn.from_onnx(model), OnnxRNN)


def test_constant_initial_state_and_lengths_in_graph():
    """Non-zero constant initial_h / sequence_lens in the graph are used by default."""
    model, _ = make_model("GRU", seq_lens=True, init_h=True, direction="bidirectional")
    feeds = make_feeds("GRU", seq_lens=True, init_h=True, direction="bidirectional")
    g = model.graph
    for nm in ("seq", "h0"):
        g.initializer.append(numpy_helper.from_array(feeds[nm], nm))
    del g.input[1:]
    node = from_onnx(model)
    got = node.run(feeds["X"])
    ref = node.run(feeds["X"], feeds["seq"], feeds["h0"])
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(got[1], node.run(feeds["X"], initial_h=np.zeros_like(feeds["h0"]))[1])


@pytest.mark.parametrize("form", ["initializer", "ConstantOfShape"])
def test_constant_zero_lengths_in_graph(form):
    """All-zero sequence_lens baked into the graph empty every sequence (a zero initial state
    is the absent one; zero lengths are not): Y and Y_h are 0, in from_onnx and the backend."""
    model, _ = make_model("GRU", seq_lens=True, direction="bidirectional")
    g = model.graph
    feeds = make_feeds("GRU", seq_lens=True, direction="bidirectional")
    zeros = np.zeros_like(feeds["seq"])
    if form == "initializer":
        g.initializer.append(numpy_helper.from_array(zeros, "seq"))
    else:
        g.initializer.append(numpy_helper.from_array(np.array(zeros.shape, np.int64), "seq_shape"))
        g.node.insert(0, helper.make_node("ConstantOfShape", ["seq_shape"], ["seq"],
                                          value=numpy_helper.from_array(np.zeros(1, np.int32))))
    del g.input[1:]
    explicit = from_onnx(model).run(feeds["X"], zeros)
    assert not np.any(explicit[0]) and not np.any(explicit[1])
    for got in (from_onnx(model).run(feeds["X"]), backend.prepare(model).run([feeds["X"]])):
        for a, b in zip(got, explicit):
            np.testing.assert_array_equal(a, b)


def test_fed_initializer_reaches_folded_weights():
    """An initializer the caller overrides (listed as a graph input) that feeds a folded
    subgraph (W = Concat(W_fwd, W_bwd)): the run uses the fed value, not the folded default."""
    model, w = make_model("LSTM", direction="bidirectional")
    g = model.graph
    g.initializer.remove([t for t in g.initializer if t.name == "W"][0])
    g.initializer.extend([numpy_helper.from_array(w["W"][:1], "W_fwd"),
                          numpy_helper.from_array(w["W"][1:], "W_bwd")])
    g.node.insert(0, helper.make_node("Concat", ["W_fwd", "W_bwd"], ["W"], axis=0))
    g.input.append(helper.make_tensor_value_info("W_fwd", TensorProto.FLOAT, [1, 16, 3]))
    feeds = make_feeds("LSTM", direction="bidirectional")
    rep = backend.prepare(model)
    assert rep.input_names == ["X"]
    w_new = (w["W"][:1] * -0.5).astype(np.float32)
    model_new, _ = make_model("LSTM", direction="bidirectional")
    for t in model_new.graph.initializer:
        if t.name == "W":
            t.CopyFrom(numpy_helper.from_array(np.concatenate([w_new, w["W"][1:]]), "W"))
    ref_new = from_onnx(model_new).run(feeds["X"])
    got = rep.run({"X": feeds["X"], "W_fwd": w_new})
    for a, b in zip(got, ref_new):
        np.testing.assert_array_equal(a, b)
    ref = from_onnx(make_model("LSTM", direction="bidirectional")[0]).run(feeds["X"])
    np.testing.assert_array_equal(rep.run([feeds["X"]])[0], ref[0])   # the default again
    assert not np.allclose(ref[0], ref_new[0])


# --------------------------------------------------------------------------- #
# bad input
# --------------------------------------------------------------------------- #
def test_truncated_and_corrupt_files(tmp_path):
    model, _ = make_model("LSTM")
    data = model.SerializeToString()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.onnx"):
        from_onnx(str(bad))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\xff\xff\xff this is not an onnx model" * 10)
    with pytest.raises(ValueError, match="junk.onnx"):
        from_onnx(junk)
    with pytest.raises(ValueError, match="junk.onnx"):
        backend.prepare(str(junk))
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.onnx"):
        from_onnx(empty)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        from_onnx(tmp_path / "missing.onnx")
    good = tmp_path / "good.onnx"
    good.write_bytes(data)
    assert from_onnx(good).op_type == "LSTM"
    assert from_onnx(data).op_type == "LSTM"


@pytest.mark.parametrize("attrs, match", [
    (dict(activations=["Sigmoid", "Gelu", "Tanh"]), "Gelu"),
    (dict(activations=["Sigmoid", "Tanh"]), "activations"),
    (dict(direction="sideways"), "sideways"),
    (dict(layout=2), "layout"),
    (dict(clip=-1.0), "clip"),
    (dict(input_forget=3), "input_forget"),
    (dict(hidden_size=5), "hidden_size"),
])
def test_unsupported_attribute_values(attrs, match, tmp_path):
    kw = {k: v for k, v in attrs.items() if k != "hidden_size"}
    model, w = make_model("LSTM", **kw)
    if "hidden_size" in attrs:
        for a in model.graph.node[0].attribute:
            if a.name == "hidden_size":
                a.i = attrs["hidden_size"]
    with pytest.raises(ValueError, match=match):
        from_onnx(model)
    with pytest.raises(ValueError, match=match):
        layer_from_onnx_node(model.graph.node[0], w)
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ValueError, match="m.onnx"):
        from_onnx(path)
    with pytest.raises(ValueError, match=match):
        backend.prepare(model)


def test_unknown_attribute_named():
    model, w = make_model("GRU")
    model.graph.node[0].attribute.append(helper.make_attribute("frobnicate", 1))
    with pytest.raises(ValueError, match="frobnicate"):
        from_onnx(model)
    with pytest.raises(ValueError, match="frobnicate"):
        layer_from_onnx_node(model.graph.node[0], w)


def test_node_selection():
    m1, w1 = make_model("LSTM", seed=1)
    # a second recurrent node (GRU) fed by the LSTM's Y_h
    g = m1.graph
    m2, w2 = make_model("GRU", I=4, seed=2)
    for t in m2.graph.initializer:
        t.name = "g_" + t.name
        g.initializer.append(t)
    g.node.append(helper.make_node("GRU", ["Y_h", "g_W", "g_R", "g_B"], ["GY", "GY_h"], name="second",
                                   hidden_size=4))
    g.output.append(helper.make_tensor_value_info("GY_h", TensorProto.FLOAT, None))
    with pytest.raises(ValueError, match="my_lstm.*second|second.*my_lstm"):
        from_onnx(m1)
    assert from_onnx(m1, name="my_lstm").op_type == "LSTM"
    assert from_onnx(m1, name="second").op_type == "GRU"
    assert from_onnx(m1, name="GY_h").name == "second"  # by output name
    assert from_onnx(m1, name=1).name == "second"  # by index
    with pytest.raises(ValueError, match="my_lstm"):
        from_onnx(m1, name="nope")
    # the backend runs the chain
    x = make_feeds("LSTM")["X"]
    y, y_h, y_c, gy_h = backend.prepare(m1).run([x])
    ref = from_onnx(m1, name="second").run(from_onnx(m1, name="my_lstm").run(x)[1])
    np.testing.assert_array_equal(gy_h, ref[1])

    # no recurrent node at all
    graph = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"])], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    with pytest.raises(ValueError, match="Relu"):
        from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]))


def test_weights_as_graph_inputs_need_backend():
    model, w = make_model("RNN", weights_as_inputs=True)
    with pytest.raises(ValueError, match="onnx_backend"):
        from_onnx(model)
    feeds = make_feeds("RNN")
    got = backend.prepare(model).run(dict(feeds, **w))
    ref = from_onnx(make_model("RNN")[0]).run(feeds["X"])
    np.testing.assert_array_equal(got[0], ref[0])
    with pytest.raises(ValueError, match="W"):
        backend.prepare(model).run(feeds)

    # initializers also listed as graph inputs (old IR style): defaults the caller may override
    model, w = make_model("RNN")
    for k, v in w.items():
        model.graph.input.append(helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)))
    rep = backend.prepare(model)
    assert rep.input_names == ["X"]
    np.testing.assert_array_equal(rep.run([feeds["X"]])[0], ref[0])
    half = {k: v * 0.5 for k, v in w.items()}
    model_half, _ = make_model("RNN")
    for t in model_half.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(half[t.name], t.name))
    np.testing.assert_array_equal(rep.run(dict(X=feeds["X"], **half))[0],
                                  from_onnx(model_half).run(feeds["X"])[0])


# --------------------------------------------------------------------------- #
# torch.onnx.export round trips, checked against onnxruntime on the same file
# --------------------------------------------------------------------------- #
def _torch_export(module, args, path, dynamo, input_names):
    torch = pytest.importorskip("torch")
    if dynamo:
        pytest.importorskip("onnxscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw = {} if dynamo else dict(dynamo=False)
        if dynamo:
            kw = dict(dynamo=True, verbose=False)
        try:
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                torch.onnx.export(module, args, str(path), input_names=input_names, **kw)
        except Exception as e:  # pragma: no cover - depends on the installed exporter
            if dynamo:
                pytest.skip(f"dynamo exporter failed: {type(e).__name__}: {e}")
            raise


def _with_intermediate_outputs(model, names):
    """Copy of model with ``names`` added as graph outputs (types from shape inference)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    types = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(m)
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            types[vi.name] = vi.type.tensor_type.elem_type
    except Exception:  # pragma: no cover
        pass
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(helper.make_tensor_value_info(n, types.get(n) or TensorProto.FLOAT, None))
            have.add(n)
    return m


def _check_against_ort(path, feeds):
    """Every recurrent node of the file: from_onnx(path, name).run == onnxruntime."""
    model = onnx.load(str(path))
    nodes = [n for n in model.graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    assert nodes, "export produced no recurrent node"
    consts = {t.name for t in model.graph.initializer}
    slots = ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P")
    wanted = []
    for n in nodes:
        wanted += [nm for slot, nm in zip(slots, n.input) if nm and slot in ("X", "sequence_lens",
                                                                         "initial_h", "initial_c")]
        wanted += [o for o in n.output if o]
    m = _with_intermediate_outputs(model, [w for w in wanted if w not in consts])
    sess = ort_session(m)
    out_names = [o.name for o in sess.get_outputs()]
    values = dict(zip(out_names, sess.run(None, feeds)))
    for n in nodes:
        node = from_onnx(str(path), name=n.name if len(nodes) > 1 else None)
        ins = dict(zip(slots, n.input))
        kw = {}
        for slot in ("sequence_lens", "initial_h", "initial_c"):
            nm = ins.get(slot, "")
            if nm and nm in values and nm not in feeds:
                kw[slot] = values[nm]
            elif nm and nm in feeds:
                kw[slot] = feeds[nm]
        x = feeds[ins["X"]] if ins["X"] in feeds else values[ins["X"]]
        got = node.run(x, **kw)
        refs = [values[o] for o in n.output if o]
        got = [g for g, o in zip(got, n.output) if o]
        for g, r in zip(got, refs):
            assert g.shape == r.shape
            assert float(np.max(np.abs(g - r))) <= 1e-5
    return values


def _torch_cases():
    cases = []
    for dynamo in (False, True):
        exp = "dynamo" if dynamo else "torchscript"
        cases += [
            pytest.param("LSTM", dict(num_layers=1), False, dynamo, id=f"lstm-{exp}"),
            pytest.param("LSTM", dict(num_layers=2, bidirectional=True), False, dynamo,
                         id=f"lstm-2layers-bidir-{exp}"),
            pytest.param("GRU", dict(num_layers=2, bidirectional=True, batch_first=True), False, dynamo,
                         id=f"gru-2layers-bidir-batch_first-{exp}"),
            pytest.param("RNN", dict(num_layers=2, nonlinearity="relu"), False, dynamo,
                         id=f"rnn-relu-2layers-{exp}"),
        ]
    cases += [
        pytest.param("RNN", dict(bidirectional=True), False, False, id="rnn-bidir-torchscript"),
        pytest.param("LSTM", dict(num_layers=2, bidirectional=True), True, False,
                     id="lstm-2layers-bidir-h0c0-torchscript"),
        pytest.param("GRU", dict(bidirectional=True), True, False, id="gru-bidir-h0-torchscript"),
    ]
    return cases


@pytest.mark.parametrize("cell, kw, with_state, dynamo", _torch_cases())
def test_torch_export_matches_onnxruntime(tmp_path, cell, kw, with_state, dynamo):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    module = getattr(torch.nn, cell)(3, 5, **kw).eval()
    bf = kw.get("batch_first", False)
    x = torch.randn((2, 6, 3) if bf else (6, 2, 3))
    D = 2 if kw.get("bidirectional") else 1
    args, names = (x,), ["x"]
    feeds = {"x": x.numpy()}
    if with_state:
        h0 = torch.randn(kw.get("num_layers", 1) * D, 2, 5)
        if cell == "LSTM":
            c0 = torch.randn(kw.get("num_layers", 1) * D, 2, 5)
            args, names = (x, (h0, c0)), ["x", "h0", "c0"]
            feeds.update(h0=h0.numpy(), c0=c0.numpy())
        else:
            args, names = (x, h0), ["x", "h0"]
            feeds["h0"] = h0.numpy()
    path = tmp_path / "m.onnx"
    _torch_export(module, args, path, dynamo, names)
    model = onnx.load(str(path))
    if not any(n.op_type in ("LSTM", "GRU", "RNN") for n in model.graph.node):
        # the dynamo exporter unrolls nn.RNN into MatMul/Add/...: nothing for from_onnx
        with pytest.raises(ValueError, match="no LSTM, GRU or RNN node"):
            from_onnx(path)
        return
    _check_against_ort(path, feeds)
    # whole-model check for the last node against torch itself
    nodes = [n for n in model.graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    if len(nodes) == 1 and not with_state:
        with torch.no_grad():
            ref = module(x)
        Y, Y_h = from_onnx(path).run(feeds["x"])[:2]
        out = Y.reshape(2, 6, -1) if bf else Y.transpose(0, 2, 1, 3).reshape(6, 2, -1)
        np.testing.assert_allclose(out, ref[0].numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_torch_export_packed_sequence_matches_onnxruntime(tmp_path, cell):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    class Packed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = getattr(torch.nn, cell)(3, 5, bidirectional=True)

        def forward(self, x, lengths):
            y, h = self.rnn(pack_padded_sequence(x, lengths, enforce_sorted=False))
            return pad_packed_sequence(y, total_length=x.shape[0])[0], h

    torch.manual_seed(0)
    module = Packed().eval()
    x, lengths = torch.randn(6, 3, 3), torch.tensor([6, 2, 4])
    path = tmp_path / "packed.onnx"
    _torch_export(module, (x, lengths), path, False, ["x", "lengths"])
    model = onnx.load(str(path))
    node = [n for n in model.graph.node if n.op_type == cell][0]
    assert len(node.input) > 4 and node.input[4], "exporter did not emit sequence_lens"
    values = _check_against_ort(path, {"x": x.numpy(), "lengths": lengths.numpy()})
    # and the file's final output equals torch's
    with torch.no_grad():
        ref = module(x, lengths)[0].numpy()
    np.testing.assert_allclose(values[model.graph.output[0].name], ref, rtol=0, atol=1e-5)
