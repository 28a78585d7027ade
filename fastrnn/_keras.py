"""Keras 3 -> fastrnn conversion.

``from_keras(obj, config=None)`` accepts

* a live Keras 3 ``LSTM``, ``GRU`` or ``SimpleRNN`` layer, a ``keras.layers.RNN`` wrapping a single
  ``LSTMCell`` / ``GRUCell`` / ``SimpleRNNCell``, or a ``Bidirectional`` wrapper around any of these
  -> one :class:`KerasRecurrent`;
* a live Keras model -> list of :class:`KerasRecurrent`, one per recurrent layer, in model order
  (nested Sequential / Functional sub-models are searched too);
* a path to a ``.keras`` archive -> list of :class:`KerasRecurrent` (model order, nested models
  included);
* a path to a ``.weights.h5`` file (Keras 3 ``model.save_weights``) plus ``config=``: a layer's
  ``get_config()`` dict (or its serialized form ``{"class_name": ..., "config": ...}``) -> one
  :class:`KerasRecurrent`; a list of such dicts, or a model config (``model.get_config()`` or the
  ``config.json`` of a ``.keras`` archive) -> list;
* a path to a legacy HDF5 model (``model.save("m.h5")`` in tf.keras 2 or Keras 3) -> list, from
  the architecture stored in it; a legacy weights-only ``.h5`` (``save_weights("w.h5")``) takes
  ``config=`` as above.

Reading files needs only ``h5py``, ``zipfile`` and ``json``: Keras, TensorFlow and torch are never
imported by this module (live layers are only duck-typed through ``get_config`` / ``get_weights``).

Conversion rules (Keras stores kernels as (input_dim, G*units), i.e. transposed w.r.t. PyTorch):

* LSTM: Keras gate order (i, f, c, o) is PyTorch's (i, f, g, o).  ``weight_ih = kernel.T``,
  ``weight_hh = recurrent_kernel.T``, ``bias_ih = bias``, ``bias_hh = 0``.
  activations = [recurrent_activation, activation, activation].  ``unit_forget_bias`` only affects
  initialisation and is ignored.
* GRU: Keras gate order (z, r, h) is reordered to PyTorch's (r, z, n).  ``reset_after=True``
  (bias shape (2, 3H): input row, recurrent row) -> ``fastrnn.GRU(linear_before_reset=True)``;
  ``reset_after=False`` (bias (3H,)) -> ``linear_before_reset=False`` with the bias as input bias
  and a zero recurrent bias.  activations = [recurrent_activation, activation].
* SimpleRNN: activations = [activation].
* Activations: tanh, sigmoid, relu, linear (also ``None``), hard_sigmoid (Keras 3 definition
  relu6(x + 3) / 6 = clip(x / 6 + 0.5, 0, 1), i.e. fastrnn hardsigmoid alpha=1/6 beta=0.5),
  elu (alpha 1), softsign, softplus, leaky_relu (Keras default slope 0.2).  Anything else raises
  ``ValueError`` naming it.
* ``use_bias=False`` -> fastrnn ``bias=False``.

The returned :class:`KerasRecurrent` is called like a fastrnn layer on batch-first input::

    out, state = wrapper(x)            # x: (B, T, I) float32
    # out == keras_layer(x) with return_sequences=True

Semantics / limitations (documented behaviour):

* ``out`` is always the full sequence (what Keras returns with ``return_sequences=True``),
  whatever the layer's own ``return_sequences``; with ``return_sequences=False`` Keras returns
  ``out[:, -1]`` for a single layer, but merge(forward[:, -1], backward[:, 0]) for a
  ``Bidirectional`` (each direction's last processed step).  ``wrapper.keras_call(x)`` returns
  exactly what the Keras layer returns under its own ``return_sequences`` / ``return_state``.
* ``go_backwards=True``: like Keras 3, the layer reads the input from the last step to the first
  and returns its outputs in processing order, i.e. reversed in time w.r.t. the input.
* ``Bidirectional``: merge modes concat / sum / ave / mul; ``merge_mode=None`` makes ``out`` a
  list ``[forward_out, backward_out]`` (the backward output re-aligned with the input, as Keras
  does).  When both directions have the same type, size and activations (always the case unless
  ``backward_layer=`` was given) a single bidirectional fastrnn layer runs both directions.
* ``state`` is in fastrnn / PyTorch layout: ``h_n`` (D, B, H) for GRU / SimpleRNN and
  ``(h_n, c_n)`` for LSTM, D = 2 for a fused Bidirectional; for a non-fused Bidirectional
  ``state`` is the pair ``(forward_state, backward_state)`` and ``hx`` must be such a pair too.
  ``hx`` is passed to fastrnn unchanged (fastrnn layout).
* Masks: a Keras ``Masking`` layer / ``mask=`` is ignored by the converter.  To reproduce a
  right-padded masked batch pass ``lengths=`` (one length per sequence): outputs past a
  sequence's length are 0 (like Keras with ``zero_output_for_mask=True``, which ``Bidirectional``
  forces), a ``go_backwards`` layer reads each sequence from its own last valid step, and the
  returned state is each sequence's state after its last valid step.
* ``stateful``, ``dropout``, ``recurrent_dropout``, ``unroll`` do not affect inference and are
  ignored (a stateful Keras layer equals this wrapper on its first batch; carry states with
  ``hx``).  Weights are converted to float32 whatever the Keras dtype policy.
"""

