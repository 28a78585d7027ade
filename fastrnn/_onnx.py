"""Import ONNX ``LSTM`` / ``GRU`` / ``RNN`` nodes as fastrnn layers.

Entry points
------------
``from_onnx(path_or_model, name=None)``
    Load an ONNX model (a path, raw bytes or an ``onnx.ModelProto``), pick its
    recurrent node (the only one, or the one called ``name``) and return an
    :class:`OnnxRNN` whose ``run(X, sequence_lens, initial_h, initial_c)`` has the
    node's ONNX semantics and shapes.
``layer_from_onnx_node(node, initializers)``
    Convert a single ``NodeProto`` plus its constant inputs to a fastrnn layer.

Conversion happens once, at load time: ONNX's gate orders (LSTM ``i,o,f,c``;
GRU ``z,r,h``; peepholes ``i,o,f``) are permuted to fastrnn's PyTorch orders
(``i,f,g,o``; ``r,z,n``; peepholes ``i,f,o``), ``B`` is split into
``bias_ih``/``bias_hh``, and the attributes map onto the layer's options.
After conversion nothing here needs ``onnx`` any more: an :class:`OnnxRNN` or
the layer it holds can be pickled / saved and run where onnx is not installed.

``onnx`` is imported lazily (only by the functions that parse protobufs), so
importing this module, or fastrnn, never imports onnx.

Activation parameters follow onnxruntime (the reference runtime for these ops):
``activation_alpha`` and ``activation_beta`` are two independent queues consumed
in activation order, each only by the functions that take that parameter
(alpha: Affine, LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid, Elu;
beta: Affine, ScaledTanh, HardSigmoid).  When a queue runs dry the defaults are
onnxruntime's: LeakyRelu 0.01, HardSigmoid 0.2/0.5, Elu 1.0, anything else 0.0.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from ._infer import require_regular_file

__all__ = [
    "from_onnx",
    "layer_from_onnx_node",
    "OnnxRNN",
    "ReversedLayer",
    "RECURRENT_OPS",
]

RECURRENT_OPS = ("LSTM", "GRU", "RNN")
_DEFAULT_DOMAINS = ("", "ai.onnx")

_N_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_N_ACTS = {"LSTM": 3, "GRU": 2, "RNN": 1}
_DEFAULT_ACTS = {
    "LSTM": ["sigmoid", "tanh", "tanh"],
    "GRU": ["sigmoid", "tanh"],
    "RNN": ["tanh"],
}
# ONNX input slots of each op, in order.
_INPUT_SLOTS = {
    "LSTM": ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"),
    "GRU": ("X", "W", "R", "B", "sequence_lens", "initial_h"),
    "RNN": ("X", "W", "R", "B", "sequence_lens", "initial_h"),
}
_OUTPUT_SLOTS = {
    "LSTM": ("Y", "Y_h", "Y_c"),
    "GRU": ("Y", "Y_h"),
    "RNN": ("Y", "Y_h"),
}
_COMMON_ATTRS = {
    "activation_alpha",
    "activation_beta",
    "activations",
    "clip",
    "direction",
    "hidden_size",
    "layout",
    # opset 1 only; Y is always computed here, so it is harmless.
    "output_sequence",
}
_KNOWN_ATTRS = {
    "LSTM": _COMMON_ATTRS | {"input_forget"},
    "GRU": _COMMON_ATTRS | {"linear_before_reset"},
    "RNN": set(_COMMON_ATTRS),
}
_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}
# Constant folding never makes a tensor larger than this or twice the graph's size, whichever is more.
_FOLD_MIN_BUDGET = 64 * 2**20
# AttributeProto types of the attributes (onnx.AttributeProto.FLOAT = 1, INT = 2, STRING = 3,
# FLOATS = 6, STRINGS = 8): anything else is a malformed node.
_ATTR_TYPES = {"activation_alpha": 6, "activation_beta": 6, "activations": 8, "clip": 1, "direction": 3,
               "hidden_size": 2, "layout": 2, "output_sequence": 2, "input_forget": 2,
               "linear_before_reset": 2}

# Row blocks of ONNX weights, listed in fastrnn (PyTorch) gate order.
#   LSTM: ONNX (i, o, f, c) -> torch (i, f, g, o)
#   GRU:  ONNX (z, r, h)    -> torch (r, z, n)
_GATE_ORDER = {"LSTM": (0, 2, 3, 1), "GRU": (1, 0, 2), "RNN": (0,)}
# Peepholes: ONNX P = (p_i, p_o, p_f) -> fastrnn weight_ph = (p_i, p_f, p_o)
_PEEPHOLE_ORDER = (0, 2, 1)

# Activation name (lower case) -> (takes alpha, takes beta), as onnxruntime.
_ACT_PARAMS = {
    "sigmoid": (False, False),
    "tanh": (False, False),
    "relu": (False, False),
    "affine": (True, True),
    "leakyrelu": (True, False),
    "thresholdedrelu": (True, False),
    "scaledtanh": (True, True),
    "hardsigmoid": (True, True),
    "elu": (True, False),
    "softsign": (False, False),
    "softplus": (False, False),
}
# Defaults when the alpha / beta queue is exhausted (onnxruntime's; others 0.0).
_ACT_DEFAULTS = {"leakyrelu": (0.01, 0.0), "hardsigmoid": (0.2, 0.5), "elu": (1.0, 0.0)}


# --------------------------------------------------------------------------- #
# small helpers
# --------------------------------------------------------------------------- #
def _onnx():
    try:
        import onnx  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover - exercised only without onnx
        raise ImportError(
            "reading ONNX files needs the 'onnx' package (pip install onnx); "
            "running an already converted layer does not"
        ) from e
    return onnx


def _node_label(node) -> str:
    return f"{node.op_type} node {node.name!r}" if node.name else f"unnamed {node.op_type} node"


def _attr_value(attr):
    from onnx import helper  # noqa: PLC0415

    v = helper.get_attribute_value(attr)
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, (list, tuple)):
        return [x.decode("utf-8") if isinstance(x, bytes) else x for x in v]
    return v


def _to_numpy(value) -> np.ndarray:
    """TensorProto / array-like -> numpy array (ValueError for unreadable tensors)."""
    if hasattr(value, "dims") and hasattr(value, "data_type"):
        from onnx import TensorProto, numpy_helper  # noqa: PLC0415

        name = value.name if isinstance(value.name, str) else repr(value.name)
        if value.data_location == TensorProto.EXTERNAL:
            # onnx.load(path) reads external data in (checked against the model's directory);
            # from bytes / a ModelProto there is no directory to read it from, and resolving it
            # against the current directory would read arbitrary files.
            where = ", ".join(f"{e.key}={e.value!r}" for e in value.external_data)[:200]
            raise ValueError(f"tensor {name!r} keeps its data in an external file ({where}); load the "
                             "model from its path (with the data file next to it)")
        try:
            return numpy_helper.to_array(value)
        except (MemoryError, RecursionError):
            raise
        except Exception as e:  # noqa: BLE001 - onnx raises TypeError/ValueError/... on bad tensors
            raise ValueError(f"tensor {name!r} cannot be read ({type(e).__name__}: {e})") from None
    return np.asarray(value)


def _constant_node_value(node) -> np.ndarray | None:
    """Value of an ONNX ``Constant`` node (None for string/sparse forms)."""
    from onnx import numpy_helper  # noqa: PLC0415

    for a in node.attribute:
        if a.name == "value":
            return _to_numpy(a.t)
        if a.name == "value_float":
            return np.asarray(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.asarray(list(a.floats), dtype=np.float32)
        if a.name == "value_int":
            return np.asarray(a.i, dtype=np.int64)
        if a.name == "value_ints":
            return np.asarray(list(a.ints), dtype=np.int64)
    return None


def _is_default_domain(node) -> bool:
    return node.domain in _DEFAULT_DOMAINS


# --------------------------------------------------------------------------- #
# node attributes -> layer options
# --------------------------------------------------------------------------- #
def _map_activations(op, names, alphas, betas, num_directions, label):
    """ONNX activations/alpha/beta -> fastrnn's aligned lists (or Nones for defaults)."""
    if names is None:
        return None, None, None
    n = _N_ACTS[op]
    lowered = [str(a).lower() for a in names]
    # onnxruntime compatibility: the RNN schema's default is ["Tanh", "Tanh"];
    # a forward / reverse RNN uses the first entry only.
    if op == "RNN" and num_directions == 1 and len(lowered) == 2:
        lowered, names = lowered[:1], list(names)[:1]
    if len(lowered) not in (n, n * num_directions):
        want = f"{n}" if num_directions == 1 else f"{n} or {n * num_directions}"
        raise ValueError(
            f"{label}: 'activations' must list {want} functions for this direction, "
            f"got {len(lowered)}: {list(names)}"
        )
    for orig, low in zip(names, lowered):
        if low not in _ACT_PARAMS:
            raise ValueError(
                f"{label}: unsupported activation {orig!r}; supported: "
                + ", ".join(sorted(_ACT_PARAMS))
            )
    ia, ib = iter(alphas or ()), iter(betas or ())
    al, be = [], []
    for low in lowered:
        takes_a, takes_b = _ACT_PARAMS[low]
        da, db = _ACT_DEFAULTS.get(low, (0.0, 0.0))
        al.append(float(next(ia, da)) if takes_a else None)
        be.append(float(next(ib, db)) if takes_b else None)
    if len(lowered) == n and num_directions == 2:
        lowered, al, be = lowered * 2, al * 2, be * 2
    return lowered, al, be


