"""Reduced-precision layers: bf16 and int8 weights (each kernel path forced) against the
float32 layer and against numpy implementations of the quantization itself."""
import numpy as np
import pytest

from fastrnn import _core
from fastrnn.rnn import bf16_round, int8_quantize

CASES = [("LSTM", {}), ("LSTM", {"proj_size": 16}), ("GRU", {}), ("GRU", {"linear_before_reset": False}),
         ("RNN", {}), ("RNN", {"nonlinearity": "relu"})]
BOUND = {"bf16": 1e-2, "int8": 3e-2}


@pytest.fixture(params=["native", "portable"])
def qpath(request):
    if request.param == "native" and not (_core.quant_native("bf16") or _core.quant_native("int8")):
        pytest.skip("no AVX512_BF16 / VNNI on this CPU")
    _core.set_quant_portable(request.param == "portable")
    yield request.param
    _core.set_quant_portable(False)


def np_bf16(w):
    """Independent numpy bf16 rounding (nearest even), via float64 arithmetic on the bits."""
    w = np.asarray(w, np.float32)
    bits = w.view(np.uint32).astype(np.int64)
    lower = bits & 0xFFFF
    up = (lower > 0x8000) | ((lower == 0x8000) & (((bits >> 16) & 1) == 1))
    res = ((bits >> 16) + up) << 16
    return res.astype(np.uint32).view(np.float32)


def test_weight_quantizers_match_numpy():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((37, 53)) * 3).astype(np.float32)
    w[0, :3] = [1.00390625, 1.01171875, -2.0]   # ties
    np.testing.assert_array_equal(bf16_round(w), np_bf16(w))
    q, s = int8_quantize(w)
    np.testing.assert_allclose(s, np.abs(w).max(1) / 127, rtol=1e-6)
    np.testing.assert_array_equal(q, np.clip(np.round(w / s[:, None]), -127, 127).astype(np.int8))
    assert np.abs(q).max() == 127


@pytest.mark.parametrize("dtype", ["bf16", "int8"])
@pytest.mark.parametrize("cls,kw", CASES)
def test_quantized_close_to_fp32(fastrnn, qpath, dtype, cls, kw):
    if qpath == "native" and not _core.quant_native(dtype):
        pytest.skip(f"no native {dtype}")
    layer = getattr(fastrnn, cls)(64, 64, num_layers=2, bidirectional=True, seed=2, **kw)
    q = layer.quantize(dtype)
    assert type(q) is type(layer) and q.dtype == dtype and layer.dtype == "float32"
    x = np.random.default_rng(1).standard_normal((100, 3, 64)).astype(np.float32)
    lengths = np.array([100, 37, 0])
    ref, sref = layer(x, lengths=lengths)
    out, s = q(x, lengths=lengths)
    assert np.max(np.abs(out - ref)) <= BOUND[dtype]
    assert np.all(out[37:, 1] == 0)
    # the quantized layer's state_dict holds exactly the weights it uses
    sd = q.state_dict()
    for name, w in layer.state_dict().items():
        if name.startswith(("weight_ih", "weight_hh")):
            expect = np_bf16(w) if dtype == "bf16" else (int8_quantize(w)[0] * int8_quantize(w)[1][:, None])
            np.testing.assert_allclose(sd[name], expect, rtol=1e-6, atol=1e-7)
        else:
            np.testing.assert_array_equal(sd[name], w)


# 72: GEMM path, 4*72 outputs a partial block group; 64: fused; 144: three blocks of h at batch 1
@pytest.mark.parametrize("H", [72, 64, 144])
@pytest.mark.parametrize("dtype", ["bf16", "int8"])
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])   # RNN: int8 x's residual pass too
@pytest.mark.parametrize("B", [7, 1])   # 1 (fused): h quantized per block
def test_native_and_portable_agree(fastrnn, dtype, H, cell, B):
    if not _core.quant_native(dtype):
        pytest.skip(f"no native {dtype}")
    layer = getattr(fastrnn, cell)(40, H, seed=3).quantize(dtype)
    x = np.random.default_rng(2).standard_normal((20, B, 40)).astype(np.float32)
    a = layer(x)[0]
    _core.set_quant_portable(True)
    try:
        b = layer(x)[0]
    finally:
        _core.set_quant_portable(False)
    tol = 0 if dtype == "int8" else 1e-5   # int32 sums are exact; bf16 sums differ in order only
    assert np.max(np.abs(a - b)) <= tol