import io
import json
import os
import re
import warnings
import zipfile

import numpy as np

__all__ = ["from_keras", "KerasRecurrent"]

_SIMPLE = ("LSTM", "GRU", "SimpleRNN")
_CELLS = {"LSTMCell": "LSTM", "GRUCell": "GRU", "SimpleRNNCell": "SimpleRNN"}
_MODELS = ("Sequential", "Functional", "Model")
_MERGE_MODES = ("concat", "sum", "ave", "mul", None)
_GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}

# Keras activation name -> (fastrnn name, alpha, beta); None alpha/beta = fastrnn default.
_ACTIVATIONS = {
    "tanh": ("tanh", None, None),
    "sigmoid": ("sigmoid", None, None),
    "relu": ("relu", None, None),
    "linear": ("affine", 1.0, 0.0),
    # Keras 3: hard_sigmoid(x) = relu6(x + 3) / 6 = clip(x / 6 + 0.5, 0, 1)
    "hard_sigmoid": ("hardsigmoid", 1.0 / 6.0, 0.5),
    "elu": ("elu", 1.0, None),
    "softsign": ("softsign", None, None),
    "softplus": ("softplus", None, None),
    "leaky_relu": ("leakyrelu", 0.2, None),
}


# ----------------------------------------------------------------------------------------------
# Wrapper
# ----------------------------------------------------------------------------------------------

def _flip_time(a, taxis):
    return np.ascontiguousarray(np.flip(a, axis=taxis))


def _backwards_gather(T, lengths):
    """Index arrays for go_backwards with per-sequence lengths.

    src_in[b, t]: input step read at processing step t (L-1-t for t < L, padding otherwise).
    src_out[b, k]: processing step shown at Keras output position k (row roll by T - L; positions
    k < T - L are padding and get 0), valid[b, k] says which positions are real.
    """
    L = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if L.size and (L.min() < 0 or L.max() > T):
        raise ValueError(f"lengths must lie in [0, {T}], got {L.tolist()}")
    t = np.arange(T, dtype=np.int64)[None, :]
    Lc = L[:, None]
    src_in = np.where(t < Lc, Lc - 1 - t, t)
    src = t - (T - Lc)
    valid = src >= 0
    return L, src_in, np.where(valid, src, 0), valid