def _parse_node(node) -> dict:
    """Validate a recurrent NodeProto and return its settings as plain Python."""
    op = node.op_type
    label = _node_label(node)
    if op not in _N_GATES or not _is_default_domain(node):
        dom = f" (domain {node.domain!r})" if node.domain else ""
        raise ValueError(f"{label}: unsupported operator {op}{dom}; expected one of {RECURRENT_OPS}")
    attrs = {}
    for a in node.attribute:
        if a.name not in _KNOWN_ATTRS[op]:
            raise ValueError(f"{label}: unsupported attribute {a.name!r} for {op}")
        want = _ATTR_TYPES.get(a.name)
        if want is not None and a.type != want:
            from onnx import AttributeProto  # noqa: PLC0415

            def tname(t):
                try:
                    return AttributeProto.AttributeType.Name(t)
                except ValueError:
                    return str(t)
            raise ValueError(f"{label}: attribute {a.name!r} must be of type {tname(want)}, got {tname(a.type)}")
        try:
            attrs[a.name] = _attr_value(a)
        except UnicodeDecodeError:
            raise ValueError(f"{label}: attribute {a.name!r} is not valid UTF-8") from None

    direction = attrs.get("direction", "forward")
    if direction not in _DIRECTIONS:
        raise ValueError(
            f"{label}: unsupported direction {direction!r} (forward, reverse or bidirectional)"
        )
    layout = int(attrs.get("layout", 0))
    if layout not in (0, 1):
        raise ValueError(f"{label}: unsupported layout {layout} (0 or 1)")
    clip = attrs.get("clip")
    if clip is not None:
        clip = float(clip)
        if not clip > 0:  # also rejects NaN
            raise ValueError(f"{label}: unsupported clip {clip} (must be > 0)")
    input_forget = int(attrs.get("input_forget", 0))
    if input_forget not in (0, 1):
        raise ValueError(f"{label}: unsupported input_forget {input_forget} (0 or 1)")
    lbr = int(attrs.get("linear_before_reset", 0))
    if lbr not in (0, 1):
        raise ValueError(f"{label}: unsupported linear_before_reset {lbr} (0 or 1)")
    hidden = attrs.get("hidden_size")
    if hidden is not None:
        hidden = int(hidden)
        if hidden <= 0:
            raise ValueError(f"{label}: unsupported hidden_size {hidden}")
    num_directions = _DIRECTIONS[direction]
    acts, alphas, betas = _map_activations(
        op,
        attrs.get("activations"),
        attrs.get("activation_alpha"),
        attrs.get("activation_beta"),
        num_directions,
        label,
    )
    if len(node.input) > len(_INPUT_SLOTS[op]):
        raise ValueError(f"{label}: {op} takes at most {len(_INPUT_SLOTS[op])} inputs, got {len(node.input)}")
    if len(node.output) > len(_OUTPUT_SLOTS[op]):
        raise ValueError(f"{label}: {op} has at most {len(_OUTPUT_SLOTS[op])} outputs, got {len(node.output)}")
    inputs = list(node.input) + [""] * (len(_INPUT_SLOTS[op]) - len(node.input))
    outputs = list(node.output) + [""] * (len(_OUTPUT_SLOTS[op]) - len(node.output))
    if not inputs[0] or not inputs[1] or not inputs[2]:
        raise ValueError(f"{label}: inputs X, W and R are required")
    return {
        "op": op,
        "name": node.name,
        "label": label,
        "direction": direction,
        "num_directions": num_directions,
        "layout": layout,
        "clip": clip,
        "input_forget": bool(input_forget),
        "linear_before_reset": bool(lbr),
        "hidden_size": hidden,
        "activations": acts,
        "activation_alpha": alphas,
        "activation_beta": betas,
        "inputs": dict(zip(_INPUT_SLOTS[op], inputs)),
        "outputs": dict(zip(_OUTPUT_SLOTS[op], outputs)),
    }