@pytest.mark.parametrize("dtype", ["bf16", "int8"])
def test_quantized_threads_agree_and_nan(fastrnn, dtype):
    layer = fastrnn.GRU(256, 256, seed=4).quantize(dtype)
    x = np.random.default_rng(3).standard_normal((10, 64, 256)).astype(np.float32)
    old = fastrnn.get_num_threads()
    try:
        fastrnn.set_num_threads(1)
        a = layer(x)[0]
        fastrnn.set_num_threads(2)
        b = layer(x)[0]
    finally:
        fastrnn.set_num_threads(old)
    assert np.max(np.abs(a - b)) <= 1e-6
    x[3, 5, 7] = np.nan
    out = layer(x)[0]
    assert np.isnan(out[3:, 5]).all() and not np.isnan(out[:, :5]).any()


@pytest.mark.parametrize("dtype", ["bf16", "int8"])
def test_quantized_lstm_projection_threads(fastrnn, dtype):
    """The quantized LSTM's float32 projection W_hr h on the team (200 x 256 per row: past
    the one-thread grain from 21 rows; 200 outputs end in a partial unit block): steps of
    70 rows split the rows over the threads, of 38 the output blocks, of 8 run on one.
    Each gives one thread's numbers and the float32 layer's within the dtype's bound;
    each sequence's h_n is its last output."""
    layer = fastrnn.LSTM(48, 256, proj_size=200, seed=7)
    q = layer.quantize(dtype)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((12, 70, 48)).astype(np.float32)
    lengths = rng.permutation(np.repeat([12, 9, 5], [8, 30, 32]))
    old = fastrnn.get_num_threads()
    try:
        fastrnn.set_num_threads(1)
        a, (ha, ca) = q(x, lengths=lengths)
        fastrnn.set_num_threads(2)
        b, (hb, cb) = q(x, lengths=lengths)
    finally:
        fastrnn.set_num_threads(old)
    tol = 1e-6 if dtype == "int8" else 1e-5
    for u, v in ((a, b), (ha, hb), (ca, cb)):
        assert np.max(np.abs(u - v)) <= tol
    ref, _ = layer(x, lengths=lengths)
    assert np.max(np.abs(a - ref)) <= BOUND[dtype]
    # each sequence's last output row is its h_n
    last = a[lengths - 1, np.arange(70)]
    np.testing.assert_array_equal(last, ha[0])


@pytest.mark.parametrize("path", ["native", "portable"])
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_int8_batch1_nan_and_tiny_state(fastrnn, path, cell):
    """Batch 1 (h quantized per block by the thread that computed it): a NaN in x
    makes every later output NaN and none before; a state of denormal size is
    quantized as zeros (the block's scale falls back to 1), as the float32 layer
    sees it."""
    if path == "native" and not _core.quant_native("int8"):
        pytest.skip("no native int8")
    layer = getattr(fastrnn, cell)(32, 144, seed=9)
    q = layer.quantize("int8")
    x = np.random.default_rng(5).standard_normal((8, 1, 32)).astype(np.float32)
    h0 = np.full((1, 1, 144), 1e-41, np.float32)
    state = (h0, np.zeros_like(h0)) if cell == "LSTM" else h0
    _core.set_quant_portable(path == "portable")
    try:
        out = q(x, state)[0]
        x[3, 0, 5] = np.nan
        bad = q(x, state)[0]
    finally:
        _core.set_quant_portable(False)
    ref = layer(x[:3], state)[0]
    assert np.max(np.abs(out[:3] - ref)) <= 3e-2
    assert np.isfinite(bad[:3]).all() and np.isnan(bad[3:]).all()


def test_int8_inf_in_x_is_nan_in_its_row_only(fastrnn):
    """As documented: an inf in a row of x leaves int8 no grid for that row, whose outputs are
    NaN from that step on; the other rows are what they are without it."""
    for cls in ("LSTM", "GRU", "RNN"):
        q = getattr(fastrnn, cls)(16, 16, seed=1).quantize("int8")
        x = np.random.default_rng(0).standard_normal((4, 3, 16)).astype(np.float32)
        clean = q(x)[0]
        x[1, 1, 3] = np.inf
        out = q(x)[0]
        assert np.isnan(out[1:, 1]).all() and np.isfinite(out[:1, 1]).all(), cls
        np.testing.assert_array_equal(out[:, [0, 2]], clean[:, [0, 2]])


