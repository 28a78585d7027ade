"""Plain-numpy reference implementation of the fastrnn layers (see docs/API_CONTRACT.md).

Written directly from the equations, float64 internally, vectorised over the batch (the only
Python loop is over time).  Nothing here imports fastrnn, so the reference can be checked
against PyTorch on its own (tests/test_torch_diff.py does that).

Main entry point::

    out, h_n          = reference_forward("GRU",  params, config, x, hx, lengths)
    out, (h_n, c_n)   = reference_forward("LSTM", params, config, x, (h0, c0), lengths)

``params`` is a dict with the PyTorch parameter names (weight_ih_l0, weight_hh_l0_reverse, ...,
weight_hr_l{k} for projections, weight_ph_l{k} for peepholes); ``config`` is a dict with the
constructor keyword arguments (the form ``layer.config()`` returns; a "cell" key is ignored).
Returned arrays are float64.

The second half of the file holds small helpers shared by the tests (parameter generation with
PyTorch's default init, comparison with a readable error message, the cell specs of the grid).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import expit

__all__ = [
    "reference_forward",
    "activation_fn",
    "normalise_config",
    "param_shapes",
    "make_params",
    "CELL_SPECS",
    "assert_close",
    "max_abs_err",
    "TOLERANCE",
    "random_states",
    "split_result",
    "call_layer",
    "check_layer",
]

# --------------------------------------------------------------------------------------------
# activations (ONNX semantics, see the contract)
# --------------------------------------------------------------------------------------------

_DEFAULT_ALPHA = {
    "affine": 1.0,
    "linear": 1.0,
    "leakyrelu": 0.01,
    "thresholdedrelu": 1.0,
    "scaledtanh": 1.0,
    "hardsigmoid": 0.2,
    "elu": 1.0,
}
_DEFAULT_BETA = {
    "affine": 0.0,
    "linear": 0.0,
    "scaledtanh": 1.0,
    "hardsigmoid": 0.5,
}
ACTIVATION_NAMES = (
    "sigmoid", "tanh", "relu", "affine", "leakyrelu", "thresholdedrelu", "scaledtanh",
    "hardsigmoid", "elu", "softsign", "softplus", "linear",
)


def activation_fn(name, alpha=None, beta=None):
    """Return a float64 numpy function for the named ONNX activation."""
    key = str(name).lower()
    if key not in ACTIVATION_NAMES:
        raise ValueError(f"unknown activation {name!r}")
    a = _DEFAULT_ALPHA.get(key) if alpha is None else float(alpha)
    b = _DEFAULT_BETA.get(key) if beta is None else float(beta)

    if key == "sigmoid":
        return expit
    if key == "tanh":
        return np.tanh
    if key == "relu":
        # np.maximum propagates NaN, like torch.relu
        return lambda v: np.maximum(v, 0.0)
    if key in ("affine", "linear"):
        return lambda v: a * v + b
    if key == "leakyrelu":
        return lambda v: np.where(v >= 0, v, a * v)
    if key == "thresholdedrelu":
        return lambda v: np.where(v > a, v, 0.0)
    if key == "scaledtanh":
        return lambda v: a * np.tanh(b * v)
    if key == "hardsigmoid":
        return lambda v: np.clip(a * v + b, 0.0, 1.0)
    if key == "elu":
        return lambda v: np.where(v >= 0, v, a * np.expm1(np.minimum(v, 0.0)))
    if key == "softsign":
        return lambda v: v / (1.0 + np.abs(v))
    if key == "softplus":
        return lambda v: np.logaddexp(0.0, v)
    raise AssertionError(key)  # pragma: no cover


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------

_N_ACTS = {"LSTM": 3, "GRU": 2, "RNN": 1}
_N_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def normalise_config(cell, config):
    """Fill the defaults of the constructor signature; returns a new dict."""
    cell = str(config.get("cell", cell) if cell is None else cell).upper()
    if cell not in _N_GATES:
        raise ValueError(f"unknown cell {cell!r}")
    c = dict(config)
    c.pop("cell", None)
    c.setdefault("num_layers", 1)
    c.setdefault("bias", True)
    c.setdefault("batch_first", False)
    c.setdefault("bidirectional", False)
    c.setdefault("clip", None)
    c.setdefault("activations", None)
    c.setdefault("activation_alpha", None)
    c.setdefault("activation_beta", None)
    c.pop("seed", None)
    if cell == "LSTM":
        c.setdefault("proj_size", 0)
        c.setdefault("peephole", False)
        c.setdefault("input_forget", False)
    else:
        c["proj_size"] = 0
    if cell == "GRU":
        c.setdefault("linear_before_reset", True)
    if cell == "RNN":
        c.setdefault("nonlinearity", "tanh")
    c["cell"] = cell
    return c


def _direction_activations(cfg, direction):
    """List of float64 activation callables for one direction."""
    cell = cfg["cell"]
    n = _N_ACTS[cell]
    acts = cfg["activations"]
    if acts is None:
        if cell == "LSTM":
            acts = ["sigmoid", "tanh", "tanh"]
        elif cell == "GRU":
            acts = ["sigmoid", "tanh"]
        else:
            acts = [cfg["nonlinearity"]]
        alphas = betas = [None] * n
    else:
        acts = list(acts)
        alphas = cfg["activation_alpha"]
        betas = cfg["activation_beta"]
        alphas = [None] * len(acts) if alphas is None else list(alphas)
        betas = [None] * len(acts) if betas is None else list(betas)
        if len(acts) not in (n, 2 * n):
            raise ValueError(f"{cell} needs {n} or {2 * n} activations, got {len(acts)}")
        if len(alphas) != len(acts) or len(betas) != len(acts):
            raise ValueError("activation_alpha/beta must be aligned with activations")
    if len(acts) == 2 * n:
        sl = slice(direction * n, direction * n + n)
        acts, alphas, betas = acts[sl], alphas[sl], betas[sl]
    return [activation_fn(a, al, be) for a, al, be in zip(acts, alphas, betas)]


def param_shapes(cell, config):
    """Ordered dict name -> shape of the parameters, with PyTorch's names and order."""
    cfg = normalise_config(cell, config)
    cell = cfg["cell"]
    I, H, L = cfg["input_size"], cfg["hidden_size"], cfg["num_layers"]
    D = 2 if cfg["bidirectional"] else 1
    P = cfg["proj_size"]
    G = _N_GATES[cell]
    Hout = P if P else H
    shapes = {}
    for k in range(L):
        in_k = I if k == 0 else D * Hout
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            shapes["weight_ih" + sfx] = (G * H, in_k)
            shapes["weight_hh" + sfx] = (G * H, Hout)
            if cfg["bias"]:
                shapes["bias_ih" + sfx] = (G * H,)
                shapes["bias_hh" + sfx] = (G * H,)
            if P:
                shapes["weight_hr" + sfx] = (P, H)
            if cell == "LSTM" and cfg["peephole"]:
                shapes["weight_ph" + sfx] = (3 * H,)
    return shapes