def _reorder_rows(a: np.ndarray, hidden: int, order) -> np.ndarray:
    return np.concatenate([a[k * hidden:(k + 1) * hidden] for k in order], axis=0)


def _build_layer(spec: dict, W, R, B=None, P=None):
    """fastrnn layer (ReversedLayer for direction='reverse') from ONNX W/R/B/P arrays."""
    import fastrnn  # noqa: PLC0415  (lazy: fastrnn/__init__ may import this module)

    op, label = spec["op"], spec["label"]
    G, D = _N_GATES[op], spec["num_directions"]
    W = np.asarray(W, dtype=np.float32)
    R = np.asarray(R, dtype=np.float32)
    if W.ndim != 3 or R.ndim != 3:
        raise ValueError(f"{label}: W and R must be 3-D, got shapes {W.shape} and {R.shape}")
    H = R.shape[-1]
    if spec["hidden_size"] is not None and spec["hidden_size"] != H:
        raise ValueError(f"{label}: hidden_size={spec['hidden_size']} but R has shape {R.shape}")
    if H == 0:
        raise ValueError(f"{label}: hidden size 0 is not supported")
    I = W.shape[-1]
    if W.shape[:2] != (D, G * H) or R.shape != (D, G * H, H):
        raise ValueError(
            f"{label}: direction={spec['direction']!r} hidden_size={H} needs W of shape "
            f"({D}, {G * H}, input_size) and R ({D}, {G * H}, {H}); got {W.shape} and {R.shape}"
        )
    if B is not None:
        B = np.asarray(B, dtype=np.float32)
        if B.shape != (D, 2 * G * H):
            raise ValueError(f"{label}: B must have shape ({D}, {2 * G * H}), got {B.shape}")
    if P is not None:
        P = np.asarray(P, dtype=np.float32)
        if P.shape != (D, 3 * H):
            raise ValueError(f"{label}: P must have shape ({D}, {3 * H}), got {P.shape}")
        if not P.any():
            P = None  # all-zero peepholes are a no-op; keep the fast path

    kw: dict[str, Any] = {
        "bidirectional": D == 2,
        "batch_first": spec["layout"] == 1,
        "seed": 0,
    }
    if spec["clip"] is not None:
        kw["clip"] = spec["clip"]
    acts = spec["activations"]
    default = _DEFAULT_ACTS[op]
    if acts is not None and op == "RNN" and all(a == acts[0] for a in acts) and acts[0] in ("tanh", "relu"):
        kw["nonlinearity"] = acts[0]  # PyTorch's own RNN flavours
    elif acts is not None and acts != default * (len(acts) // len(default)):
        kw["activations"] = list(acts)
        if any(a is not None for a in spec["activation_alpha"]):
            kw["activation_alpha"] = list(spec["activation_alpha"])
        if any(b is not None for b in spec["activation_beta"]):
            kw["activation_beta"] = list(spec["activation_beta"])
    if op == "LSTM":
        if P is not None:
            kw["peephole"] = True
        if spec["input_forget"]:
            kw["input_forget"] = True
        layer = fastrnn.LSTM(I, H, **kw)
    elif op == "GRU":
        layer = fastrnn.GRU(I, H, linear_before_reset=spec["linear_before_reset"], **kw)
    else:
        layer = fastrnn.RNN(I, H, **kw)

    order = _GATE_ORDER[op]
    sd = {}
    for d in range(D):
        sfx = "_reverse" if d == 1 else ""
        sd[f"weight_ih_l0{sfx}"] = _reorder_rows(W[d], H, order)
        sd[f"weight_hh_l0{sfx}"] = _reorder_rows(R[d], H, order)
        if B is None:
            sd[f"bias_ih_l0{sfx}"] = np.zeros(G * H, np.float32)
            sd[f"bias_hh_l0{sfx}"] = np.zeros(G * H, np.float32)
        else:
            sd[f"bias_ih_l0{sfx}"] = _reorder_rows(B[d, : G * H], H, order)
            sd[f"bias_hh_l0{sfx}"] = _reorder_rows(B[d, G * H:], H, order)
        if P is not None:
            sd[f"weight_ph_l0{sfx}"] = _reorder_rows(P[d], H, _PEEPHOLE_ORDER)
    layer.load_state_dict(sd)
    if spec["direction"] == "reverse":
        layer = ReversedLayer(layer)
    return layer


# --------------------------------------------------------------------------- #
# reverse direction
# --------------------------------------------------------------------------- #
def _reverse_time(x: np.ndarray, lengths, time_axis: int) -> np.ndarray:
    """Reverse each sequence within its own length (positions past it stay put).

    The permutation is an involution, so the same call maps outputs back.
    """
    if lengths is None:
        return np.ascontiguousarray(np.flip(x, axis=time_axis))
    T = x.shape[time_axis]
    t = np.arange(T)[:, None]
    L = np.asarray(lengths, dtype=np.int64)[None, :]
    idx = np.where(t < L, L - 1 - t, t)  # (T, B)
    if time_axis == 1:
        idx = idx.T
    return np.take_along_axis(x, idx[:, :, None], axis=time_axis)


class ReversedLayer:
    """A unidirectional fastrnn layer run backwards in time (ONNX ``direction="reverse"``).

    Same call convention as the wrapped layer: ``layer(x, hx=None, lengths=None)``;
    each sequence is processed from its own last element (``lengths`` respected)
    back to its first, and outputs are returned in the original time order.
    Everything else (``state_dict``, ``config``, ...) is the wrapped layer's.
    """

    def __init__(self, layer):
        self.layer = layer

    def __call__(self, x, hx=None, lengths=None):
        from . import _core  # noqa: PLC0415

        x = _core.as_float32(x, "input")
        batch_first = bool(getattr(self.layer, "batch_first", False))
        time_axis = 1 if (batch_first and x.ndim == 3) else 0
        lens = None
        if lengths is not None and x.ndim == 3:
            # checked before the reversal indexes with them
            lens = lengths = _core.check_lengths(lengths, x.shape[1 - time_axis], x.shape[time_axis])
        out, state = self.layer(_reverse_time(x, lens, time_axis), hx, lengths=lengths)
        return _reverse_time(np.asarray(out), lens, time_axis), state

    def __getattr__(self, name):
        if name == "layer":  # not set yet (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.layer, name)

    def __repr__(self):
        return f"ReversedLayer({self.layer!r})"

    def __getstate__(self):
        return {"layer": _layer_to_state(self.layer)}

    def __setstate__(self, state):
        self.layer = _layer_from_state(state["layer"])


def _layer_to_state(layer):
    """Picklable description of a layer (fastrnn layers hold a C object)."""
    if layer is None:
        return None
    if isinstance(layer, ReversedLayer):
        return {"reversed": _layer_to_state(layer.layer)}
    return {"config": layer.config(), "state_dict": layer.state_dict()}


def _layer_from_state(state):
    if state is None:
        return None
    if "reversed" in state:
        return ReversedLayer(_layer_from_state(state["reversed"]))
    import fastrnn  # noqa: PLC0415

    layer = fastrnn.layer_from_config(dict(state["config"]))
    layer.load_state_dict(state["state_dict"])
    return layer


# --------------------------------------------------------------------------- #
# the node object
# --------------------------------------------------------------------------- #
class OnnxRNN:
    """One ONNX LSTM/GRU/RNN node converted to fastrnn.

    ``run(X, sequence_lens=None, initial_h=None, initial_c=None)`` returns
    ``(Y, Y_h)`` (GRU, RNN) or ``(Y, Y_h, Y_c)`` (LSTM) with ONNX shapes:
    layout 0: X ``[T, B, I]``, Y ``[T, D, B, H]``, states ``[D, B, H]``;
    layout 1: X ``[B, T, I]``, Y ``[B, T, D, H]``, states ``[B, D, H]``.
    Inputs that are left out are taken from the graph when they were constants
    there (an all-zero initial state counts as absent; all-zero lengths make
    every sequence empty), otherwise ONNX's defaults (full lengths, zero states).

    Attributes: ``op_type``, ``name``, ``direction``, ``layout``,
    ``hidden_size``, ``input_size``, ``num_directions``, ``layer`` (the fastrnn
    layer, a :class:`ReversedLayer` for ``direction="reverse"``), ``input_names``
    and ``output_names`` (ONNX slot -> tensor name in the graph).
    The object holds no onnx objects: it pickles and runs without onnx.
    """

    def __init__(self, spec: dict, layer=None, defaults: Mapping[str, np.ndarray] | None = None):
        self._spec = spec
        self.layer = None
        # constant values for sequence_lens / initial_h / initial_c
        self._defaults = dict(defaults or {})
        if layer is not None:
            self._set_layer(layer)

    # -- description ---------------------------------------------------------
    op_type = property(lambda self: self._spec["op"])
    name = property(lambda self: self._spec["name"])
    direction = property(lambda self: self._spec["direction"])
    layout = property(lambda self: self._spec["layout"])
    num_directions = property(lambda self: self._spec["num_directions"])
    input_names = property(lambda self: dict(self._spec["inputs"]))
    output_names = property(lambda self: dict(self._spec["outputs"]))

    @property
    def hidden_size(self):
        return self._hidden if self.layer is not None else self._spec["hidden_size"]

    @property
    def input_size(self):
        return self._input if self.layer is not None else None

    def _set_layer(self, layer):
        self.layer = layer
        self._input = int(layer.input_size)
        self._hidden = int(layer.hidden_size)

    def __repr__(self):
        return (
            f"<OnnxRNN {self.op_type} {self.name!r} direction={self.direction} "
            f"layout={self.layout} hidden_size={self.hidden_size}>"
        )

    def __getstate__(self):
        state = dict(self.__dict__)
        state["layer"] = _layer_to_state(self.layer)
        return state

    def __setstate__(self, state):
        state = dict(state)
        layer = _layer_from_state(state.pop("layer"))
        self.__dict__.update(state)
        self.layer = layer

    def __call__(self, *args, **kwargs):
        return self.run(*args, **kwargs)

    # -- execution -----------------------------------------------------------
    def run(self, X, sequence_lens=None, initial_h=None, initial_c=None, *, W=None, R=None, B=None, P=None):
        """Run the node on numpy inputs; see the class docstring for shapes.

        ``W``/``R``/``B``/``P`` (keyword-only) supply weights at run time for
        nodes whose weights were not constants in the graph (used by
        fastrnn.onnx_backend); when given, a layer is built from exactly them.
        """
        spec = self._spec
        label, op = spec["label"], spec["op"]
        if W is not None or R is not None:
            if W is None or R is None:
                raise ValueError(f"{label}: W and R must be given together")
            layer = _build_layer(spec, W, R, B, P)
            in_size, hidden = np.shape(W)[-1], np.shape(R)[-1]
        elif self.layer is None:
            raise ValueError(
                f"{label}: its weights are not constants of the graph; pass W=, R= (and B=, P=)"
            )
        else:
            layer, in_size, hidden = self.layer, self._input, self._hidden

        X = np.asarray(X)
        if X.dtype.kind != "f":
            raise TypeError(f"{label}: X must hold floating-point numbers, got dtype {X.dtype}")
        out_dtype = X.dtype if X.dtype != np.float32 else np.float32
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 3:
            raise ValueError(f"{label}: X must be 3-D, got shape {X.shape}")
        layout, D = spec["layout"], spec["num_directions"]
        if layout == 0:
            T, batch = X.shape[0], X.shape[1]
        else:
            batch, T = X.shape[0], X.shape[1]
        if X.shape[2] != in_size:
            raise ValueError(f"{label}: X has input size {X.shape[2]}, the weights expect {in_size}")

        if sequence_lens is None:
            sequence_lens = self._defaults.get("sequence_lens")
            if sequence_lens is not None and np.ndim(sequence_lens) == 0 and not sequence_lens:
                sequence_lens = np.zeros(batch, np.int64)  # a zero fill of the graph's batch
        lengths = None
        if sequence_lens is not None:
            lens = np.asarray(sequence_lens)
            if lens.dtype.kind not in "iu" and lens.size:   # ([] parses as float64)
                raise TypeError(f"{label}: sequence_lens must be integers, got dtype {lens.dtype}")
            lens = lens.astype(np.int64, copy=False).reshape(-1)
            if lens.shape != (batch,):
                raise ValueError(f"{label}: sequence_lens must have shape ({batch},), got {np.shape(sequence_lens)}")
            if lens.size and (lens.min() < 0 or lens.max() > T):
                raise ValueError(f"{label}: sequence_lens must lie in [0, {T}], got {lens.tolist()}")
            if not np.all(lens == T):
                lengths = lens

        def state(value, which):
            if value is None:
                value = self._defaults.get(which)
            if value is None:
                return None
            s = np.asarray(value, dtype=np.float32)
            want = (D, batch, hidden) if layout == 0 else (batch, D, hidden)
            if s.shape != want:
                raise ValueError(f"{label}: {which} must have shape {want}, got {s.shape}")
            return s if layout == 0 else np.ascontiguousarray(s.transpose(1, 0, 2))

        h0 = state(initial_h, "initial_h")
        if op == "LSTM":
            c0 = state(initial_c, "initial_c")
            if h0 is None and c0 is None:
                hx = None
            else:
                zeros = np.zeros((D, batch, hidden), np.float32)
                hx = (zeros if h0 is None else h0, zeros if c0 is None else c0)
            out, (h_n, c_n) = layer(X, hx, lengths=lengths)
            states = [h_n, c_n]
        else:
            if initial_c is not None:
                raise ValueError(f"{label}: {op} has no initial_c")
            out, h_n = layer(X, h0, lengths=lengths)
            states = [h_n]

        if lengths is not None and not lengths.all():
            # onnxruntime reports zero final states for empty sequences (fastrnn keeps h0)
            empty = lengths == 0
            states = [np.asarray(s).copy() for s in states]
            for s in states:
                s[:, empty] = 0.0
        out = np.asarray(out)
        if layout == 0:
            Y = np.ascontiguousarray(out.reshape(T, batch, D, hidden).transpose(0, 2, 1, 3))
        else:
            Y = out.reshape(batch, T, D, hidden)
            states = [np.ascontiguousarray(np.asarray(s).transpose(1, 0, 2)) for s in states]
        results = [Y] + [np.asarray(s) for s in states]
        if out_dtype != np.float32:
            results = [r.astype(out_dtype) for r in results]
        return tuple(results)


# --------------------------------------------------------------------------- #
# graph access
# --------------------------------------------------------------------------- #
class _Graph:
    """Constant lookup over a GraphProto: initializers, Constant nodes, folding."""

    def __init__(self, graph, opset_imports=(), ir_version=None):
        self.graph = graph
        self.opset_imports = list(opset_imports)
        self.ir_version = ir_version
        self.consts: dict[str, Any] = {}  # name -> TensorProto or ndarray (lazy)
        for t in graph.initializer:
            self.consts[t.name] = t
        self.nodes = list(graph.node)
        self.producer = {}  # tensor name -> index of the node that makes it
        for k, node in enumerate(self.nodes):
            for o in node.output:
                if o:
                    self.producer[o] = k
            if node.op_type == "Constant" and _is_default_domain(node) and node.output:
                val = _constant_node_value(node)
                if val is not None:
                    self.consts[node.output[0]] = val
        self.graph_inputs = {i.name for i in graph.input}

    def const(self, name: str) -> np.ndarray | None:
        """The value of tensor ``name`` if it is a graph constant, else None."""
        if not name:
            return None
        if name in self.consts:
            v = self.consts[name]
            if not isinstance(v, np.ndarray):
                v = _to_numpy(v)
                self.consts[name] = v
            return v
        if name in self.graph_inputs or name not in self.producer:
            return None
        v = self._fold(name)
        if v is not None:
            self.consts[name] = v
        return v

    def _fold(self, name: str) -> np.ndarray | None:
        """Evaluate ``name`` with onnx's reference evaluator if it only depends on constants."""
        needed, stack, seen = set(), [name], set()
        while stack:
            n = stack.pop()
            if n in seen or not n or n in self.consts:
                continue
            seen.add(n)
            if n in self.graph_inputs or n not in self.producer:
                return None  # depends on a runtime value
            node = self.nodes[self.producer[n]]
            if node.op_type in RECURRENT_OPS or not _is_default_domain(node):
                return None
            needed.add(self.producer[n])
            stack.extend(node.input)
        try:
            from onnx import helper, numpy_helper  # noqa: PLC0415
            from onnx.reference import ReferenceEvaluator  # noqa: PLC0415

            order = [self.nodes[k] for k in sorted(needed)]  # keep topological order
            produced = {o for n in order for o in n.output}
            inits = []
            for k in sorted({i for n in order for i in n.input if i} - produced):
                v = self.consts[k]
                inits.append(v if not isinstance(v, np.ndarray) else numpy_helper.from_array(v, k))
            g = helper.make_graph(order, "fold", [], [helper.make_tensor_value_info(name, 0, None)], inits)
            m = helper.make_model(g, opset_imports=self.opset_imports or None)
            if self.ir_version:
                m.ir_version = self.ir_version
            if not self._fold_is_safe(m):
                return None
            (val,) = ReferenceEvaluator(m).run(None, {})
            return np.asarray(val)
        except Exception:  # noqa: BLE001 - not foldable: treat as a runtime value
            return None

    def fold_budget(self) -> int:
        """Most bytes one folded tensor may take: what the model's own size warrants."""
        if getattr(self, "_budget", None) is None:
            try:
                size = self.graph.ByteSize()
            except Exception:  # noqa: BLE001
                size = 0
            self._budget = max(_FOLD_MIN_BUDGET, 2 * size)
        return self._budget

    def _fold_is_safe(self, model) -> bool:
        """Fold only deterministic subgraphs whose every tensor has a shape known before running
        them and a size within :meth:`fold_budget` (a few bytes of ConstantOfShape / Expand / Tile /
        broadcasting can ask for terabytes)."""
        from onnx import helper, shape_inference  # noqa: PLC0415

        for node in model.graph.node:
            if node.op_type.startswith("Random") or node.op_type in ("Multinomial", "Bernoulli"):
                return False  # folding would freeze one random draw
        try:
            inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        except Exception:  # noqa: BLE001
            return False
        infos = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
        budget = self.fold_budget()
        for node in model.graph.node:
            for out in node.output:
                if not out:
                    continue
                vi = infos.get(out)
                if vi is None or not vi.type.HasField("tensor_type"):
                    return False
                tt = vi.type.tensor_type
                if not tt.HasField("shape"):
                    return False
                n = 1
                for d in tt.shape.dim:
                    if not d.HasField("dim_value") or d.dim_value < 0:
                        return False
                    n *= d.dim_value
                try:
                    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).itemsize
                except Exception:  # noqa: BLE001 - strings and exotic types
                    itemsize = 8
                if n * itemsize > budget:
                    return False
        return True

    def with_values(self, values: Mapping[str, np.ndarray]) -> _Graph:
        """This graph with some initializers replaced (a caller feeding them), refolded lazily."""
        g = _Graph(self.graph, self.opset_imports, self.ir_version)
        g._budget = getattr(self, "_budget", None)
        g.consts.update(values)
        return g

    def depends_on(self, name: str, names) -> bool:
        """True if tensor ``name`` is one of ``names`` or is computed from one of them."""
        stack, seen = [name], set()
        while stack:
            n = stack.pop()
            if not n or n in seen:
                continue
            if n in names:
                return True
            seen.add(n)
            k = self.producer.get(n)
            if k is not None:
                stack.extend(self.nodes[k].input)
        return False

    def is_zero_fill(self, name: str) -> bool:
        """True if ``name`` is all zeros: a zero constant, or Expand/ConstantOfShape of zero."""
        if not name:
            return True
        if name in self.consts or name in self.graph_inputs:
            v = self.const(name)
            return v is not None and not np.any(v)
        k = self.producer.get(name)
        node = None if k is None else self.nodes[k]
        if node is None or not _is_default_domain(node):
            return False
        if node.op_type == "Expand":
            v = self.const(node.input[0])
            return v is not None and not np.any(v)
        if node.op_type == "ConstantOfShape":
            for a in node.attribute:
                if a.name == "value":
                    return not np.any(_to_numpy(a.t))
            return True  # default value is 0
        if node.op_type in ("Identity", "Cast", "Reshape", "Unsqueeze", "Squeeze", "Transpose"):
            return self.is_zero_fill(node.input[0])
        return False