@pytest.mark.parametrize("path", ["native", "portable"])
def test_int8_rows_of_extreme_magnitude(fastrnn, path):
    """Rows of denormal size (where 1/s overflows; quant.c then uses s = 1) and of
    huge size give finite outputs, and the tiny ones the float32 layer's, for
    which such an x is numerically nothing."""
    if path == "native" and not _core.quant_native("int8"):
        pytest.skip("no native int8")
    layer = fastrnn.RNN(32, 32, seed=2)
    q = layer.quantize("int8")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 32)).astype(np.float32)
    x[0, 0] *= np.float32(1e-40)   # denormal
    x[1, 1] *= np.float32(1e-37)   # s below 2**-100
    x[2, 0] *= np.float32(1e37)
    _core.set_quant_portable(path == "portable")
    try:
        out = q(x)[0]
    finally:
        _core.set_quant_portable(False)
    assert np.isfinite(out).all()
    ref = layer(x)[0]
    assert np.max(np.abs(out[0, 0] - ref[0, 0])) <= 3e-2
    assert np.max(np.abs(out[1, 1] - ref[1, 1])) <= 3e-2


@pytest.mark.parametrize("dtype", ["bf16", "int8"])
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_quantized_parallel_modes_agree(fastrnn, parallel_mode, cell, dtype):
    """Rows split over the threads (forced even for unequal lengths, where the
    active rows of each thread shrink on their own) and hidden units split over
    them give one thread's outputs and states: the same quantized rows, products
    exact in int32 (bf16: sums in another order)."""
    layer = getattr(fastrnn, cell)(48, 64, seed=5).quantize(dtype)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((9, 40, 48)).astype(np.float32)
    lengths = rng.integers(0, 10, size=40)
    lengths[:3] = 9
    old = fastrnn.get_num_threads()
    outs = {}
    try:
        for threads, mode in [(1, "auto"), (2, "batch"), (2, "hidden")]:
            fastrnn.set_num_threads(threads)
            parallel_mode.set_parallel(mode)
            for lens in (None, lengths):
                out, hn = layer(x, lengths=lens)
                states = list(hn) if isinstance(hn, tuple) else [hn]
                outs[(threads, mode, lens is None)] = [out] + states
    finally:
        fastrnn.set_num_threads(old)
    tol = 1e-6 if dtype == "int8" else 1e-5
    for full in (True, False):
        ref = outs[(1, "auto", full)]
        for key in [(2, "batch", full), (2, "hidden", full)]:
            for a, b in zip(ref, outs[key]):
                assert np.max(np.abs(a - b)) <= tol, (key, np.max(np.abs(a - b)))


def test_quantize_errors(fastrnn):
    layer = fastrnn.LSTM(4, 8)
    with pytest.raises(ValueError):
        layer.quantize("int4")
    with pytest.raises(ValueError):
        layer.quantize("int8").quantize("bf16")
    q = layer.quantize("int8")
    q.load_state_dict(layer.state_dict())   # stays int8
    assert q.dtype == "int8"
    again = fastrnn.layer_from_config(q.config(), state_dict=q.state_dict())
    x = np.ones((3, 1, 4), np.float32)
    np.testing.assert_array_equal(again(x)[0], q(x)[0])
    # int8 has no grid for a row holding NaN or inf (its scale is the row's largest |w|):
    # refused by name, where bf16 keeps the value and the float32 semantics
    for bad, word in ((np.nan, "NaN"), (np.inf, "inf")):
        sd = layer.state_dict()
        sd["weight_hh_l0"][3, 1] = bad
        broken = fastrnn.LSTM(4, 8).load_state_dict(sd)
        with pytest.raises(ValueError, match=f"weight_hh_l0 holds {word}"):
            broken.quantize("int8")
        with pytest.raises(ValueError, match=f"weight_hh_l0 holds {word}"):
            q.load_state_dict(sd)
        assert np.isnan(broken.quantize("bf16")(x)[0]).any() == np.isnan(broken(x)[0]).any()
    assert np.all(np.isfinite(q(x)[0]))   # the failed loads left q as it was