# --------------------------------------------------------------------------------------------
# the recurrence
# --------------------------------------------------------------------------------------------

def _run_direction(cfg, params, sfx, acts, xs, h0, c0, mask, reverse):
    """One layer, one direction.  xs (T, B, in) float64, h0 (B, Hout), c0 (B, H) or None,
    mask (T, B) bool.  Returns out (T, B, Hout), h_last, c_last."""
    cell = cfg["cell"]
    T, B, _ = xs.shape
    H = cfg["hidden_size"]
    G = _N_GATES[cell]
    clip = cfg["clip"]
    W_ih = np.asarray(params["weight_ih" + sfx], dtype=np.float64)
    W_hh = np.asarray(params["weight_hh" + sfx], dtype=np.float64)
    if cfg["bias"]:
        b_ih = np.asarray(params["bias_ih" + sfx], dtype=np.float64)
        b_hh = np.asarray(params["bias_hh" + sfx], dtype=np.float64)
    else:
        b_ih = np.zeros(G * H)
        b_hh = np.zeros(G * H)
    W_hr = None
    if cfg["proj_size"]:
        W_hr = np.asarray(params["weight_hr" + sfx], dtype=np.float64)
    peep = None
    if cell == "LSTM" and cfg["peephole"]:
        peep = np.asarray(params["weight_ph" + sfx], dtype=np.float64).reshape(3, H)

    def cl(v):
        return v if clip is None else np.clip(v, -clip, clip)

    Hout = h0.shape[1]
    out = np.zeros((T, B, Hout))
    h = h0.copy()
    c = None if c0 is None else c0.copy()
    # input projection for all time steps at once: (T, B, G*H)
    xw = xs @ W_ih.T + b_ih
    steps = range(T - 1, -1, -1) if reverse else range(T)
    for t in steps:
        m = mask[t][:, None]
        xt = xw[t]
        if cell == "LSTM":
            f_act, g_act, h_act = acts
            hw = h @ W_hh.T + b_hh
            pre = xt + hw
            pi, pf, pg, po = (pre[:, j * H:(j + 1) * H] for j in range(4))
            if peep is not None:
                pi = pi + peep[0] * c
                pf = pf + peep[1] * c
            i = f_act(cl(pi))
            if cfg["input_forget"]:
                f = 1.0 - i
            else:
                f = f_act(cl(pf))
            g = g_act(cl(pg))
            c_new = f * c + i * g
            if peep is not None:
                po = po + peep[2] * c_new
            o = f_act(cl(po))
            h_new = o * h_act(c_new)
            if W_hr is not None:
                h_new = h_new @ W_hr.T
            c = np.where(m, c_new, c)
        elif cell == "GRU":
            f_act, g_act = acts
            xr, xz, xn = (xt[:, j * H:(j + 1) * H] for j in range(3))
            W_hrz = W_hh[:2 * H]
            hrz = h @ W_hrz.T + b_hh[:2 * H]
            r = f_act(cl(xr + hrz[:, :H]))
            z = f_act(cl(xz + hrz[:, H:]))
            W_hn = W_hh[2 * H:]
            b_hn = b_hh[2 * H:]
            if cfg["linear_before_reset"]:
                n = g_act(cl(xn + r * (h @ W_hn.T + b_hn)))
            else:
                n = g_act(cl(xn + (r * h) @ W_hn.T + b_hn))
            h_new = (1.0 - z) * n + z * h
        else:  # RNN
            (act,) = acts
            h_new = act(cl(xt + h @ W_hh.T + b_hh))
        h = np.where(m, h_new, h)
        out[t] = np.where(m, h_new, 0.0)
    return out, h, c