class KerasRecurrent:
    """A converted Keras recurrent layer: a fastrnn layer plus Keras' post-processing.

    Attributes
    ----------
    layer : the fastrnn layer (``batch_first=True``); for a non-fused ``Bidirectional`` a tuple
        ``(forward_layer, backward_layer)`` of fastrnn layers.
    config : the Keras layer config, serialized form ``{"class_name": ..., "config": {...}}``.
    name, class_name, go_backwards, merge_mode, bidirectional : Keras attributes.
    forward, backward : sub-wrappers of a non-fused ``Bidirectional`` (else None).

    ``wrapper(x, hx=None, lengths=None) -> (out, state)``, ``x`` batch-first (B, T, I) (or
    unbatched (T, I)); see the module docstring for the exact semantics.
    """

    def __init__(self, layer, config, *, go_backwards=False, merge_mode="concat",
                 bidirectional=False, fused=True, forward=None, backward=None):
        self.layer = layer
        self.config = config
        self.class_name = config.get("class_name")
        self.name = config.get("config", {}).get("name")
        self.go_backwards = bool(go_backwards)
        self.bidirectional = bool(bidirectional)
        self.merge_mode = merge_mode if bidirectional else None
        self.fused = fused
        self.forward = forward
        self.backward = backward

    def __repr__(self):
        extra = ""
        if self.bidirectional:
            extra = f", merge_mode={self.merge_mode!r}, fused={self.fused}"
        elif self.go_backwards:
            extra = ", go_backwards=True"
        return f"KerasRecurrent({self.class_name} {self.name!r}{extra})"

    # -- single direction ------------------------------------------------------------------
    def _run_single(self, x, hx, lengths):
        taxis = x.ndim - 2
        if not self.go_backwards:
            return self.layer(x, hx, lengths) if lengths is not None else self.layer(x, hx)
        if lengths is None:
            return self.layer(_flip_time(x, taxis), hx)
        if x.ndim != 3:
            raise ValueError("lengths= needs batched input (B, T, I)")
        T = x.shape[1]
        L, src_in, src_out, valid = _backwards_gather(T, lengths)
        xr = np.take_along_axis(x, src_in[:, :, None], axis=1)
        out, state = self.layer(xr, hx, L.tolist())
        out = np.take_along_axis(out, src_out[:, :, None], axis=1)
        out *= valid[:, :, None]
        return out, state

    def _merge(self, y, y_rev):
        m = self.merge_mode
        if m == "concat":
            return np.concatenate([y, y_rev], axis=-1)
        if m == "sum":
            return y + y_rev
        if m == "ave":
            return (y + y_rev) * np.float32(0.5)
        if m == "mul":
            return y * y_rev
        return [y, y_rev]

    @staticmethod
    def _input(x):
        x = np.asarray(x, dtype=np.float32)
        if x.ndim not in (2, 3):
            raise ValueError(f"expected input of shape (B, T, I) or (T, I), got {x.shape}")
        return x

    def _bidir_parts(self, x, hx, lengths):
        """(forward output, backward output aligned with the input, state)."""
        if self.fused:
            out, state = (self.layer(x, hx, lengths) if lengths is not None
                          else self.layer(x, hx))
            H = out.shape[-1] // 2
            return out, (out[..., :H], out[..., H:]), state
        hf, hb = (None, None) if hx is None else hx
        y, sf = self.forward(x, hf, lengths)
        y_rev, sb = self.backward(x, hb, lengths)
        # Keras' Bidirectional flips the backward layer's (return_sequences) output in time.
        return None, (y, _flip_time(y_rev, x.ndim - 2)), (sf, sb)

    def __call__(self, x, hx=None, lengths=None):
        """``(out, state)``: ``out`` is the Keras output with ``return_sequences=True``."""
        x = self._input(x)
        if not self.bidirectional:
            return self._run_single(x, hx, lengths)
        cat, (y, y_rev), state = self._bidir_parts(x, hx, lengths)
        if cat is not None and self.merge_mode == "concat":
            return cat, state
        return self._merge(y, y_rev), state

    def keras_call(self, x):
        """What the Keras layer itself returns for ``x`` (zero initial state, no mask), honouring
        its ``return_sequences`` / ``return_state`` settings: the output, or ``[output, *states]``
        with Keras' state order (h[, c] per direction, forward first), each state (B, units).
        """
        x = self._input(x)
        cfg = self.config.get("config", {})
        rs, rst = cfg.get("return_sequences", False), cfg.get("return_state", False)
        if self.bidirectional:
            sub = cfg.get("layer")
            sub = sub.get("config", sub) if isinstance(sub, dict) else {}
            rs = sub.get("return_sequences", rs)
            rst = sub.get("return_state", rst)
            _, (y, y_rev), state = self._bidir_parts(x, None, None)
            if not rs:  # last processed step of each direction
                y, y_rev = y[..., -1, :], y_rev[..., 0, :]
            out = self._merge(y, y_rev)
            if self.fused:
                parts = [state] if not isinstance(state, tuple) else list(state)
                states = [s[d] for d in range(2) for s in parts]
            else:
                states = []
                for st in state:
                    parts = [st] if not isinstance(st, tuple) else list(st)
                    states += [s[0] for s in parts]
        else:
            out, state = self._run_single(x, None, None)
            if not rs:
                out = out[..., -1, :]
            parts = [state] if not isinstance(state, tuple) else list(state)
            states = [s[0] for s in parts]
        if not rst:
            return out
        return (list(out) if isinstance(out, list) else [out]) + states


# ----------------------------------------------------------------------------------------------
# Specs: (class, config, weights) independent of where they came from
# ----------------------------------------------------------------------------------------------

def _act_name(a, where):
    if a is None:
        return "linear"
    if isinstance(a, dict):  # serialized function {"class_name": "function", "config": "relu", ...}
        if a.get("class_name") == "function" and isinstance(a.get("config"), str):
            a = a["config"]
        else:
            raise ValueError(f"unsupported Keras activation {a!r} ({where})")
    if callable(a):
        a = getattr(a, "__name__", repr(a))
    if not isinstance(a, str):
        raise ValueError(f"unsupported Keras activation {a!r} ({where})")
    return a


def _activation(a, where):
    name = _act_name(a, where)
    key = name.lower()
    if key not in _ACTIVATIONS:
        raise ValueError(
            f"unsupported Keras activation {name!r} ({where}); supported: "
            + ", ".join(sorted(_ACTIVATIONS)))
    return _ACTIVATIONS[key]


def _serialized(class_name, cfg):
    return {"class_name": class_name, "config": cfg}


def _unwrap(cfg):
    """(class_name or None, inner config) from a serialized or bare layer config."""
    if isinstance(cfg, dict) and "class_name" in cfg and isinstance(cfg.get("config"), dict):
        return cfg["class_name"], cfg["config"]
    return None, cfg


def _infer_class(cfg):
    """Guess the Keras class of a bare get_config() dict."""
    if "layers" in cfg:
        return "Functional"
    if "layer" in cfg and "merge_mode" in cfg:
        return "Bidirectional"
    if "cell" in cfg:
        return "RNN"
    if "units" in cfg and "go_backwards" in cfg:  # RNN-layer keys (a Dense config has neither)
        if "reset_after" in cfg:
            return "GRU"
        if "unit_forget_bias" in cfg or "recurrent_activation" in cfg:
            return "LSTM"
        return "SimpleRNN"
    raise ValueError(f"cannot tell which Keras layer this config describes: keys {sorted(cfg)}")


def _simple_kind(class_name, cfg):
    """(kind, cell config) for LSTM/GRU/SimpleRNN or RNN(cell); None if not recurrent."""
    if class_name in _SIMPLE:
        return class_name, cfg
    if class_name == "RNN":
        cell = cfg.get("cell")
        ccls, ccfg = _unwrap(cell) if isinstance(cell, dict) else (None, None)
        if ccls in _CELLS:
            return _CELLS[ccls], ccfg
        raise ValueError(
            f"Keras RNN layer {cfg.get('name')!r}: unsupported cell "
            f"{ccls or cell!r} (supported: {', '.join(_CELLS)})")
    return None


