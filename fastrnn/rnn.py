"""Recurrent layers with PyTorch semantics: LSTM, GRU and RNN.

A layer holds its parameters under PyTorch's names and, packed once for the
C kernels, a :class:`fastrnn._core.Net`. Calls go straight to the core: no
per-step work happens in Python.
"""
from __future__ import annotations

import copy
import math
import operator
from typing import Any, Dict, Optional

import numpy as np

from . import _core

__all__ = ["RNNBase", "LSTM", "GRU", "RNN", "layer_from_config", "ACTIVATIONS"]

# name -> (C kernel id, default alpha, default beta)
ACTIVATIONS = {
    "sigmoid": (0, 0.0, 0.0),
    "tanh": (1, 0.0, 0.0),
    "relu": (2, 0.0, 0.0),
    "affine": (3, 1.0, 0.0),
    "linear": (3, 1.0, 0.0),
    "leakyrelu": (4, 0.01, 0.0),
    "thresholdedrelu": (5, 1.0, 0.0),
    "scaledtanh": (6, 1.0, 1.0),
    "hardsigmoid": (7, 0.2, 0.5),
    "elu": (8, 1.0, 0.0),
    "softsign": (9, 0.0, 0.0),
    "softplus": (10, 0.0, 0.0),
}

_N_ACTS = {"LSTM": 3, "GRU": 2, "RNN": 1}
_DTYPES = {"float32": "float32", "fp32": "float32", "bf16": "bf16", "bfloat16": "bf16",
           "int8": "int8", "qint8": "int8"}