def reference_forward(cell, params, config, x, hx=None, lengths=None):
    """Reference forward pass.  See the module docstring.

    cell: "LSTM" | "GRU" | "RNN" (case-insensitive; None takes config["cell"]).
    x: (T, B, I), (B, T, I) with batch_first, or unbatched (T, I).
    hx: None, an array (GRU/RNN) or a (h0, c0) pair (LSTM), shaped (L*D, B, H*) or (L*D, H*)
        for unbatched input.
    lengths: None or one int per batch entry in 0..T (packed-sequence semantics).
    """
    cfg = normalise_config(cell, config)
    cell = cfg["cell"]
    with np.errstate(all="ignore"):
        return _forward(cfg, params, x, hx, lengths)


def _forward(cfg, params, x, hx, lengths):
    cell = cfg["cell"]
    x = np.asarray(x, dtype=np.float64)
    unbatched = x.ndim == 2
    if x.ndim not in (2, 3):
        raise ValueError("x must be 2-D or 3-D")
    if unbatched:
        x = x[:, None, :]
    elif cfg["batch_first"]:
        x = x.transpose(1, 0, 2)
    T, B, I = x.shape
    if I != cfg["input_size"]:
        raise ValueError("feature size mismatch")
    L = cfg["num_layers"]
    D = 2 if cfg["bidirectional"] else 1
    H = cfg["hidden_size"]
    P = cfg["proj_size"]
    Hout = P if P else H

    def state(a, width):
        if a is None:
            return np.zeros((L * D, B, width))
        a = np.asarray(a, dtype=np.float64)
        if unbatched:
            a = a[:, None, :]
        if a.shape != (L * D, B, width):
            raise ValueError(f"state shape {a.shape} != {(L * D, B, width)}")
        return a

    if cell == "LSTM":
        if hx is None:
            h0, c0 = state(None, Hout), state(None, H)
        else:
            h0, c0 = state(hx[0], Hout), state(hx[1], H)
    else:
        h0, c0 = state(hx, Hout), None

    if lengths is None:
        mask = np.ones((T, B), dtype=bool)
    else:
        lens = np.asarray(lengths)
        if unbatched:
            lens = lens.reshape(1)
        if lens.shape != (B,):
            raise ValueError("lengths must have one entry per batch element")
        if lens.size and (lens.min() < 0 or lens.max() > T):
            raise ValueError("lengths outside 0..T")
        mask = np.arange(T)[:, None] < lens[None, :]

    layer_in = x
    h_n = np.zeros((L * D, B, Hout))
    c_n = np.zeros((L * D, B, H)) if cell == "LSTM" else None
    for k in range(L):
        outs = []
        for d in range(D):
            idx = k * D + d
            sfx = f"_l{k}" + ("_reverse" if d else "")
            acts = _direction_activations(cfg, d)
            o, hl, cl_ = _run_direction(
                cfg, params, sfx, acts, layer_in, h0[idx],
                None if c0 is None else c0[idx], mask, reverse=bool(d))
            outs.append(o)
            h_n[idx] = hl
            if c_n is not None:
                c_n[idx] = cl_
        layer_in = np.concatenate(outs, axis=2) if D == 2 else outs[0]
    out = layer_in
    if unbatched:
        out = out[:, 0, :]
        h_n = h_n[:, 0, :]
        if c_n is not None:
            c_n = c_n[:, 0, :]
    elif cfg["batch_first"]:
        out = out.transpose(1, 0, 2)
    if cell == "LSTM":
        return out, (h_n, c_n)
    return out, h_n