@pytest.mark.parametrize("dtype", ["bf16", "int8"])
@pytest.mark.parametrize("cls,kw", CASES)
def test_quantized_files_round_trip(fastrnn, tmp_path, dtype, cls, kw):
    from fastrnn._safetensors import read_safetensors
    layer = getattr(fastrnn, cls)(12, 20, num_layers=2, bidirectional=True, seed=5, **kw).quantize(dtype)
    path = tmp_path / "q.safetensors"
    fastrnn.save(layer, path)
    tensors, meta = read_safetensors(path, bf16="bits")
    w = tensors["weight_hh_l1_reverse"]
    assert w.dtype == (np.uint16 if dtype == "bf16" else np.int8)   # stored at its own precision
    back = fastrnn.load(path)
    assert back.dtype == dtype and type(back) is type(layer)
    x = np.random.default_rng(0).standard_normal((9, 4, 12)).astype(np.float32)
    np.testing.assert_array_equal(back(x)[0], layer(x)[0])


def test_amx_and_vector_kernels_agree(fastrnn):
    """Large batches on AMX tiles against the vector kernels: int8 bit for bit over a
    whole sequence; bf16 within summation order over one step (over many steps the
    bf16 rounding of h turns order-of-summation differences into whole bf16 ulps);
    odd block counts and row remainders included."""
    if not _core.quant_amx():
        pytest.skip("no AMX")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((30, 37, 64)).astype(np.float32)
    for cls, H in (("LSTM", 64), ("GRU", 128), ("RNN", 80)):
        for dtype, tol, T in (("int8", 0.0, 30), ("bf16", 1e-5, 1)):
            q = getattr(fastrnn, cls)(64, H, num_layers=2, seed=9).quantize(dtype)
            h0 = (0.5 * rng.standard_normal((2, 37, H))).astype(np.float32)
            hx = (h0, h0) if cls == "LSTM" else h0
            a = q(x[:T], hx)[0]
            _core.set_quant_no_amx(True)
            try:
                b = q(x[:T], hx)[0]
            finally:
                _core.set_quant_no_amx(False)
            assert np.max(np.abs(a - b)) <= tol, (cls, dtype)


@pytest.mark.parametrize("cls,I,H,B,threads", [
    ("RNN", 64, 16, 20, 1),     # one 16-output block: every row on small tiles, 16 at a time
    ("GRU", 32, 5, 40, 1),
    ("RNN", 256, 129, 33, 3),   # a thread's column slice of one block
    ("GRU", 256, 129, 33, 4),
    ("LSTM", 256, 100, 33, 8),
])
def test_amx_single_block_slices(fastrnn, isa_threads, cls, I, H, B, threads):
    """Products whose slice of outputs is a single 16-output block with more than 16 rows
    (tiles hold 16): bf16 on AMX against the vector kernels (this crashed the process)."""
    if not _core.quant_amx():
        pytest.skip("no AMX")
    fastrnn.set_num_threads(threads)
    q = getattr(fastrnn, cls)(I, H, seed=3).quantize("bf16")
    x = np.random.default_rng(5).standard_normal((2, B, I)).astype(np.float32)
    a = q(x[:1])[0]
    _core.set_quant_no_amx(True)
    try:
        b = q(x[:1])[0]
    finally:
        _core.set_quant_no_amx(False)
    assert np.max(np.abs(a - b)) <= 1e-5
    assert np.all(np.isfinite(q(x)[0]))