def bf16_round(w: np.ndarray) -> np.ndarray:
    """float32 -> nearest-even bfloat16 value, returned as float32."""
    u = np.ascontiguousarray(w, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    out = r.astype(np.uint32).view(np.float32)
    return np.where(np.isnan(w), w, out).astype(np.float32)


def int8_quantize(w: np.ndarray):
    """Symmetric per-output-row int8: (q, scale) with w ~= q * scale[:, None]."""
    w = np.asarray(w, dtype=np.float32)
    m = np.abs(w).max(axis=1)
    scale = np.where(m > 0, m / np.float32(127), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale
_NO_INIT = object()  # seed sentinel: weights are loaded right after construction
_DEFAULT_ACTS = {"LSTM": ("sigmoid", "tanh", "tanh"), "GRU": ("sigmoid", "tanh")}


def _resolve_activations(cell, num_dirs, activations, alpha, beta):
    """Per direction, a list of 3 (kind, alpha, beta) tuples plus the
    normalised names/alpha/beta lists for config()."""
    n = _N_ACTS[cell]
    if isinstance(activations, str) or not hasattr(activations, "__iter__"):
        raise TypeError(f"activations must be a list of names, got {type(activations).__name__}")
    names = list(activations)
    if len(names) not in (n, n * num_dirs):
        raise ValueError(f"{cell} takes {n} activations per direction"
                         f"{f' ({n * num_dirs} for both directions)' if num_dirs == 2 else ''}, got {len(names)}")
    if len(names) == n:
        names = names * num_dirs
    names = [str(a).lower() for a in names]
    for a in names:
        if a not in ACTIVATIONS:
            raise ValueError(f"unsupported activation {a!r}; supported: {', '.join(sorted(ACTIVATIONS))}")

    def aligned(vals, what):
        if vals is None:
            return [None] * len(names)
        vals = list(vals)
        if len(vals) == n and len(names) == 2 * n:
            vals = vals * 2
        if len(vals) != len(names):
            raise ValueError(f"{what} must align with the activations ({len(names)} values), got {len(vals)}")
        return [None if v is None else float(v) for v in vals]

    al = aligned(alpha, "activation_alpha")
    be = aligned(beta, "activation_beta")
    per_dir = []
    for d in range(num_dirs):
        acts = []
        for j in range(n):
            k = d * n + j
            kind, da, db = ACTIVATIONS[names[k]]
            acts.append((kind, da if al[k] is None else al[k], db if be[k] is None else be[k]))
        while len(acts) < 3:
            acts.append((1, 0.0, 0.0))
        per_dir.append(acts)
    return per_dir, names, al, be


def load_params(owner: str, shapes: Dict[str, tuple], state_dict) -> Dict[str, np.ndarray]:
    """Strict load of ``state_dict`` against ``shapes`` (name -> shape): float32
    C-contiguous copies. Shared by every fastrnn module with parameters.

    Raises ValueError on a missing, unexpected or misshapen entry (naming the
    tensor and both shapes), TypeError on non-real data.
    """
    if not hasattr(state_dict, "keys"):
        raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    missing = [k for k in shapes if k not in state_dict]
    unexpected = [k for k in state_dict if k not in shapes]
    if missing or unexpected:
        msg = []
        if missing:
            msg.append(f"missing key(s): {', '.join(missing)}")
        if unexpected:
            msg.append(f"unexpected key(s): {', '.join(map(str, unexpected))}")
        raise ValueError(f"Error loading state_dict into {owner}: " + "; ".join(msg))
    params = {}
    for name, shape in shapes.items():
        a = np.asarray(_core.untorch(state_dict[name]))
        if a.dtype.kind not in "fiu":
            raise TypeError(f"parameter {name} must be real numbers, got dtype {a.dtype}")
        if a.shape != tuple(shape):
            raise ValueError(f"size mismatch for {name}: expected shape {tuple(shape)}, got {a.shape}")
        params[name] = np.array(a, dtype=np.float32, order="C", copy=True)
    return params


def non_strict(current: Dict[str, np.ndarray], state_dict) -> Dict[str, Any]:
    """``load_state_dict(..., strict=False)`` as in torch: entries the module does not have are
    ignored, and the ones it has that ``state_dict`` lacks keep their values (shapes are still
    checked by the strict load this feeds)."""
    if not hasattr(state_dict, "keys"):
        raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    return {**current, **{k: state_dict[k] for k in state_dict if k in current}}


class InferenceModule:
    """What torch.nn.Module code calls on a model at inference, for fastrnn's modules: ``eval()``
    (the only mode there is), ``train(False)``, ``forward(...)`` (the call), ``cpu()``,
    ``named_parameters()`` / ``parameters()`` (copies, in ``state_dict`` order)."""

    training = False

    def eval(self):
        """Inference mode, the only one: returns self."""
        return self

    def train(self, mode: bool = True):
        """``train(False)`` is ``eval()``; fastrnn does not train."""
        if mode:
            raise ValueError(f"{type(self).__name__} is for inference only; train() the torch module")
        return self

    def forward(self, *args, **kwargs):
        """The same as calling the module."""
        return self(*args, **kwargs)

    def cpu(self):
        """The module (fastrnn runs on the CPU)."""
        return self

    def named_parameters(self):
        """(name, array) pairs, as :meth:`state_dict`."""
        return iter(self.state_dict().items())

    def parameters(self):
        """The parameter arrays, as :meth:`state_dict`."""
        return iter(self.state_dict().values())


class RNNBase(InferenceModule):
    """Common machinery of LSTM, GRU and RNN (see those classes)."""

    _cell = ""
    _gates = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, bidirectional: bool = False, *, proj_size: int = 0,
                 linear_before_reset: bool = True, nonlinearity: str = "tanh", peephole: bool = False,
                 input_forget: bool = False, clip: Optional[float] = None, activations=None,
                 activation_alpha=None, activation_beta=None, seed: Optional[int] = None):
        for name, v, lo in (("input_size", input_size, 1), ("hidden_size", hidden_size, 1),
                            ("num_layers", num_layers, 1), ("proj_size", proj_size, 0)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {type(v).__name__}")
            if v < lo:
                raise ValueError(f"{name} must be >= {lo}, got {v}")
            if v > 2**30:
                raise ValueError(f"{name}={v} is too large")
        if proj_size and self._cell != "LSTM":
            raise ValueError("proj_size is only supported by LSTM")
        if proj_size >= hidden_size:
            raise ValueError(f"proj_size has to be smaller than hidden_size, got proj_size={proj_size} "
                             f"and hidden_size={hidden_size}")
        if (peephole or input_forget) and self._cell != "LSTM":
            raise ValueError("peephole and input_forget are LSTM options")
        if clip is not None:
            clip = float(clip)
            if not clip > 0:
                raise ValueError(f"clip must be a positive number, got {clip}")
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.proj_size = int(proj_size)
        self.linear_before_reset = bool(linear_before_reset)
        self.peephole = bool(peephole)
        self.input_forget = bool(input_forget)
        self.clip = clip
        self.num_directions = 2 if bidirectional else 1
        if self._cell == "RNN":
            if activations is None:
                nl = str(nonlinearity).lower()
                if nl not in ("tanh", "relu"):
                    raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
                activations = (nl,)
        elif activations is None:
            activations = _DEFAULT_ACTS[self._cell]
        self._acts, self.activations, self.activation_alpha, self.activation_beta = _resolve_activations(
            self._cell, self.num_directions, activations, activation_alpha, activation_beta)
        if self._cell == "RNN":
            self.nonlinearity = self.activations[0]
        if seed is not _NO_INIT:
            self._init_params(seed)

    def __reduce__(self):
        return (layer_from_config, (self.config(), self._params))

    def flatten_parameters(self):
        """A no-op (torch's RNN packs weights for cuDNN; fastrnn packs them at load)."""
        return None

    # -- parameters ---------------------------------------------------------
    def _param_shapes(self) -> Dict[str, tuple]:
        H, G, P = self.hidden_size, self._gates, self.proj_size
        Ho = P or H
        shapes = {}
        for k in range(self.num_layers):
            in_k = self.input_size if k == 0 else self.num_directions * Ho
            for sfx in ("", "_reverse")[: self.num_directions]:
                shapes[f"weight_ih_l{k}{sfx}"] = (G * H, in_k)
                shapes[f"weight_hh_l{k}{sfx}"] = (G * H, Ho)
                if self.bias:
                    shapes[f"bias_ih_l{k}{sfx}"] = (G * H,)
                    shapes[f"bias_hh_l{k}{sfx}"] = (G * H,)
                if P:
                    shapes[f"weight_hr_l{k}{sfx}"] = (P, H)
                if self.peephole:
                    shapes[f"weight_ph_l{k}{sfx}"] = (3 * H,)
        return shapes

    def _init_params(self, seed):
        rng = np.random.default_rng(seed)
        bound = 1.0 / math.sqrt(self.hidden_size)
        params = {name: rng.uniform(-bound, bound, size=shape).astype(np.float32)
                  for name, shape in self._param_shapes().items()}
        self._set_params(params)

    @property
    def dtype(self) -> str:
        """Weight type: ``float32``, ``bf16`` or ``int8``."""
        return getattr(self, "_dtype", "float32")

    def quantize(self, dtype: str) -> "RNNBase":
        """A new layer of the same kind with reduced-precision weights.

        Parameters
        ----------
        dtype : {"bf16", "int8"}
            ``bf16``: W_ih and W_hh rounded to bfloat16 (nearest even); dot
            products in bf16 with fp32 accumulation (AVX512_BF16 where the
            CPU has it). ``int8``: symmetric per-output-row int8 weights and
            x/h quantized dynamically per row to u8 (256 levels over the
            row's range, zero included exactly: its own scale and zero
            point), int32 accumulation (AVX512_VNNI where available); h
            for the recurrent product of the LSTM (without projection), the
            GRU (linear_before_reset) and the plain RNN with hidden sizes in
            multiples of 16 is quantized symmetrically to s8 instead, per
            row, and at batch 1 per block of 64 hidden units. The
            plain RNN, which has no gate to damp the rounding of x, also
            quantizes x's rounding error (on a grid 256 times finer) and
            adds its product in a second pass. Biases, peepholes, the LSTM
            projection and all gate math stay float32. A row of x (or h)
            holding NaN or inf has no finite grid: under int8 that
            sequence's outputs are NaN from that step on (float32 and bf16
            may saturate an inf instead); other rows are unaffected.

        Returns
        -------
        RNNBase
            The quantized layer; ``state_dict()`` gives the weights it
            computes with (dequantized to float32).
        """
        key = _DTYPES.get(str(dtype).lower())
        if key is None or key == "float32":
            raise ValueError(f"quantize() takes 'bf16' or 'int8', got {dtype!r}")
        if self.dtype != "float32":
            raise ValueError(f"layer is already quantized ({self.dtype})")
        new = copy.copy(self)
        new._dtype = key
        new._set_params(dict(self._params))
        return new

    @property
    def num_threads(self) -> Optional[int]:
        """Threads this layer uses (None: the global :func:`fastrnn.set_num_threads` setting)."""
        return getattr(self, "_num_threads", None)

    @num_threads.setter
    def num_threads(self, n: Optional[int]):
        if n is not None:
            try:
                n = _core.check_num_threads(n, "num_threads")
            except TypeError:
                raise ValueError(f"num_threads must be a positive int or None, got {n!r}") from None
        self._num_threads = n
        if hasattr(self, "_net"):
            self._net.num_threads = n or 0

    def reserve(self, steps: int, batch: int = 1) -> None:
        """Prepare the calling thread's working memory for calls of up to ``steps`` x ``batch``.

        A call's working memory (the input projection of every step, the states) is kept
        per calling thread and reused by its next calls; the first call that needs more
        maps it and takes a page fault on each new 4 KiB page (about 1.7 us each on a
        virtual machine, 0.15 ms for a T=100, B=1, H=128 LSTM). Building a layer does this
        for a batch-1 call of 128 steps in the thread that builds it; call ``reserve`` in
        each serving thread, or for longer or wider calls, to spare their first call.

        Parameters
        ----------
        steps : int
            Sequence length T of the calls to prepare for.
        batch : int, default 1
            Batch size B of those calls.

        Raises
        ------
        ValueError
            If ``steps`` or ``batch`` is negative or does not fit in 32 bits.
        MemoryError
            If the working memory cannot be mapped.
        """
        self._net.reserve(operator.index(steps), operator.index(batch))

    # Parameters as attributes, under PyTorch's names: reading gives the (read-only) array
    # the kernels compute with, assigning loads a new one (checked and repacked).
    def __getattr__(self, name):
        params = self.__dict__.get("_params")
        if params is not None and name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        params = self.__dict__.get("_params")
        if params is not None and name in params:
            self.load_state_dict({**params, name: value})
        else:
            object.__setattr__(self, name, value)

    def _set_params(self, params: Dict[str, np.ndarray]):
        if self.dtype != "float32":
            # Keep exactly the values the quantized kernels compute with.
            params = dict(params)
            for name, w in params.items():
                if name.startswith(("weight_ih_", "weight_hh_")):
                    if self.dtype == "bf16":
                        params[name] = bf16_round(w)
                    else:
                        if not np.all(np.isfinite(w)):
                            # a row's scale is its largest |w| / 127: inf or NaN leaves no grid
                            raise ValueError(f"int8 weights must be finite: {name} holds "
                                             f"{'NaN' if np.isnan(w).any() else 'inf'}")
                        q, sc = int8_quantize(w)
                        params[name] = (q.astype(np.float32) * sc[:, None]).astype(np.float32)
        for a in params.values():
            a.flags.writeable = False
        net = self._pack(params)
        net.num_threads = self.num_threads or 0
        # One store (one C call, so no signal handler runs between the two): a concurrent
        # call, and state_dict(), see either the old or the new weights.
        self.__dict__.update(_params=params, _net=net)

    def _pack(self, params) -> "_core.Net":
        """Lay the weights out for the kernels: pre-add biases where the math allows."""
        H, G = self.hidden_size, self._gates
        dirs = []
        for k in range(self.num_layers):
            for d, sfx in enumerate(("", "_reverse")[: self.num_directions]):
                p = lambda n: params.get(f"{n}_l{k}{sfx}")  # noqa: E731
                b_ih = p("bias_ih") if self.bias else np.zeros(G * H, np.float32)
                b_hh = p("bias_hh") if self.bias else np.zeros(G * H, np.float32)
                entry = {"w_ih": p("weight_ih"), "w_hh": p("weight_hh"), "acts": self._acts[d]}
                if self._cell == "GRU" and self.linear_before_reset:
                    # b_hn is scaled by r inside the candidate: it cannot be folded in.
                    bias = b_ih.astype(np.float32, copy=True)
                    bias[: 2 * H] += b_hh[: 2 * H]
                    entry["b_hn"] = np.ascontiguousarray(b_hh[2 * H:], dtype=np.float32)
                else:
                    bias = (b_ih + b_hh).astype(np.float32)
                entry["bias"] = np.ascontiguousarray(bias)
                if self.proj_size:
                    entry["w_hr"] = p("weight_hr")
                if self.peephole:
                    entry["peep"] = p("weight_ph")
                dirs.append(entry)
        return _core.Net(self._cell, self.num_layers, self.num_directions, self.input_size,
                         self.hidden_size, self.proj_size, self.batch_first, self.linear_before_reset,
                         self.input_forget, self.clip or 0.0, dirs, self.dtype)

    def _step(self, x_t, h0, c0):
        """One time step: x_t (B, input_size) or (input_size,)."""
        if self.bidirectional:
            raise ValueError("a bidirectional layer cannot stream: its reverse direction needs the whole "
                             "sequence; call the layer on the full sequence instead")
        x = _core.as_float32(x_t, "x_t")
        if x.ndim not in (1, 2):
            raise ValueError(f"step() takes x_t of shape (B, input_size) or (input_size,), got shape {x.shape}")
        one = x.ndim == 1 or not self.batch_first
        out, h_n, c_n = self._net.forward(x[None] if one else x[:, None], h0, c0, None)
        return (out[0] if one else out[:, 0]), h_n, c_n

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Parameters under PyTorch's names, as float32 numpy arrays (copies)."""
        return {k: v.copy() for k, v in self._params.items()}

    def load_state_dict(self, state_dict, strict: bool = True):
        """Load parameters given under PyTorch's names.

        Parameters
        ----------
        state_dict : mapping of str to array-like
            e.g. ``torch_module.state_dict()`` (tensors are converted) or
            the output of :meth:`state_dict`.
        strict : bool
            True: a missing or unexpected entry is an error. False (as in
            torch): unexpected entries are ignored and missing ones keep
            their values; shapes are checked either way.

        Raises
        ------
        ValueError
            On a missing, unexpected or misshapen entry (the message names
            the tensor and both shapes).
        TypeError
            On data that is not real numbers (complex, strings, objects).
        """
        if not strict:
            state_dict = non_strict(self._params, state_dict)
        self._set_params(load_params(type(self).__name__, self._param_shapes(), state_dict))
        return self

    def parameters_count(self) -> int:
        return int(sum(a.size for a in self._params.values()))

    # -- configuration --------------------------------------------------------
    def config(self) -> Dict[str, Any]:
        """JSON-serialisable constructor arguments (see :func:`layer_from_config`)."""
        cfg = {"cell": self._cell, "input_size": self.input_size, "hidden_size": self.hidden_size,
               "num_layers": self.num_layers, "bias": self.bias, "batch_first": self.batch_first,
               "bidirectional": self.bidirectional}
        if self._cell == "LSTM":
            cfg.update(proj_size=self.proj_size, peephole=self.peephole, input_forget=self.input_forget)
        if self._cell == "GRU":
            cfg["linear_before_reset"] = self.linear_before_reset
        if self._cell == "RNN":
            cfg["nonlinearity"] = self.nonlinearity
        cfg.update(clip=self.clip, activations=list(self.activations),
                   activation_alpha=list(self.activation_alpha), activation_beta=list(self.activation_beta))
        if self.dtype != "float32":
            cfg["dtype"] = self.dtype
        return cfg

    def __repr__(self):
        defaults = {"num_layers": 1, "bias": True, "batch_first": False, "bidirectional": False,
                    "proj_size": 0}
        extra = "".join(f", {k}={getattr(self, k)!r}" for k, v in defaults.items() if getattr(self, k) != v)
        return f"{type(self).__name__}({self.input_size}, {self.hidden_size}{extra})"


class LSTM(RNNBase):
    """Long short-term memory layer with torch.nn.LSTM's semantics.

    Parameters
    ----------
    input_size, hidden_size, num_layers, bias, batch_first, bidirectional, proj_size
        As in ``torch.nn.LSTM``.
    peephole : bool
        ONNX peephole connections (parameters ``weight_ph_l{k}``, gates i, f, o).
    input_forget : bool
        Couple the input and forget gates: f = 1 - i (ONNX ``input_forget``).
    clip : float, optional
        Clip every gate pre-activation to [-clip, clip] (ONNX ``clip``).
    activations, activation_alpha, activation_beta
        ONNX activations f, g, h (default sigmoid, tanh, tanh).
    seed : int, optional
        Seed of the torch-like uniform(-1/sqrt(H), 1/sqrt(H)) initialisation.

    Calling ``lstm(x, hx=None, lengths=None)`` returns ``out, (h_n, c_n)``.
    """

    _cell = "LSTM"
    _gates = 4

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 bidirectional=False, proj_size=0, *, peephole=False, input_forget=False, clip=None,
                 activations=None, activation_alpha=None, activation_beta=None, seed=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, bidirectional,
                         proj_size=proj_size, peephole=peephole, input_forget=input_forget, clip=clip,
                         activations=activations, activation_alpha=activation_alpha,
                         activation_beta=activation_beta, seed=seed)

    def __call__(self, x, hx=None, lengths=None):
        """Run the layer.

        Parameters
        ----------
        x : array_like
            (T, B, input_size), (B, T, input_size) if batch_first, or (T, input_size).
        hx : tuple of (h0, c0), optional
            Initial states, (num_layers*D, B, proj_size or hidden_size) and
            (num_layers*D, B, hidden_size). Zeros when omitted.
        lengths : array_like of int, optional
            Valid length of each batch entry (packed-sequence semantics).

        Returns
        -------
        out : ndarray
        (h_n, c_n) : tuple of ndarray
        """
        h0, c0 = self._split_hx(hx)
        out, h_n, c_n = self._net.forward(x, h0, c0, lengths)
        return out, (h_n, c_n)

    @staticmethod
    def _split_hx(hx):
        if hx is None:
            return None, None
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError("LSTM expects hx as a tuple (h0, c0) of two arrays, got "
                            f"{type(hx).__name__}{' of length %d' % len(hx) if isinstance(hx, (tuple, list)) else ''}")
        if hx[0] is None or hx[1] is None:
            raise TypeError(f"LSTM expects hx as a tuple (h0, c0) of two arrays, got "
                            f"{'h0' if hx[0] is None else 'c0'}=None (pass zeros for a zero state)")
        return hx

    def step(self, x_t, hx=None):
        """Run one time step (streaming).

        Parameters
        ----------
        x_t : array_like
            (B, input_size), or (input_size,) for one unbatched sequence.
        hx : tuple of (h, c), optional
            The state returned by the previous step or call (zeros when omitted).

        Returns
        -------
        out_t : ndarray
            (B, proj_size or hidden_size).
        (h, c) : tuple of ndarray
            The new state, in the format of a full call's (h_n, c_n).
        """
        h0, c0 = self._split_hx(hx)
        out, h_n, c_n = self._step(x_t, h0, c0)
        return out, (h_n, c_n)


class GRU(RNNBase):
    """Gated recurrent unit layer with torch.nn.GRU's semantics.

    Parameters
    ----------
    input_size, hidden_size, num_layers, bias, batch_first, bidirectional
        As in ``torch.nn.GRU``.
    linear_before_reset : bool
        True (PyTorch): n = tanh(W_in x + b_in + r * (W_hn h + b_hn)).
        False (ONNX default, original GRU): n = tanh(W_in x + b_in + W_hn (r * h) + b_hn).
    clip, activations, activation_alpha, activation_beta
        ONNX options (activations f, g; default sigmoid, tanh).
    seed : int, optional
        Seed of the initialisation.

    Calling ``gru(x, hx=None, lengths=None)`` returns ``out, h_n``.
    """

    _cell = "GRU"
    _gates = 3

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 bidirectional=False, linear_before_reset=True, *, clip=None, activations=None,
                 activation_alpha=None, activation_beta=None, seed=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, bidirectional,
                         linear_before_reset=linear_before_reset, clip=clip, activations=activations,
                         activation_alpha=activation_alpha, activation_beta=activation_beta, seed=seed)

    def __call__(self, x, hx=None, lengths=None, *, h0=None):
        """Run the layer: returns ``out, h_n`` (see :class:`LSTM` for shapes)."""
        if h0 is not None:
            if hx is not None:
                raise TypeError("give the initial state as hx or h0, not both")
            hx = h0
        if isinstance(hx, (tuple, list)):
            raise TypeError(f"{type(self).__name__} expects hx as one array, got a {type(hx).__name__}")
        out, h_n, _ = self._net.forward(x, hx, None, lengths)
        return out, h_n

    def step(self, x_t, hx=None):
        """Run one time step (streaming): ``out_t, h = layer.step(x_t, h)``.

        x_t is (B, input_size) or (input_size,); the state has a full call's
        h_n format. Stepping through a sequence equals one full call.
        """
        if isinstance(hx, (tuple, list)):
            raise TypeError(f"{type(self).__name__} expects hx as one array, got a {type(hx).__name__}")
        out, h_n, _ = self._step(x_t, hx, None)
        return out, h_n