def _node_from_graph(node, g: _Graph, *, allow_dynamic: bool) -> OnnxRNN:
    """OnnxRNN for ``node``; weights from constants (or at run time if allowed)."""
    spec = _parse_node(node)
    ins = spec["inputs"]
    arrays = {}
    dynamic = []
    for slot in ("W", "R", "B", "P"):
        nm = ins.get(slot, "")
        if not nm:
            continue
        v = g.const(nm)
        if v is None:
            dynamic.append((slot, nm))
        arrays[slot] = v
    if dynamic and not allow_dynamic:
        what = ", ".join(f"{s} ({n!r})" for s, n in dynamic)
        raise ValueError(
            f"{spec['label']}: input {what} is not a constant of the graph (initializer or "
            "Constant node); use fastrnn.onnx_backend to run graphs whose weights are graph inputs"
        )
    defaults = {}
    for slot in ("sequence_lens", "initial_h", "initial_c"):
        nm = ins.get(slot, "")
        if not nm:
            continue
        if g.is_zero_fill(nm):
            # a zero state is the absent one; zero lengths are not (every sequence is empty)
            if slot == "sequence_lens":
                defaults[slot] = np.zeros((), np.int64)
            continue
        v = g.const(nm)
        if v is not None:
            defaults[slot] = v
    obj = OnnxRNN(spec, defaults=defaults)
    if not dynamic:
        obj._set_layer(_build_layer(spec, arrays["W"], arrays["R"], arrays.get("B"), arrays.get("P")))
    return obj