def test_kept_tiles_follow_row_counts(fastrnn):
    """Batch-1 bf16 steps keep their AMX tile configuration from call to call (per
    thread, released at the end of a time loop). Calls that need other tile shapes
    (3 rows, 17 = 16 + 1, 40 rows, a float32 layer in between, other threads) in any
    order give exactly what the same call gives alone; within a call, sequences that
    end make the steps' row counts drop (17 rows on tiles of 16 + 1, then 7, then 2)."""
    if not _core.quant_amx():
        pytest.skip("no AMX")
    import threading

    rng = np.random.default_rng(11)
    layers = [fastrnn.GRU(48, 64, seed=1).quantize("bf16"), fastrnn.LSTM(48, 32, seed=2).quantize("bf16"),
              fastrnn.LSTM(48, 32, seed=2)]
    xs = {B: rng.standard_normal((20, B, 48)).astype(np.float32) for B in (1, 3, 17, 40)}
    lens = {1: None, 3: np.array([20, 9, 4]), 17: np.array([20] * 10 + [12] * 5 + [6, 3]), 40: None}
    alone = {(i, B): layer(xs[B], lengths=lens[B])[0] for i, layer in enumerate(layers) for B in xs}
    order = [(i, B) for B in (1, 17, 1, 3, 40, 1) for i in (0, 1, 2, 0)]
    for i, B in order:
        np.testing.assert_array_equal(layers[i](xs[B], lengths=lens[B])[0], alone[(i, B)], err_msg=str((i, B)))
    errors = []

    def worker(seq):
        try:
            for i, B in seq:
                np.testing.assert_array_equal(layers[i](xs[B], lengths=lens[B])[0], alone[(i, B)],
                                              err_msg=str((i, B)))
        except AssertionError as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(order[k::3] * 3,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def _fake_quant_rows(a, dtype, residual=False):
    """The activations as the kernels quantize them (float32 arithmetic, as in quant.c),
    returned dequantized in float64. residual (int8): plus the second pass's
    quantization of the rounding error, on the grid s / 256 around 128."""
    a = np.asarray(a, np.float32)
    if dtype == "bf16":
        return np_bf16(a).astype(np.float64)
    f = np.float32
    lo, hi = np.minimum(a.min(axis=1), f(0)), np.maximum(a.max(axis=1), f(0))
    s = (hi / f(255) - lo / f(255)).astype(f)
    s = np.where(s >= f(2.0 ** -100), s, f(1)).astype(f)
    inv = (f(1) / s).astype(f)
    z = np.clip(np.rint((-lo * inv).astype(f)), 0, 255)
    u = np.clip(np.rint((a * inv[:, None]).astype(f)) + z[:, None], 0, 255)
    out = (u - z[:, None]).astype(np.float64) * s[:, None].astype(np.float64)
    if residual:
        # a - (u - z) s in one rounding (the kernels' fused multiply-add)
        r = (a.astype(np.float64) - out).astype(f)
        w = np.clip(np.rint((r * (inv * f(256))[:, None]).astype(f)) + 128, 0, 255)
        out = out + (w - 128).astype(np.float64) * (s / f(256))[:, None].astype(np.float64)
    return out


def _fake_quant_sym(a, block):
    """h as the fused path's int8 steps quantize it: symmetric s8 per block of
    `block` values of a row (float32 arithmetic, as in quant.c), dequantized."""
    a = np.asarray(a, np.float32)
    f = np.float32
    out = np.empty(a.shape, np.float64)
    for k0 in range(0, a.shape[1], block):
        v = a[:, k0:k0 + block]
        s = (np.abs(v).max(axis=1) / f(127)).astype(f)
        s = np.where(s >= f(2.0 ** -100), s, f(1)).astype(f)
        inv = (f(1) / s).astype(f)
        q = np.clip(np.rint((v * inv[:, None]).astype(f)), -127, 127)
        out[:, k0:k0 + block] = q.astype(np.float64) * s[:, None].astype(np.float64)
    return out


def _one_step_reference(cell, sd, dtype, x, h, c, lbr=True):
    """One time step of a quantized layer from the equations: W and the activations
    (x_t for the projection, h_{t-1} for the recurrent product) quantized as the
    kernels do, then float64 gate math. The fused cells' int8 h_{t-1} (hidden
    sizes in multiples of 16) is symmetric, per row, or at batch 1 per block of
    64 hidden units."""
    def deq(w):
        if dtype == "bf16":
            return np_bf16(w).astype(np.float64)
        q, s = int8_quantize(w)
        return q.astype(np.float64) * s[:, None].astype(np.float64)
    wih, whh = deq(sd["weight_ih_l0"]), deq(sd["weight_hh_l0"])
    bih, bhh = sd["bias_ih_l0"].astype(np.float64), sd["bias_hh_l0"].astype(np.float64)
    gx = _fake_quant_rows(x, dtype, residual=cell == "RNN") @ wih.T + bih
    H = h.shape[1]
    if dtype == "int8" and H % 16 == 0 and lbr:
        gh = _fake_quant_sym(h, 64 if h.shape[0] == 1 else H) @ whh.T + bhh
    else:
        gh = _fake_quant_rows(h, dtype) @ whh.T + bhh
    sig = lambda v: 1 / (1 + np.exp(-v))   # noqa: E731
    if cell == "LSTM":
        i, f, g, o = (gx[:, k * H:(k + 1) * H] + gh[:, k * H:(k + 1) * H] for k in range(4))
        c1 = sig(f) * c + sig(i) * np.tanh(g)
        return sig(o) * np.tanh(c1), c1
    if cell == "GRU":
        r = sig(gx[:, :H] + gh[:, :H])
        z = sig(gx[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
        return (1 - z) * n + z * h, None
    return np.tanh(gx + gh), None


@pytest.fixture(params=["native-amx", "native-vector", "portable"])
def kpath(request):
    """The quantized kernel families: AMX tiles (with the vector kernels for what is
    left), the AVX-512 vector kernels alone, the portable C."""
    if request.param == "native-amx" and not _core.quant_amx():
        pytest.skip("no AMX on this CPU (or not enabled by the kernel)")
    if request.param != "portable" and not (_core.quant_native("bf16") or _core.quant_native("int8")):
        pytest.skip("no AVX-512 on this CPU")
    _core.set_quant_no_amx(request.param != "native-amx")
    _core.set_quant_portable(request.param == "portable")
    yield request.param
    _core.set_quant_no_amx(False)
    _core.set_quant_portable(False)


@pytest.mark.parametrize("isa", ["avx512", "avx2", "scalar"])
# 64: the fused quantized path; 72: the GEMM path; 80 (RNN): an odd number of 16-output blocks;
# 16 (RNN): one block, no pair of blocks for the AMX tiles
@pytest.mark.parametrize("H", [64, 72, 80, 16])
@pytest.mark.parametrize("dtype", ["bf16", "int8"])
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("B,mode", [(49, "batch"), (17, "hidden"), (1, "auto")])
def test_quantized_steps_match_equations(fastrnn, kpath, isa_threads, parallel_mode, isa, H, dtype, cell,
                                         B, mode):
    """Every step of a quantized layer against the equations with the same quantization
    of W, x_t and h_{t-1} (fed the engine's own previous state, so a rounding
    boundary can't make the two drift apart): within 1e-5, on two threads.
    17 rows split by hidden units: one AMX tile of 16 rows and one row on the
    vector kernels; 49 rows split by rows (24 and 25 a thread: a tile and the
    rest on the vector kernels); 1 row: the batch-1 kernels."""
    if kpath != "portable" and not _core.quant_native(dtype):
        pytest.skip(f"no native {dtype}")
    if not fastrnn.isa_supported(isa):
        pytest.skip(f"CPU lacks {isa}")
    fastrnn.set_isa(isa)
    fastrnn.set_num_threads(2)
    parallel_mode.set_parallel(mode)
    layer = getattr(fastrnn, cell)(64, H, seed=7)
    q = layer.quantize(dtype)
    sd = layer.state_dict()
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, B, 64)).astype(np.float32)
    h = (0.5 * rng.standard_normal((1, B, H))).astype(np.float32)
    c = (0.5 * rng.standard_normal((1, B, H))).astype(np.float32)
    worst = 0.0
    for t in range(x.shape[0]):
        if cell == "LSTM":
            out, (h1, c1) = q(x[t:t + 1], (h, c))
        else:
            out, h1 = q(x[t:t + 1], h)
            c1 = None
        ref_h, ref_c = _one_step_reference(cell, sd, dtype, x[t], h[0], c[0] if cell == "LSTM" else None)
        # np.max, not max(): a NaN must not be passed over
        worst = np.max([worst, np.max(np.abs(h1[0] - ref_h)), np.max(np.abs(out[0] - ref_h))])
        if cell == "LSTM":
            worst = np.max([worst, np.max(np.abs(c1[0] - ref_c))])
        h, c = h1, (c1 if c1 is not None else c)
    assert worst <= 1e-5, worst