def _to_f32(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def _build_simple(kind, cell_cfg, weights, where):
    """Converted parameters of one Keras recurrent layer (torch layout, fastrnn activations)."""
    H = int(cell_cfg["units"])
    G = _GATES[kind]
    use_bias = bool(cell_cfg.get("use_bias", True))
    reset_after = bool(cell_cfg.get("reset_after", True)) if kind == "GRU" else None
    nw = 3 if use_bias else 2
    if len(weights) != nw:
        raise ValueError(f"{where}: expected {nw} weight arrays for a {kind} with "
                         f"use_bias={use_bias}, found {len(weights)}")
    kernel, rk = _to_f32(weights[0]), _to_f32(weights[1])
    if kernel.ndim != 2 or kernel.shape[1] != G * H:
        raise ValueError(f"{where}: kernel shape {kernel.shape}, expected (input_dim, {G * H})")
    if rk.shape != (H, G * H):
        raise ValueError(f"{where}: recurrent_kernel shape {rk.shape}, expected {(H, G * H)}")
    I = kernel.shape[0]
    bias_ih = bias_hh = None
    if use_bias:
        b = _to_f32(weights[2])
        if kind == "GRU" and reset_after:
            if b.shape != (2, G * H):
                raise ValueError(f"{where}: GRU(reset_after=True) bias shape {b.shape}, "
                                 f"expected {(2, G * H)}")
            bias_ih, bias_hh = b[0], b[1]
        else:
            if b.shape != (G * H,):
                raise ValueError(f"{where}: bias shape {b.shape}, expected {(G * H,)}")
            bias_ih, bias_hh = b, np.zeros_like(b)

    W_ih, W_hh = kernel.T, rk.T
    if kind == "GRU":  # Keras (z, r, h) -> torch (r, z, n)
        def perm(a):
            return np.concatenate([a[H:2 * H], a[:H], a[2 * H:]], axis=0)
        W_ih, W_hh = perm(W_ih), perm(W_hh)
        if use_bias:
            bias_ih, bias_hh = perm(bias_ih), perm(bias_hh)

    if kind == "LSTM":
        acts = [cell_cfg.get("recurrent_activation", "sigmoid"),
                cell_cfg.get("activation", "tanh"), cell_cfg.get("activation", "tanh")]
    elif kind == "GRU":
        acts = [cell_cfg.get("recurrent_activation", "sigmoid"), cell_cfg.get("activation", "tanh")]
    else:
        acts = [cell_cfg.get("activation", "tanh")]
    mapped = [_activation(a, where) for a in acts]

    sd = {"weight_ih_l0": W_ih, "weight_hh_l0": W_hh}
    if use_bias:
        sd["bias_ih_l0"], sd["bias_hh_l0"] = bias_ih, bias_hh
    sd = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}
    return dict(kind=kind, I=I, H=H, use_bias=use_bias, reset_after=reset_after,
                acts=mapped, sd=sd)


def _make_layer(parts):
    """One fastrnn layer from one part (unidirectional) or two identical-shape parts (bidir)."""
    from . import GRU, LSTM, RNN

    p = parts[0]
    bidir = len(parts) == 2
    acts, alphas, betas = [], [], []
    for q in parts:
        for name, a, b in q["acts"]:
            acts.append(name)
            alphas.append(a)
            betas.append(b)
    kw = dict(bias=p["use_bias"], batch_first=True, bidirectional=bidir, activations=acts,
              activation_alpha=alphas, activation_beta=betas)
    if p["kind"] == "LSTM":
        layer = LSTM(p["I"], p["H"], **kw)
    elif p["kind"] == "GRU":
        layer = GRU(p["I"], p["H"], linear_before_reset=p["reset_after"], **kw)
    else:
        layer = RNN(p["I"], p["H"], nonlinearity="tanh", **kw)
    sd = dict(p["sd"])
    if bidir:
        sd.update({k + "_reverse": v for k, v in parts[1]["sd"].items()})
    layer.load_state_dict(sd)
    return layer


def _fusable(a, b):
    return all(a[k] == b[k] for k in ("kind", "I", "H", "use_bias", "reset_after", "acts"))


def _wrap_simple(class_name, cfg, weights, where):
    kind, cell_cfg = _simple_kind(class_name, cfg)
    part = _build_simple(kind, cell_cfg, weights, where)
    return KerasRecurrent(_make_layer([part]), _serialized(class_name, cfg),
                          go_backwards=cfg.get("go_backwards", False)), part