def layer_from_onnx_node(node, initializers=None):
    """Convert an ONNX LSTM/GRU/RNN ``NodeProto`` to a fastrnn layer.

    ``initializers``: the node's constant inputs, as a mapping name -> array (or
    TensorProto), an iterable of TensorProto, or a GraphProto / ModelProto (whose
    initializers and Constant nodes are used).  Returns a fastrnn ``LSTM``/``GRU``/
    ``RNN`` (``batch_first`` for layout=1, ``bidirectional`` for
    direction="bidirectional") with PyTorch call semantics, or a
    :class:`ReversedLayer` wrapping one for direction="reverse".  Use
    :func:`from_onnx` / :class:`OnnxRNN` for ONNX-shaped inputs and outputs.
    """
    spec = _parse_node(node)
    consts = _as_const_lookup(initializers)
    arrays = {}
    for slot in ("W", "R", "B", "P"):
        nm = spec["inputs"].get(slot, "")
        if not nm:
            continue
        v = consts(nm)
        if v is None:
            raise ValueError(f"{spec['label']}: no constant value for input {slot} ({nm!r})")
        arrays[slot] = v
    return _build_layer(spec, arrays["W"], arrays["R"], arrays.get("B"), arrays.get("P"))


def _as_const_lookup(initializers):
    if initializers is None:
        return lambda name: None
    if hasattr(initializers, "graph") and hasattr(initializers, "opset_import"):  # ModelProto
        g = _Graph(initializers.graph, initializers.opset_import, initializers.ir_version)
        return g.const
    if hasattr(initializers, "initializer") and hasattr(initializers, "node"):  # GraphProto
        return _Graph(initializers).const
    if isinstance(initializers, Mapping):
        return lambda name: None if name not in initializers else _to_numpy(initializers[name])
    table = {t.name: t for t in initializers}
    return lambda name: None if name not in table else _to_numpy(table[name])