class RNN(GRU):
    """Elman RNN layer with torch.nn.RNN's semantics (nonlinearity tanh or relu).

    Parameters
    ----------
    input_size, hidden_size, num_layers, nonlinearity, bias, batch_first, bidirectional
        As in ``torch.nn.RNN``.
    clip, activations, activation_alpha, activation_beta
        ONNX options; ``activations`` overrides ``nonlinearity``.
    seed : int, optional
        Seed of the initialisation.
    """

    _cell = "RNN"
    _gates = 1

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, bidirectional=False, *, clip=None, activations=None,
                 activation_alpha=None, activation_beta=None, seed=None):
        RNNBase.__init__(self, input_size, hidden_size, num_layers, bias, batch_first, bidirectional,
                         nonlinearity=nonlinearity, clip=clip, activations=activations,
                         activation_alpha=activation_alpha, activation_beta=activation_beta, seed=seed)


_CLASSES = {"LSTM": LSTM, "GRU": GRU, "RNN": RNN}


def layer_from_config(cfg: Dict[str, Any], state_dict=None) -> RNNBase:
    """Build a layer from :meth:`RNNBase.config` output.

    Parameters
    ----------
    cfg : dict
        Configuration, as returned by ``layer.config()``.
    state_dict : mapping, optional
        Parameters to load (then no random initialisation is done); without
        it the layer gets torch-like random weights.
    """
    cfg = dict(cfg)
    cell = cfg.pop("cell", None)
    dtype = cfg.pop("dtype", "float32")
    if cell not in _CLASSES:
        raise ValueError(f"config has unknown cell {cell!r}; expected one of {sorted(_CLASSES)}")
    if _DTYPES.get(str(dtype).lower()) is None:
        raise ValueError(f"config has unknown dtype {dtype!r}; expected float32, bf16 or int8")
    if state_dict is None:
        layer = _CLASSES[cell](**cfg)
    else:
        n = cfg.get("num_layers", 1)
        if isinstance(n, (int, np.integer)) and hasattr(state_dict, "keys") and 2 * n > len(state_dict):
            # before the layer lists the parameters of every layer the config claims (a file
            # saying num_layers=10**8 would take minutes to be told its tensors are missing)
            raise ValueError(f"Error loading state_dict into {cell}: missing key(s) for num_layers={n}: "
                             f"the state dict holds {len(state_dict)} tensors, each layer needs at "
                             "least weight_ih and weight_hh")
        cfg["seed"] = _NO_INIT
        layer = _CLASSES[cell](**cfg).load_state_dict(state_dict)
    return layer if _DTYPES[str(dtype).lower()] == "float32" else layer.quantize(dtype)