def _wrap_bidirectional(cfg, fwd, bwd, where):
    """fwd / bwd: (class_name, config, weights) of the two sub-layers."""
    merge_mode = cfg.get("merge_mode", "concat")
    if merge_mode not in _MERGE_MODES:
        raise ValueError(f"{where}: unsupported Bidirectional merge_mode {merge_mode!r}")
    wf, pf = _wrap_simple(*fwd, where=f"{where} (forward layer)")
    wb, pb = _wrap_simple(*bwd, where=f"{where} (backward layer)")
    ser = _serialized("Bidirectional", cfg)
    if not wf.go_backwards and wb.go_backwards and _fusable(pf, pb):
        return KerasRecurrent(_make_layer([pf, pb]), ser, merge_mode=merge_mode,
                              bidirectional=True, fused=True)
    return KerasRecurrent((wf.layer, wb.layer), ser, merge_mode=merge_mode, bidirectional=True,
                          fused=False, forward=wf, backward=wb)


# ----------------------------------------------------------------------------------------------
# Live Keras objects (duck-typed: no keras import)
# ----------------------------------------------------------------------------------------------

def _mro_names(obj):
    return [c.__name__ for c in type(obj).__mro__]


def _keras_class(obj):
    if not any(c.__module__.split(".")[0] in ("keras", "tf_keras") for c in type(obj).__mro__):
        return None
    names = _mro_names(obj)
    for n in ("Bidirectional",) + _SIMPLE + ("RNN",):
        if n in names:
            return n
    if any(n in names for n in _MODELS) and hasattr(obj, "layers"):
        return "Model"
    return None


def _live_weights(layer):
    if not getattr(layer, "built", True) or not layer.get_weights():
        raise ValueError(f"Keras layer {getattr(layer, 'name', layer)!r} is not built (no "
                         "weights yet): call it on an input or build() it first")
    return layer.get_weights()


def _live_simple(layer, class_name):
    cfg = layer.get_config()
    where = f"Keras layer {cfg.get('name')!r}"
    if class_name == "RNN":
        cell = layer.cell
        cname = next((n for n in _mro_names(cell) if n in _CELLS), None)
        if cname is None:
            raise ValueError(f"{where}: unsupported cell {type(cell).__name__} "
                             f"(supported: {', '.join(_CELLS)})")
        cfg = dict(cfg, cell=_serialized(cname, cell.get_config()))
    return class_name, cfg, _live_weights(layer)


def _from_live_layer(layer):
    cls = _keras_class(layer)
    if cls == "Bidirectional":
        cfg = layer.get_config()
        if layer.merge_mode not in _MERGE_MODES:
            raise ValueError(f"unsupported Bidirectional merge_mode {layer.merge_mode!r}")
        cfg["merge_mode"] = layer.merge_mode
        subs = []
        for sub in (layer.forward_layer, layer.backward_layer):
            scls = _keras_class(sub)
            if scls not in _SIMPLE + ("RNN",):
                raise ValueError(f"Bidirectional {layer.name!r}: unsupported wrapped layer "
                                 f"{type(sub).__name__}")
            subs.append(_live_simple(sub, scls))
        return _wrap_bidirectional(cfg, subs[0], subs[1], f"Keras layer {layer.name!r}")
    if cls in _SIMPLE + ("RNN",):
        return _wrap_simple(*_live_simple(layer, cls), where=f"Keras layer {layer.name!r}")[0]
    raise ValueError(f"unsupported Keras object {type(layer).__name__}: expected LSTM, GRU, "
                     "SimpleRNN, RNN(cell) or Bidirectional")


def _from_live_model(model):
    out = []
    for layer in model.layers:
        cls = _keras_class(layer)
        if cls == "Model":
            out.extend(_from_live_model(layer))
        elif cls is not None:
            out.append(_from_live_layer(layer))
    return out


# ----------------------------------------------------------------------------------------------
# Keras 3 weight files (h5py only)
# ----------------------------------------------------------------------------------------------

def _snake(name):  # keras.src.utils.naming.to_snake_case
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _import_h5py():
    try:
        import h5py
    except ImportError as e:  # pragma: no cover
        raise ImportError("reading Keras weight files needs h5py: pip install h5py") from e
    return h5py


def _read_var(ds):
    a = ds[()]
    if ds.attrs.get("dtype") in ("bfloat16", b"bfloat16"):  # stored as raw uint16 bits
        a = (np.asarray(a).astype(np.uint32) << 16).view(np.float32)
    return _to_f32(a)


def _group_name_attr(g):
    v = g.get("vars") if hasattr(g, "get") else None
    if v is None:
        return None
    n = v.attrs.get("name")
    return n.decode() if isinstance(n, bytes) else n


def _cell_weights(group, where):
    h5py = _import_h5py()
    v = group.get("cell/vars")
    if not isinstance(v, h5py.Group):
        raise ValueError(f"{where}: no 'cell/vars' group under {group.name!r} in the weights file")
    keys = sorted(v.keys(), key=lambda k: int(k) if k.isdigit() else 1 << 30)
    return [_read_var(v[k]) for k in keys]