# --------------------------------------------------------------------------- #
# model loading
# --------------------------------------------------------------------------- #
def _load_model(path_or_model):
    """-> (ModelProto, description of the source for error messages or None)."""
    onnx = _onnx()
    if isinstance(path_or_model, onnx.ModelProto):
        model, src = path_or_model, None
    elif isinstance(path_or_model, (bytes, bytearray, memoryview)):
        src = "<ONNX bytes>"
        try:
            model = onnx.load_from_string(bytes(path_or_model))
        except Exception as e:  # noqa: BLE001 - protobuf raises various types
            raise ValueError(f"{src}: not a valid ONNX model ({type(e).__name__}: {e})") from None
    elif isinstance(path_or_model, (str, os.PathLike)):
        src = os.fspath(path_or_model)
        if not os.path.exists(src):
            raise FileNotFoundError(f"ONNX file not found: {src!r}")
        require_regular_file(src)
        try:
            model = onnx.load(src)
        except Exception as e:  # noqa: BLE001
            raise ValueError(
                f"{src!r} is not a valid ONNX file (truncated or corrupt?): {type(e).__name__}: {e}"
            ) from None
    elif hasattr(path_or_model, "read"):
        src = getattr(path_or_model, "name", "<ONNX stream>")
        try:
            model = onnx.load_from_string(path_or_model.read())
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{src!r} is not a valid ONNX model: {type(e).__name__}: {e}") from None
    else:
        raise TypeError(
            f"from_onnx expects a path, bytes or onnx.ModelProto, got {type(path_or_model).__name__}"
        )
    problem = _structural_problem(model)
    if problem:
        where = f"{src!r}" if src else "ONNX model"
        raise ValueError(f"{where} is not a valid ONNX model (truncated or corrupt?): {problem}")
    return model, src