# --------------------------------------------------------------------------------------------
# helpers shared by the tests
# --------------------------------------------------------------------------------------------

#: grid cell specs: name -> (cell class name, extra constructor kwargs)
CELL_SPECS = {
    "lstm": ("LSTM", {}),
    "gru": ("GRU", {}),
    "gru_lbr0": ("GRU", {"linear_before_reset": False}),
    "rnn_tanh": ("RNN", {"nonlinearity": "tanh"}),
    "rnn_relu": ("RNN", {"nonlinearity": "relu"}),
}


def make_params(cell, config, rng, scale=None):
    """Random float32 parameters with PyTorch's default init uniform(-1/sqrt(H), 1/sqrt(H))."""
    cfg = normalise_config(cell, config)
    k = scale if scale is not None else 1.0 / math.sqrt(cfg["hidden_size"])
    return {
        name: rng.uniform(-k, k, size=shape).astype(np.float32)
        for name, shape in param_shapes(cfg["cell"], cfg).items()
    }


def max_abs_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)))


def assert_close(actual, expected, tol, what="", equal_nan=True, rtol=0.0):
    """Max-abs-error comparison (|actual - expected| <= tol + rtol * |expected|; rtol is for
    unbounded activations whose outputs grow well past 1) that also checks the shape and the
    NaN/Inf pattern exactly."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != expected {expected.shape}"
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    if equal_nan:
        bad = np.argwhere(nan_a != nan_e)
        assert bad.size == 0, (
            f"{what}: NaN pattern differs at {len(bad)} positions, first {tuple(bad[0])}: "
            f"got {a[tuple(bad[0])]}, expected {e[tuple(bad[0])]}")
    else:
        assert not nan_a.any() and not nan_e.any(), f"{what}: unexpected NaN"
    inf_a = np.isinf(a) & ~nan_a
    inf_e = np.isinf(e) & ~nan_e
    bad = np.argwhere((inf_a != inf_e) | (inf_a & (np.sign(a) != np.sign(e))))
    assert bad.size == 0, (
        f"{what}: Inf pattern differs at {len(bad)} positions, first {tuple(bad[0])}: "
        f"got {a[tuple(bad[0])]}, expected {e[tuple(bad[0])]}")
    fin = np.isfinite(a) & np.isfinite(e)
    if fin.any():
        with np.errstate(all="ignore"):
            diff = np.where(fin, np.abs(a - e), 0.0)
            excess = diff - (tol + rtol * np.where(fin, np.abs(e), 0.0))
        if excess.max() > 0:
            pos = np.unravel_index(int(np.argmax(excess)), diff.shape)
            raise AssertionError(
                f"{what}: abs error {diff[pos]:.3g} > {tol:.3g}"
                + (f" + {rtol:.3g}*|expected|" if rtol else "")
                + f" at {tuple(int(p) for p in pos)} (got {a[pos]!r}, expected {e[pos]!r}); "
                f"max abs error {diff.max():.3g}, shape {a.shape}")


#: max abs error allowed against the float64 reference, per input dtype.  float16 and float32
#: inputs are exactly representable in float32; float64 inputs are rounded to float32 first
#: (relative 6e-8, far below the tolerance).
TOLERANCE = {
    np.dtype(np.float16): 1e-5,
    np.dtype(np.float32): 1e-5,
    np.dtype(np.float64): 1e-5,
}


def random_states(cell, cfg, B, rng, unbatched=False, scale=1.0):
    """Random float32 initial states for a (normalised) config."""
    L = cfg["num_layers"]
    D = 2 if cfg["bidirectional"] else 1
    H = cfg["hidden_size"]
    Hout = cfg["proj_size"] or H
    hs = (L * D, Hout) if unbatched else (L * D, B, Hout)
    cs = (L * D, H) if unbatched else (L * D, B, H)
    h0 = (scale * rng.standard_normal(hs)).astype(np.float32)
    if cell == "LSTM":
        return h0, (scale * rng.standard_normal(cs)).astype(np.float32)
    return h0


def split_result(cell, res):
    """(out, h_n) or (out, (h_n, c_n)) -> (out, [h_n, (c_n)])."""
    out, st = res
    if cell == "LSTM":
        assert isinstance(st, tuple) and len(st) == 2, f"LSTM must return (out, (h_n, c_n)), got {type(st)}"
        return out, list(st)
    return out, [st]


def call_layer(layer, x, hx=None, lengths=None):
    """Call a layer passing only the arguments that are set (so the defaults get exercised)."""
    kw = {}
    if hx is not None:
        kw["hx"] = hx
    if lengths is not None:
        kw["lengths"] = lengths
    return layer(x, **kw)


def check_layer(layer, cell, params, cfg, x, hx=None, lengths=None, tol=None, what="", rtol=0.0):
    """Run ``layer`` and the reference on the same inputs and compare everything: result
    structure, float32 numpy outputs, shapes, values (max abs error <= tol, NaN/Inf pattern
    exact), and that the inputs were not modified.  Returns the layer's result."""
    x_arr = np.asarray(x)
    if tol is None:
        tol = TOLERANCE.get(x_arr.dtype, 1e-5)
    x_before = np.array(x_arr, copy=True)
    hx_before = None
    if hx is not None:
        hx_before = [np.array(a, copy=True) for a in (hx if cell == "LSTM" else [hx])]
    res = call_layer(layer, x, hx, lengths)
    exp = reference_forward(cell, params, cfg, x, hx, lengths)
    out, sts = split_result(cell, res)
    eout, ests = split_result(cell, exp)
    names = ["h_n", "c_n"]
    for name, a in [("out", out)] + list(zip(names, sts)):
        assert isinstance(a, np.ndarray), f"{what}: {name} is {type(a).__name__}, not a numpy array"
        assert a.dtype == np.float32, f"{what}: {name} dtype {a.dtype}, expected float32"
    assert_close(out, eout, tol, f"{what} out", rtol=rtol)
    for name, a, e in zip(names, sts, ests):
        assert_close(a, e, tol, f"{what} {name}", rtol=rtol)
    np.testing.assert_array_equal(np.asarray(x), x_before, err_msg=f"{what}: x was modified")
    if hx is not None:
        for a, b in zip(hx if cell == "LSTM" else [hx], hx_before):
            np.testing.assert_array_equal(np.asarray(a), b, err_msg=f"{what}: hx was modified")
    return res