class _WeightsFile:
    """Locates layers in a Keras 3 weights h5 file."""

    def __init__(self, h5, filename):
        self.h5 = h5
        self.filename = filename

    def layers_group(self, base):
        g = base.get("layers")
        if g is None:
            g = base.get("_layer_checkpoint_dependencies")  # tf.keras 2.13 compatibility
        return g

    def find(self, layers_group, key, name, where):
        """Group for a layer saved under layers/<key>; cross-checked with the stored layer name."""
        g = layers_group.get(key) if layers_group is not None else None
        if g is not None:
            stored = _group_name_attr(g)
            if stored is None or name is None or stored == name:
                return g
        if layers_group is not None and name is not None:
            found = self.search_by_name(layers_group, name)
            if found is not None:
                return found
        if g is not None:
            return g
        avail = sorted(layers_group.keys()) if layers_group is not None else []
        raise ValueError(f"{self.filename}: weights of {where} not found (looked for "
                         f"'{key}' / layer name {name!r}; groups: {avail})")

    def search_by_name(self, layers_group, name):
        h5py = _import_h5py()
        for k in layers_group:
            g = layers_group[k]
            if not isinstance(g, h5py.Group):
                continue
            if _group_name_attr(g) == name:
                return g
            sub = g.get("layers")
            if isinstance(sub, h5py.Group):
                r = self.search_by_name(sub, name)
                if r is not None:
                    return r
        return None


def _layer_entries(layer_cfgs):
    """Normalize a list of layer configs to (class_name, config) pairs."""
    out = []
    for lc in layer_cfgs:
        if not isinstance(lc, dict):
            raise ValueError(f"layer config must be a dict, got {type(lc).__name__}")
        cls, cfg = _unwrap(lc)
        if cls is None:
            cls = _infer_class(cfg)
        out.append((cls, cfg))
    return out


def _is_model(cls, cfg):
    return cls in _MODELS or "layers" in cfg


def _bidirectional_subs(cfg, where):
    """(class_name, config) of a Bidirectional config's forward and backward layers."""
    subs = []
    for key in ("layer", "backward_layer"):
        sub = cfg.get(key)
        if sub is None and key == "backward_layer":  # older configs: derived from `layer`
            scls, scfg = _unwrap(cfg["layer"])
            scfg = dict(scfg, go_backwards=not scfg.get("go_backwards", False))
        else:
            scls, scfg = _unwrap(sub)
            if scls is None:
                scls = _infer_class(scfg)
        if scls not in _SIMPLE + ("RNN",):
            raise ValueError(f"{where}: unsupported layer {scls!r} inside Bidirectional")
        subs.append((scls, scfg))
    return subs


def _convert_file_layer(wf, group, cls, cfg, where):
    h5py = _import_h5py()
    if cls == "Bidirectional":
        subs = []
        for (scls, scfg), gkey in zip(_bidirectional_subs(cfg, where),
                                      ("forward_layer", "backward_layer")):
            g = group.get(gkey)
            if not isinstance(g, h5py.Group):
                raise ValueError(f"{wf.filename}: no '{gkey}' group for {where}")
            subs.append((scls, scfg, _cell_weights(g, f"{wf.filename}: {where}")))
        return _wrap_bidirectional(cfg, subs[0], subs[1], f"{wf.filename}: {where}")
    return _wrap_simple(cls, cfg, _cell_weights(group, f"{wf.filename}: {where}"),
                        where=f"{wf.filename}: {where}")[0]


def _is_recurrent(cls):
    return cls in _SIMPLE or cls in ("RNN", "Bidirectional")


def _warn_skipped(filename, name, cls):
    """Other layers are skipped silently; an unsupported recurrent one with a warning."""
    if re.search("LSTM|GRU|RNN", cls):
        warnings.warn(f"{filename}: skipping layer {name!r}: {cls} is not supported "
                      "(LSTM, GRU, SimpleRNN, RNN(cell), Bidirectional are)", stacklevel=4)


def _walk_model(wf, base_group, model_cfg, out):
    """Append converted recurrent layers of a model config (nested models included)."""
    layers_group = wf.layers_group(base_group) if base_group is not None else None
    used = {}
    for cls, cfg in _layer_entries(model_cfg.get("layers", [])):
        base = _snake(cls)
        if base in used:
            used[base] += 1
            key = f"{base}_{used[base]}"
        else:
            used[base] = 0
            key = base
        name = cfg.get("name")
        if _is_model(cls, cfg):
            sub = layers_group.get(key) if layers_group is not None else None
            if sub is None and name is not None and layers_group is not None:
                sub = wf.search_by_name(layers_group, name)
            _walk_model(wf, sub, cfg, out)
            continue
        if not _is_recurrent(cls):
            _warn_skipped(wf.filename, name, cls)
            continue
        where = f"layer {name!r} ({cls})"
        if layers_group is None:
            raise ValueError(f"{wf.filename}: no 'layers' group for the weights of {where}")
        g = wf.find(layers_group, key, name, where)
        out.append(_convert_file_layer(wf, g, cls, cfg, where))
    return out


def _model_config(cfg):
    """Inner model config (with 'layers') from a model / serialized model config, else None."""
    if isinstance(cfg, dict):
        cls, inner = _unwrap(cfg)
        if isinstance(inner, dict) and "layers" in inner:
            return inner
    return None


def _open_h5(source, filename):
    h5py = _import_h5py()
    try:
        return h5py.File(source, "r")
    except (OSError, ValueError) as e:
        raise ValueError(f"{filename}: not a readable HDF5 weights file ({e})") from None