def _structural_problem(model) -> str | None:
    """Cheap sanity checks that catch truncated files protobuf still parses.

    (onnx.checker is not used: it rejects models onnxruntime runs, e.g. inputs
    without a shape.)
    """
    if not model.HasField("graph") or len(model.graph.node) == 0:
        return "it has no graph nodes"
    if model.ir_version >= 3 and not model.opset_import:
        return "it has no opset_import"
    graph = model.graph
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.values.name for t in graph.sparse_initializer}
    for node in graph.node:
        for name in node.input:
            if name and name not in defined:
                return f"input {name!r} of {_node_label(node)} is not defined"
        defined.update(o for o in node.output if o)
    for o in graph.output:
        if o.name not in defined:
            return f"graph output {o.name!r} is not produced"
    return None


def _recurrent_nodes(graph):
    return [n for n in graph.node if n.op_type in RECURRENT_OPS and _is_default_domain(n)]


def _select_node(graph, name):
    nodes = _recurrent_nodes(graph)
    if not nodes:
        ops = sorted({n.op_type for n in graph.node})
        raise ValueError(f"the graph has no LSTM, GRU or RNN node (its ops: {', '.join(ops) or 'none'})")
    listing = ", ".join(f"{n.name!r} ({n.op_type})" if n.name else f"#{i} ({n.op_type})" for i, n in enumerate(nodes))
    if name is None:
        if len(nodes) > 1:
            raise ValueError(f"the graph has {len(nodes)} recurrent nodes, pass name= to pick one of: {listing}")
        return nodes[0]
    if isinstance(name, int) and not isinstance(name, bool):
        if -len(nodes) <= name < len(nodes):
            return nodes[name]
        raise ValueError(f"node index {name} out of range; recurrent nodes: {listing}")
    for n in nodes:
        if n.name == name:
            return n
    for n in nodes:  # also accept one of the node's output tensor names
        if name in n.output:
            return n
    raise ValueError(f"no LSTM/GRU/RNN node named {name!r}; recurrent nodes: {listing}")


def from_onnx(path_or_model, name=None) -> OnnxRNN:
    """Load the LSTM/GRU/RNN node of an ONNX model as an :class:`OnnxRNN`.

    ``path_or_model``: a path to an .onnx file, its bytes, or an ``onnx.ModelProto``.
    ``name``: which recurrent node to take (node name, one of its output names, or
    its index among the recurrent nodes); required when there are several.
    Weights must be constants (initializers, Constant nodes, or constant-foldable
    subgraphs).  Raises ValueError (naming the file) for unreadable/corrupt files,
    and ValueError naming the offending op / attribute / activation otherwise.
    """
    model, src = _load_model(path_or_model)
    try:
        node = _select_node(model.graph, name)
        g = _Graph(model.graph, model.opset_import, model.ir_version)
        return _node_from_graph(node, g, allow_dynamic=False)
    except ValueError as e:
        if src:
            raise ValueError(f"{src}: {e}") from None
        raise
    except (MemoryError, RecursionError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - a malformed protobuf (bytes where strings belong, ...)
        raise ValueError(f"{src + ': ' if src else ''}malformed ONNX model ({type(e).__name__}: {e})") from None