def _load_keras_archive(path):
    fn = os.fspath(path)
    try:
        with zipfile.ZipFile(fn) as zf:
            names = zf.namelist()
            if "config.json" not in names:
                raise ValueError(f"{fn}: not a Keras 3 .keras archive (no config.json; "
                                 f"members: {names[:10]})")
            if "model.weights.h5" not in names:
                extra = (" (sharded or npz weights are not supported)"
                         if any(n.startswith("model.weights") for n in names) else "")
                raise ValueError(f"{fn}: no model.weights.h5 in the .keras archive{extra}")
            cfg = json.loads(zf.read("config.json").decode("utf-8"))
            weights = zf.read("model.weights.h5")
    except ValueError as e:
        if str(e).startswith(fn):
            raise
        raise ValueError(f"{fn}: corrupt .keras archive ({type(e).__name__}: {e})") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, KeyError, OSError,
            UnicodeDecodeError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{fn}: corrupt or truncated .keras archive "
                         f"({type(e).__name__}: {e})") from None
    except Exception as e:  # zlib.error and friends
        raise ValueError(f"{fn}: corrupt or truncated .keras archive "
                         f"({type(e).__name__}: {e})") from None
    mcfg = _model_config(cfg)
    with _open_h5(io.BytesIO(weights), f"{fn} (model.weights.h5)") as h5:
        wf = _WeightsFile(h5, fn)
        try:
            if mcfg is not None:
                return _walk_model(wf, h5, mcfg, [])
            # a single saved layer: treat config.json as a layer config
            cls = _unwrap(cfg)[0] if isinstance(cfg, dict) else None
            if not _is_recurrent(cls or ""):
                raise ValueError(f"{fn}: config.json describes {cls or type(cfg).__name__!r} "
                                 "without a 'layers' list; only Sequential / Functional models "
                                 "and single recurrent layers can be read")
            return _from_weights_h5_layers(wf, [cfg])
        except (KeyError, TypeError, OSError) as e:
            raise ValueError(f"{fn}: unexpected .keras contents ({type(e).__name__}: {e})") \
                from None


def _from_weights_h5_layers(wf, layer_cfgs):
    h5py = _import_h5py()
    h5 = wf.h5
    entries = _layer_entries(layer_cfgs)
    out = []
    used = {}
    root_layer = isinstance(h5.get("cell"), h5py.Group) or isinstance(
        h5.get("forward_layer"), h5py.Group)
    layers_group = wf.layers_group(h5)
    for cls, cfg in entries:
        base = _snake(cls)
        if base in used:
            used[base] += 1
            key = f"{base}_{used[base]}"
        else:
            used[base] = 0
            key = base
        if _is_model(cls, cfg):
            out.extend(_walk_model(wf, h5, cfg, []))
            continue
        if not _is_recurrent(cls):
            raise ValueError(f"unsupported Keras layer {cls!r} ({cfg.get('name')!r}): expected "
                             "LSTM, GRU, SimpleRNN, RNN(cell) or Bidirectional")
        name = cfg.get("name")
        where = f"layer {name!r} ({cls})"
        if root_layer and len(entries) == 1:
            g = h5
        else:
            g = wf.find(layers_group, key, name, where)
        out.append(_convert_file_layer(wf, g, cls, cfg, where))
    return out


# Legacy HDF5 (tf.keras 2 / Keras 3 ``model.save("m.h5")``, ``save_weights("w.h5")``): a group
# per top-level layer, its ``weight_names`` attribute listing the layer's datasets in order, each
# named <...>/<layer>/<cell>/<var> (a Bidirectional: <...>/<layer>/<sublayer>/<cell>/<var>);
# a nested model's group holds all its layers' weights.

def _legacy_root(h5):
    """The group holding the per-layer groups of a legacy HDF5 file, else None."""
    root = h5.get("model_weights")
    if root is not None and "layer_names" in root.attrs:
        return root
    return h5 if "layer_names" in h5.attrs else None


def _legacy_arrays(fn, group, name, depth):
    """The arrays of layer ``name`` in a legacy layer group, in saved order; ``name`` None: the
    group is the layer's own.  ``depth``: which path segment, from the end, names the layer."""
    names = [n.decode() if isinstance(n, bytes) else str(n)
             for n in group.attrs.get("weight_names", [])]
    if name is not None:
        names = [n for n in names if len(n.split("/")) >= depth and n.split("/")[-depth] == name]
    try:
        return [_read_var(group[n]) for n in names]
    except KeyError as e:
        raise ValueError(f"{fn}: a weight listed in {group.name!r} is missing ({e})") from None


def _convert_legacy_layer(fn, arrays, cls, cfg, where):
    where = f"{fn}: {where}"
    if cls != "Bidirectional":
        return _wrap_simple(cls, cfg, arrays, where=where)[0]
    subs = _bidirectional_subs(cfg, where)
    counts = [3 if _simple_kind(scls, scfg)[1].get("use_bias", True) else 2 for scls, scfg in subs]
    if len(arrays) != sum(counts):
        raise ValueError(f"{where}: {len(arrays)} weights in the file, its two layers take "
                         f"{counts[0]} + {counts[1]}")
    fwd, bwd = arrays[:counts[0]], arrays[counts[0]:]
    return _wrap_bidirectional(cfg, (*subs[0], fwd), (*subs[1], bwd), where)


def _walk_legacy(fn, root, model_cfg, top, out):
    """Append converted recurrent layers of a model config read from a legacy HDF5 file; ``top``:
    the name of the top-level (nested) model whose group holds the weights, or None."""
    h5py = _import_h5py()
    for cls, cfg in _layer_entries(model_cfg.get("layers", [])):
        name = cfg.get("name")
        if _is_model(cls, cfg):
            _walk_legacy(fn, root, cfg, name if top is None else top, out)
            continue
        if not _is_recurrent(cls):
            _warn_skipped(fn, name, cls)
            continue
        where = f"layer {name!r} ({cls})"
        g = root.get(name if top is None else top)
        if not isinstance(g, h5py.Group):
            raise ValueError(f"{fn}: no group {name if top is None else top!r} for the weights "
                             f"of {where}; groups: {sorted(root.keys())}")
        arrays = _legacy_arrays(fn, g, None if top is None else name,
                                4 if cls == "Bidirectional" else 3)
        out.append(_convert_legacy_layer(fn, arrays, cls, cfg, where))
    return out


def _load_legacy_h5(fn, h5, root, config):
    if config is None:
        stored = h5.attrs.get("model_config")
        if stored is None:
            raise ValueError(f"{fn}: a legacy HDF5 weights file holds no architecture; pass "
                             "config= (the model config, a layer's get_config() or a list of them)")
        try:
            config = json.loads(stored.decode() if isinstance(stored, bytes) else stored)
        except json.JSONDecodeError as e:
            raise ValueError(f"its model_config is not valid JSON ({e})") from None
        if not isinstance(config, (dict, list)):
            raise ValueError(f"its model_config is a JSON {type(config).__name__}, not a model config")
    mcfg = _model_config(config)
    if mcfg is not None:
        return _walk_legacy(fn, root, mcfg, None, [])
    if isinstance(config, dict):
        res = _walk_legacy(fn, root, {"layers": [config]}, None, [])
        if len(res) != 1:
            raise ValueError(f"{fn}: config describes no recurrent layer")
        return res[0]
    if isinstance(config, (list, tuple)):
        return _walk_legacy(fn, root, {"layers": list(config)}, None, [])
    raise ValueError(f"config= must be a dict or a list of dicts, got {type(config).__name__}")


def _load_weights_h5(path, config):
    fn = os.fspath(path)
    if isinstance(config, (str, bytes)):
        config = json.loads(config)
    if not os.path.exists(fn):
        raise FileNotFoundError(fn)
    with _open_h5(fn, fn) as h5:
        root = _legacy_root(h5)
        if root is not None:
            try:
                return _load_legacy_h5(fn, h5, root, config)
            except ValueError as e:
                if str(e).startswith(fn):
                    raise
                raise ValueError(f"{fn}: {e}") from None
            except (KeyError, TypeError, OSError, RecursionError, UnicodeDecodeError) as e:
                raise ValueError(f"{fn}: unexpected legacy HDF5 contents "
                                 f"({type(e).__name__}: {e})") from None
        if config is None:
            raise ValueError(f"{fn}: a .weights.h5 file holds no architecture; pass config= (the "
                             "layer's get_config(), a list of them, or the model config)")
        wf = _WeightsFile(h5, fn)
        try:
            mcfg = _model_config(config)
            if mcfg is not None:
                return _walk_model(wf, h5, mcfg, [])
            if isinstance(config, dict):
                res = _from_weights_h5_layers(wf, [config])
                if len(res) != 1:
                    raise ValueError(f"{fn}: config describes {len(res)} layers")
                return res[0]
            if isinstance(config, (list, tuple)):
                return _from_weights_h5_layers(wf, list(config))
        except (KeyError, TypeError) as e:
            raise ValueError(f"{fn}: config does not match the weights file "
                             f"({type(e).__name__}: {e})") from None
    raise ValueError(f"config= must be a dict or a list of dicts, got {type(config).__name__}")


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------

def from_keras(obj, config=None):
    """Convert Keras 3 recurrent layers to fastrnn (see the module docstring).

    Returns a :class:`KerasRecurrent` for a layer object (or a ``.weights.h5`` with a single layer
    config) and a list of them for a model, a ``.keras`` file, or a list / model config.
    """
    if isinstance(obj, (str, os.PathLike)):
        fn = os.fspath(obj)
        if fn.endswith(".h5") or fn.endswith(".hdf5"):
            return _load_weights_h5(fn, config)
        if config is not None:
            raise ValueError("config= is only used with a .weights.h5 file; a .keras archive "
                             "carries its own config")
        if not os.path.exists(fn):
            raise FileNotFoundError(fn)
        return _load_keras_archive(fn)
    if config is not None:
        raise ValueError("config= is only used with a .weights.h5 file")
    cls = _keras_class(obj)
    if cls == "Model":
        return _from_live_model(obj)
    if cls is None:
        raise ValueError(f"unsupported object {type(obj).__name__}: expected a Keras LSTM, GRU, "
                         "SimpleRNN, RNN(cell) or Bidirectional layer, a Keras model, or a path "
                         "to a .keras / .weights.h5 file")
    return _from_live_layer(obj)
