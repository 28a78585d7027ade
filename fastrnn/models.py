"""Whole-sequence models: ``Sequential`` chains of embeddings, recurrent layers, linear layers and
activations, with generation (language models) and autoregressive forecasting.

Modules::

    Embedding(num_embeddings, embedding_dim, padding_idx=None)   ids -> vectors       "weight"
    Linear(in_features, out_features, bias=True)                 last axis             "weight", "bias"
    LSTM / GRU / RNN (fastrnn.rnn)                               sequences, with state  torch names
    Tanh(), ReLU(), Sigmoid(), Softmax(dim=-1), LogSoftmax(dim=-1), Identity()
    Select(index=-1)                                             one time step (sequence-to-one)

String shortcuts in ``Sequential``: ``"tanh"``, ``"relu"``, ``"sigmoid"``, ``"softmax"``,
``"log_softmax"`` (also ``"logsoftmax"``), ``"identity"``, ``"last"`` (= ``Select(-1)``).

``y, state = model(x, state=None, lengths=None)``: ``state`` is a list with one entry per recurrent
layer (in order; an LSTM's entry is ``(h, c)``, a GRU's or RNN's ``h``, each in the layer's own
``h_n`` format), so a long stream can be fed in chunks: ``y2, state = model(x2, state)``.
Embedding, Linear and the activations work on whole arrays with numpy (one matrix product over
all steps); recurrent layers run their time loop in C.

Layout: every recurrent layer of a model must have the same ``batch_first``; the model's input is
then ``(T, B, ...)`` (``(B, T, ...)`` with batch_first), or unbatched ``(T, ...)``; token ids are
``(T, B)`` / ``(B, T)`` / ``(T,)`` integers. ``Select(index)`` picks time step ``index`` on the time
axis of that layout (with ``lengths``, ``Select(-1)`` picks each sequence's own last valid step),
turning a sequence model into a sequence-to-one model: ``Sequential(LSTM(1, 32), Select(-1),
Linear(32, 1))`` maps ``(T, B, 1)`` to ``(B, 1)``. For a bidirectional layer the selected step holds
the forward direction's last output and the reverse direction's output at that step.

Files: ``save_model(model, path)`` writes ONE .safetensors file (tensors named ``"<index>.<name>"``
like torch's ``nn.Sequential.state_dict()``, the architecture as JSON under the metadata key
``"fastrnn_model"``); ``load_model(path)`` reads it back with numpy alone.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Optional

import numpy as np

from . import _core
from .rnn import InferenceModule, RNNBase, layer_from_config, load_params, non_strict

__all__ = ["Module", "Embedding", "Linear", "Tanh", "ReLU", "Sigmoid", "Softmax", "LogSoftmax",
           "Identity", "Select", "Sequential", "from_torch_module", "save_model", "load_model",
           "is_model_file", "MODEL_METADATA_KEY"]

MODEL_METADATA_KEY = "fastrnn_model"
MODEL_FORMAT_KEY = "fastrnn_format"
MODEL_FORMAT_VERSION = "1"
_NO_INIT = object()


def _check_int(name, v, lo=1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return int(v)


def _as_float(x, what="input"):
    a = np.asarray(x)
    if a.dtype.kind != "f":
        raise TypeError(f"{what} must hold real floating-point numbers, got dtype {a.dtype}")
    return a.astype(np.float32, copy=False)


class _Ctx:
    """What a module needs to know about the layout while a Sequential runs."""

    __slots__ = ("time_axis", "lengths", "step")

    def __init__(self, time_axis=0, lengths=None, step=False):
        self.time_axis = time_axis  # None once the time axis is gone (after Select / in step mode)
        self.lengths = lengths
        self.step = step


# --------------------------------------------------------------------------------------------
# stateless modules
# --------------------------------------------------------------------------------------------
class Module(InferenceModule):
    """Base of fastrnn's stateless modules: ``y = module(x)`` on whole arrays."""

    def __call__(self, x):
        return self._forward(x, _Ctx())

    def _forward(self, x, ctx):  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> Dict[str, np.ndarray]:
        return {k: v.copy() for k, v in getattr(self, "_params", {}).items()}

    def _param_shapes(self) -> Dict[str, tuple]:
        return {}

    def load_state_dict(self, state_dict, strict: bool = True):
        """Load parameters; strict: missing/unexpected/misshapen entries are errors (strict=False:
        as in torch, see :meth:`fastrnn.LSTM.load_state_dict`); returns self."""
        if not strict:
            state_dict = non_strict(self.state_dict(), state_dict)
        self._set_params(load_params(type(self).__name__, self._param_shapes(), state_dict))
        return self

    def _set_params(self, params, **derived):
        """Freeze ``params`` and store them with what is ``derived`` from them in one store: a
        concurrent call sees the old set or the new one."""
        for a in params.values():
            a.flags.writeable = False
        self.__dict__.update(_params=params, **derived)

    def parameters_count(self) -> int:
        return int(sum(a.size for a in getattr(self, "_params", {}).values()))

    def config(self) -> Dict[str, Any]:
        return {"type": type(self).__name__}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"


class Embedding(Module):
    """Lookup table with ``torch.nn.Embedding``'s semantics: integer ids (any shape) -> vectors.

    Parameters: ``weight`` (num_embeddings, embedding_dim), initialised N(0, 1) (the
    ``padding_idx`` row zeros, as in torch; it only matters for the initialisation at inference).
    Ids outside ``0..num_embeddings-1`` raise IndexError.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: Optional[int] = None,
                 *, seed: Optional[int] = None):
        self.num_embeddings = _check_int("num_embeddings", num_embeddings)
        self.embedding_dim = _check_int("embedding_dim", embedding_dim)
        if padding_idx is not None:
            padding_idx = _check_int("padding_idx", padding_idx, lo=-self.num_embeddings)
            if padding_idx >= self.num_embeddings:
                raise ValueError(f"padding_idx must be within num_embeddings ({self.num_embeddings}), "
                                 f"got {padding_idx}")
            if padding_idx < 0:
                padding_idx += self.num_embeddings
        self.padding_idx = padding_idx
        if seed is not _NO_INIT:
            w = np.random.default_rng(seed).standard_normal(
                (self.num_embeddings, self.embedding_dim)).astype(np.float32)
            if padding_idx is not None:
                w[padding_idx] = 0
            self._set_params({"weight": w})

    @property
    def weight(self):
        return self._params["weight"]

    def _param_shapes(self):
        return {"weight": (self.num_embeddings, self.embedding_dim)}

    def _forward(self, ids, ctx):
        a = np.asarray(ids)
        if a.dtype.kind not in "iu":
            raise TypeError(f"Embedding expects integer ids, got dtype {a.dtype}")
        if a.size:
            lo, hi = a.min(), a.max()
            if lo < 0 or hi >= self.num_embeddings:
                bad = lo if lo < 0 else hi
                raise IndexError(f"Embedding: id {int(bad)} is out of range 0..{self.num_embeddings - 1}")
        return self._params["weight"][a]

    def config(self):
        return {"type": "Embedding", "num_embeddings": self.num_embeddings,
                "embedding_dim": self.embedding_dim, "padding_idx": self.padding_idx}

    def __repr__(self):
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"Embedding({self.num_embeddings}, {self.embedding_dim}{pad})"


class Linear(Module):
    """``y = x W^T + b`` on the last axis (``torch.nn.Linear``): one matrix product for all leading
    axes. Parameters ``weight`` (out_features, in_features), ``bias`` (out_features) when bias=True;
    torch's default init uniform(-1/sqrt(in), 1/sqrt(in))."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 seed: Optional[int] = None):
        self.in_features = _check_int("in_features", in_features)
        self.out_features = _check_int("out_features", out_features)
        self.bias = bool(bias)
        if seed is not _NO_INIT:
            rng = np.random.default_rng(seed)
            bound = 1.0 / math.sqrt(self.in_features)
            params = {"weight": rng.uniform(-bound, bound, (self.out_features, self.in_features)).astype(np.float32)}
            if self.bias:
                params["bias"] = rng.uniform(-bound, bound, self.out_features).astype(np.float32)
            self._set_params(params)

    @property
    def weight(self):
        return self._params["weight"]

    def _param_shapes(self):
        shapes = {"weight": (self.out_features, self.in_features)}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        return shapes

    def _set_params(self, params):
        # (in, out): x @ wt is one sgemm; a concurrent call (its matmul releases the GIL) takes
        # the old or the new pair, never the new weight with the old bias
        super()._set_params(params, _wb=(np.ascontiguousarray(params["weight"].T), params.get("bias")))

    def _forward(self, x, ctx):
        a = _as_float(x)
        if a.ndim == 0 or a.shape[-1] != self.in_features:
            raise ValueError(f"Linear expects {self.in_features} features on the last axis, got shape {a.shape}")
        lead = a.shape[:-1]
        wt, b = self._wb
        y = np.ascontiguousarray(a.reshape(-1, self.in_features)) @ wt
        if b is not None:
            y += b
        return y.reshape(lead + (self.out_features,))

    def config(self):
        return {"type": "Linear", "in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias}


class Identity(Module):
    """Passes its input through (also what dropout layers convert to)."""

    def _forward(self, x, ctx):
        return x


class Tanh(Module):
    def _forward(self, x, ctx):
        return np.tanh(_as_float(x))


class ReLU(Module):
    def _forward(self, x, ctx):
        return np.maximum(_as_float(x), np.float32(0))


class Sigmoid(Module):
    def _forward(self, x, ctx):
        from scipy.special import expit
        return expit(_as_float(x))


class _DimModule(Module):
    def __init__(self, dim: int = -1):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"{type(self).__name__} needs an int dim, got {dim!r}")
        self.dim = int(dim)

    def _axis(self, a, ctx):
        if self.dim >= 0 and ctx.step:
            raise ValueError(f"{type(self).__name__}(dim={self.dim}) cannot run step by step; "
                             "use a negative dim (e.g. dim=-1)")
        if not -a.ndim <= self.dim < a.ndim:
            raise ValueError(f"{type(self).__name__}: dim {self.dim} is out of range for a {a.ndim}-D input")
        return self.dim

    def config(self):
        return {"type": type(self).__name__, "dim": self.dim}


class Softmax(_DimModule):
    """Softmax along ``dim`` (default the last axis), computed stably."""

    def _forward(self, x, ctx):
        a = _as_float(x)
        ax = self._axis(a, ctx)
        if a.size == 0:  # nothing to normalise (torch returns the empty tensor)
            return a.copy()
        e = np.exp(a - a.max(axis=ax, keepdims=True))
        return e / e.sum(axis=ax, keepdims=True)


class LogSoftmax(_DimModule):
    """Log-softmax along ``dim`` (default the last axis), computed stably."""

    def _forward(self, x, ctx):
        a = _as_float(x)
        ax = self._axis(a, ctx)
        if a.size == 0:
            return a.copy()
        s = a - a.max(axis=ax, keepdims=True)
        return s - np.log(np.exp(s).sum(axis=ax, keepdims=True))


class Select(Module):
    """Pick one time step: ``Select(-1)`` keeps the last step (sequence-to-one models).

    Inside a :class:`Sequential` the time axis is the model's (0, or 1 with batch_first; 0 for an
    unbatched input) and, when the model is called with ``lengths``, ``Select(-1)`` picks each
    sequence's own last valid step (a sequence of length 0 gives zeros). Alone, ``Select(i)(x)``
    indexes axis 0. The time axis is gone afterwards: no recurrent layer may follow.
    """

    def __init__(self, index: int = -1):
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"Select needs an int index, got {index!r}")
        self.index = int(index)

    def _forward(self, x, ctx):
        a = np.asarray(x)
        if ctx.step:  # one step at a time: there is no time axis left to select from
            return a
        ax = ctx.time_axis
        if ax is None:
            raise ValueError("Select: the input has no time axis left (a Select came before)")
        if a.ndim <= ax:
            raise ValueError(f"Select: input of shape {a.shape} has no time axis {ax}")
        T = a.shape[ax]
        if ctx.lengths is not None and self.index == -1:
            lengths = np.asarray(ctx.lengths, dtype=np.int64)
            steps = np.moveaxis(a, ax, 0)
            if T == 0:  # every length is 0
                return np.zeros(steps.shape[1:], a.dtype)
            idx = np.maximum(lengths - 1, 0)
            out = np.take_along_axis(steps, idx[None, :, None], axis=0)[0]
            out[lengths == 0] = 0
            return out
        if not -T <= self.index < T:
            raise IndexError(f"Select({self.index}): the sequence has {T} steps")
        return np.take(a, self.index, axis=ax)

    def config(self):
        return {"type": "Select", "index": self.index}

    def __repr__(self):
        return f"Select({self.index})"


_SHORTCUTS = {"tanh": Tanh, "relu": ReLU, "sigmoid": Sigmoid, "softmax": Softmax,
              "log_softmax": LogSoftmax, "logsoftmax": LogSoftmax, "identity": Identity,
              "last": lambda: Select(-1)}
_STATELESS = {c.__name__: c for c in (Embedding, Linear, Identity, Tanh, ReLU, Sigmoid, Softmax,
                                      LogSoftmax, Select)}


def _rnn_step(layer, x_t, hx):
    """One time step of a recurrent layer: x_t (B, I) -> (out_t (B, Hout), state)."""
    step = getattr(layer, "step", None)
    if step is not None:
        return step(x_t, hx)
    xs = x_t[:, None] if layer.batch_first else x_t[None]
    out, hx = layer(xs, hx)
    return (out[:, 0] if layer.batch_first else out[0]), hx


# --------------------------------------------------------------------------------------------
# Sequential
# --------------------------------------------------------------------------------------------
class Sequential(InferenceModule):
    """A chain of modules run one after the other on whole sequences.

    ``Sequential(*modules, batch_first=None)``: modules are fastrnn modules (``Embedding``,
    ``Linear``, ``LSTM``/``GRU``/``RNN``, activations, ``Select``) or string shortcuts
    (``"tanh"``, ``"relu"``, ``"sigmoid"``, ``"softmax"``, ``"log_softmax"``, ``"identity"``,
    ``"last"``). ``batch_first`` is the recurrent layers' (they must agree); give it only for a
    model without recurrent layers.

    ``y, state = model(x, state=None, lengths=None)`` runs the chain: state is a list with one
    entry per recurrent layer (see :mod:`fastrnn.models`). ``model.generate(...)`` and
    ``model.forecast(...)`` run language models and sequence-to-one forecasters with carried state.
    ``state_dict()`` names are ``"<index>.<param>"`` like ``torch.nn.Sequential``'s.
    """

    def __init__(self, *modules, batch_first: Optional[bool] = None):
        if len(modules) == 1 and isinstance(modules[0], (list, tuple)):
            modules = tuple(modules[0])
        mods = []
        for i, m in enumerate(modules):
            if isinstance(m, str):
                key = m.lower()
                if key not in _SHORTCUTS:
                    raise ValueError(f"unknown module shortcut {m!r}; known: {', '.join(sorted(_SHORTCUTS))}")
                m = _SHORTCUTS[key]()
            if not isinstance(m, (Module, RNNBase)):
                raise TypeError(f"module {i} is a {type(m).__name__}; Sequential takes fastrnn modules "
                                f"(Embedding, Linear, LSTM, GRU, RNN, activations, Select) or shortcuts")
            mods.append(m)
        rnn_bf = {m.batch_first for m in mods if isinstance(m, RNNBase)}
        if len(rnn_bf) > 1:
            raise ValueError("all recurrent layers of a Sequential must have the same batch_first")
        if rnn_bf:
            bf = rnn_bf.pop()
            if batch_first is not None and bool(batch_first) != bf:
                raise ValueError(f"batch_first={batch_first} contradicts the recurrent layers' batch_first={bf}")
            batch_first = bf
        self.batch_first = bool(batch_first)
        seen_select = False
        for i, m in enumerate(mods):
            if isinstance(m, Select):
                if seen_select:
                    raise ValueError("a Sequential may hold one Select (the time axis is gone after it)")
                seen_select = True
            elif isinstance(m, RNNBase) and seen_select:
                raise ValueError(f"module {i} ({type(m).__name__}) comes after a Select: "
                                 "there is no time axis left to run it over")
        self.modules: List[Any] = mods

    # -- container protocol -------------------------------------------------------------------
    def __len__(self):
        return len(self.modules)

    def __iter__(self):
        return iter(self.modules)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Sequential(*self.modules[i], batch_first=self.batch_first)
        return self.modules[i]

    @property
    def recurrent_layers(self) -> List[RNNBase]:
        return [m for m in self.modules if isinstance(m, RNNBase)]

    def __repr__(self):
        inner = "".join(f"\n  ({i}): {m!r}" for i, m in enumerate(self.modules))
        return f"Sequential({inner}\n)" if inner else "Sequential()"

    # -- parameters ---------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, np.ndarray]:
        """All parameters as ``"<index>.<name>"`` (torch.nn.Sequential's naming), float32 copies."""
        out = {}
        for i, m in enumerate(self.modules):
            for k, v in m.state_dict().items():
                out[f"{i}.{k}"] = v
        return out

    def load_state_dict(self, state_dict, strict: bool = True):
        """Load ``"<index>.<name>"`` parameters (e.g. a torch Sequential's state dict); strict=False
        as in torch (see :meth:`fastrnn.LSTM.load_state_dict`)."""
        if not strict:
            state_dict = non_strict(self.state_dict(), state_dict)
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        parts: Dict[int, dict] = {i: {} for i in range(len(self.modules))}
        unexpected = []
        for key in state_dict:
            head, dot, rest = str(key).partition(".")
            if dot and head.isdigit() and int(head) in parts:
                parts[int(head)][rest] = state_dict[key]
            else:
                unexpected.append(str(key))
        if unexpected:
            raise ValueError(f"Error loading state_dict into Sequential: unexpected key(s): {', '.join(unexpected)}")
        # Validate everything before changing anything.
        loaded = []
        for i, m in enumerate(self.modules):
            sd = parts[i]
            try:
                if isinstance(m, RNNBase):
                    new = layer_from_config(m.config(), sd)
                else:
                    new = _build_module(m.config(), sd)
            except (ValueError, TypeError) as exc:
                raise type(exc)(f"module {i} ({type(m).__name__}): {exc}") from None
            if isinstance(m, RNNBase):
                new.num_threads = m.num_threads   # a layer's own thread setting stays
            loaded.append(new)
        # All modules at once, in one store: a concurrent call runs the old model or the new one,
        # never new layers with old ones (loading into each module in place, as torch does,
        # would mix them). A module taken out of the model before keeps the old weights.
        self.modules = loaded
        return self

    def parameters_count(self) -> int:
        return int(sum(m.parameters_count() for m in self.modules))

    def config(self) -> Dict[str, Any]:
        """The architecture as JSON-serialisable data (what save_model stores)."""
        mods = []
        for m in self.modules:
            if isinstance(m, RNNBase):
                mods.append({"type": "RNNLayer", "config": m.config()})
            else:
                mods.append(m.config())
        return {"type": "Sequential", "batch_first": self.batch_first, "modules": mods}

    # -- running ------------------------------------------------------------------------------
    def _input_time_axis(self, x):
        """Time axis of the model input (0 or 1), from its rank and the first module."""
        first = self.modules[0] if self.modules else None
        nd = np.ndim(x)
        base = 1 if isinstance(first, Embedding) else 2  # rank of one unbatched step... + time
        if nd == base:  # unbatched sequence
            return 0, True
        if nd == base + 1:
            return (1 if self.batch_first else 0), False
        what = "token ids" if isinstance(first, Embedding) else "features"
        lay = "(B, T" if self.batch_first else "(T, B"
        raise ValueError(f"Sequential input ({what}) must be {base + 1}-D {lay}{', F' if base == 2 else ''}) "
                         f"or {base}-D for one unbatched sequence, got shape {np.shape(x)}")

    def _check_state(self, state):
        n = len(self.recurrent_layers)
        if state is None:
            return [None] * n
        if not isinstance(state, (list, tuple)):
            raise TypeError(f"state must be a list with one entry per recurrent layer ({n}), "
                            f"got {type(state).__name__}")
        if len(state) != n:
            raise ValueError(f"state has {len(state)} entries; this model has {n} recurrent layer(s)")
        return list(state)

    def __call__(self, x, state=None, lengths=None):
        """Run the model on whole sequences.

        Parameters
        ----------
        x : array_like
            Token ids (if the first module is an Embedding) or features, in the model's layout
            (see :mod:`fastrnn.models`).
        state : list, optional
            One entry per recurrent layer (None entries: zeros), e.g. the state returned by the
            previous call.
        lengths : array_like of int, optional
            Valid length of each batch entry (packed-sequence semantics in the recurrent layers;
            ``Select(-1)`` then picks each sequence's last valid step).

        Returns
        -------
        y : ndarray
        state : list
            The recurrent layers' final states (LSTM: ``(h_n, c_n)``, GRU/RNN: ``h_n``).
        """
        if not self.modules:
            return x, []
        ax, unbatched = self._input_time_axis(x)
        if lengths is not None:
            if unbatched:
                raise ValueError("lengths cannot be given for an unbatched input")
            # checked here, not only by a recurrent layer: Select(-1) indexes with them
            shape = np.shape(x)
            lengths = _core.check_lengths(lengths, shape[1 - ax], shape[ax])
        ctx = _Ctx(time_axis=0 if unbatched else ax, lengths=lengths)
        return self._run(x, self._check_state(state), ctx)

    def _run(self, x, state, ctx):
        new_state = []
        k = 0
        for m in self.modules:
            if isinstance(m, RNNBase):
                if ctx.step:
                    x, s = _rnn_step(m, x, state[k])
                else:
                    x, s = m(x, state[k], lengths=ctx.lengths)
                new_state.append(s)
                k += 1
            else:
                x = m._forward(x, ctx)
                if isinstance(m, Select):
                    ctx.time_axis = None
        return x, new_state

    def step(self, x_t, state=None):
        """One time step for a batch: ``y_t, state = model.step(x_t, state)``.

        x_t: (B,) token ids or (B, F) features (no time axis); y_t: the model's output for that
        step, without the time axis. Stepping through a sequence equals one full call.
        """
        x_t = np.asarray(x_t)
        first = self.modules[0] if self.modules else None
        want = 1 if isinstance(first, Embedding) else 2
        if x_t.ndim != want:
            raise ValueError(f"step expects a {'(B,) array of ids' if want == 1 else '(B, F) array'}, "
                             f"got shape {x_t.shape}")
        return self._run(x_t, self._check_state(state), _Ctx(time_axis=None, step=True))

    # -- generation ---------------------------------------------------------------------------
    def _check_generative(self):
        if not self.modules or not isinstance(self.modules[0], Embedding):
            raise ValueError("generate needs a language model: Embedding -> recurrent layers -> Linear")
        for m in self.modules:
            if isinstance(m, Select):
                raise ValueError("generate needs per-step outputs; this model has a Select")
            if isinstance(m, RNNBase) and m.bidirectional:
                raise ValueError("generate cannot run a bidirectional layer step by step")

    def generate(self, prompt_ids, max_new_tokens: int, temperature: float = 1.0,
                 top_k: Optional[int] = None, seed=None) -> np.ndarray:
        """Continue token sequences with a language model (Embedding -> recurrent stack -> Linear).

        The prompt runs once (one call per recurrent layer over all its steps); each new token
        is then one step with the carried state (no recomputation).

        Parameters
        ----------
        prompt_ids : array_like of int, (B, T0) or (T0,)
            Prompts (batch-major whatever the model's layout), T0 >= 1.
        max_new_tokens : int
            Tokens to add.
        temperature : float
            0: greedy (argmax); otherwise sample from softmax(logits / temperature).
        top_k : int, optional
            Sample only among the k most likely tokens.
        seed : int or numpy.random.Generator, optional
            Sampling is reproducible for a given seed.

        Returns
        -------
        ndarray of int64, (B, T0 + max_new_tokens) (or 1-D for a 1-D prompt): the prompts
        followed by the new tokens.

        The model's output is read as logits; a final Softmax is undone with a log, a final
        LogSoftmax is used as is.
        """
        self._check_generative()
        n_new = _check_int("max_new_tokens", max_new_tokens, lo=0)
        temperature = float(temperature)
        if not temperature >= 0 or not math.isfinite(temperature):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
        if top_k is not None:
            top_k = _check_int("top_k", top_k)
        ids = np.asarray(prompt_ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"prompt_ids must be integers, got dtype {ids.dtype}")
        squeeze = ids.ndim == 1
        if squeeze:
            ids = ids[None]
        if ids.ndim != 2:
            raise ValueError(f"prompt_ids must be (B, T0) or (T0,), got shape {np.shape(prompt_ids)}")
        B, T0 = ids.shape
        if T0 < 1:
            raise ValueError("prompt_ids must hold at least one token per sequence")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        out = np.empty((B, T0 + n_new), dtype=np.int64)
        out[:, :T0] = ids
        if n_new == 0:
            return out[0] if squeeze else out
        probs_out = isinstance(self.modules[-1], Softmax)
        x = ids if self.batch_first else ids.T
        y, state = self._run(x, [None] * len(self.recurrent_layers), _Ctx(time_axis=1 if self.batch_first else 0))
        logits = y[:, -1] if self.batch_first else y[-1]
        V = self.modules[0].num_embeddings
        if logits.ndim != 2 or logits.shape[-1] != V:
            raise ValueError(f"generate: the model gives {logits.shape[-1]} values per step, but its "
                             f"Embedding reads {V} token ids: the output must score every token")
        for t in range(n_new):
            if probs_out:
                with np.errstate(divide="ignore"):
                    logits = np.log(logits)
            # -inf is a token of probability 0; NaN, +inf or no finite score leave softmax
            # undefined (where argmax or sampling would pick an arbitrary token): each makes the
            # row's max non-finite, so one reduction tells
            bad = np.flatnonzero(~np.isfinite(logits.max(axis=-1)))
            if bad.size:
                raise ValueError(f"generate: the scores of sequence {bad[0]} for new token {t} hold NaN "
                                 "or +inf, or no finite value (non-finite weights or inputs?)")
            tok = _next_token(logits, temperature, top_k, rng)
            out[:, T0 + t] = tok
            if t + 1 < n_new:
                logits, state = self._run(tok, state, _Ctx(time_axis=None, step=True))
        return out[0] if squeeze else out

    # -- forecasting --------------------------------------------------------------------------
    def forecast(self, series, horizon: int) -> np.ndarray:
        """Autoregressive forecast with a sequence-to-one regression model.

        The model (recurrent stack -> ... -> Select(-1) -> Linear, output size = input size F)
        reads the whole series once, predicts the next value, then each further step feeds the
        prediction back as the next input with the carried state.

        Parameters
        ----------
        series : array_like, (B, T, F), (T, F) or (T,)
            History, batch-major whatever the model's layout ((T,) means F = 1).
        horizon : int
            Steps to predict (>= 1).

        Returns
        -------
        ndarray, (B, horizon, F), (horizon, F) or (horizon,) matching the input's form.
        """
        horizon = _check_int("horizon", horizon)
        if self.modules and isinstance(self.modules[0], Embedding):
            raise ValueError("forecast needs a regression model (no Embedding); use generate for token models")
        for m in self.modules:
            if isinstance(m, RNNBase) and m.bidirectional:
                raise ValueError("forecast cannot run a bidirectional layer step by step")
        s = _as_float(series, "series")
        form = s.ndim
        if form == 1:
            s = s[None, :, None]
        elif form == 2:
            s = s[None]
        elif form != 3:
            raise ValueError(f"series must be (B, T, F), (T, F) or (T,), got shape {s.shape}")
        B, T, F = s.shape
        if T < 1:
            raise ValueError("series must hold at least one step")
        x = s if self.batch_first else np.ascontiguousarray(s.transpose(1, 0, 2))
        y, state = self._run(x, [None] * len(self.recurrent_layers),
                             _Ctx(time_axis=1 if self.batch_first else 0))
        if y.ndim == 3:  # no Select: per-step outputs, keep the last
            y = y[:, -1] if self.batch_first else y[-1]
        if y.shape != (B, F):
            raise ValueError(f"forecast needs the model to map {F} features to {F} (one prediction per "
                             f"sequence); it gave shape {y.shape}")
        preds = np.empty((B, horizon, F), dtype=np.float32)
        preds[:, 0] = y
        for t in range(1, horizon):
            y, state = self._run(y, state, _Ctx(time_axis=None, step=True))
            preds[:, t] = y
        if form == 1:
            return preds[0, :, 0]
        if form == 2:
            return preds[0]
        return preds


def _next_token(logits, temperature, top_k, rng):
    """Greedy (temperature 0) or sampled next tokens for logits (B, V)."""
    logits = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return np.argmax(logits, axis=-1)
    # shifted before the division: a tiny temperature sends the others to -inf, not inf - inf
    with np.errstate(over="ignore"):
        z = (logits - logits.max(axis=-1, keepdims=True)) / temperature
    V = z.shape[-1]
    if top_k is not None and top_k < V:
        # exactly k candidates, as torch.topk keeps (which of several tied at the k-th score:
        # unspecified, as there)
        keep = np.argpartition(-z, top_k - 1, axis=-1, kind="introselect")[:, :top_k]
        masked = np.full_like(z, -np.inf)
        np.put_along_axis(masked, keep, np.take_along_axis(z, keep, axis=-1), axis=-1)
        z = masked
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    cdf = np.cumsum(p, axis=-1)
    u = rng.random(z.shape[0]) * cdf[:, -1]
    tok = (cdf <= u[:, None]).sum(axis=-1)
    return np.minimum(tok, V - 1)


# --------------------------------------------------------------------------------------------
# building from configurations
# --------------------------------------------------------------------------------------------
def _build_module(cfg, state_dict=None):
    """A stateless module, a recurrent layer or a Tree-LSTM from its config (+ parameters)."""
    if not isinstance(cfg, dict):
        raise ValueError(f"module description must be a JSON object, got {cfg!r}")
    cfg = dict(cfg)
    kind = cfg.pop("type", None)
    if kind == "RNNLayer":
        return layer_from_config(cfg["config"], state_dict)
    if kind in ("ChildSumTreeLSTM", "BinaryTreeLSTM"):
        from .tree import tree_from_config
        return tree_from_config(dict(cfg, type=kind), state_dict)
    if kind == "Sequential":
        descs = cfg.get("modules", [])
        if not isinstance(descs, list):
            raise ValueError("Sequential description: 'modules' must be a list")
        if state_dict is None:
            mods = [_build_module(c) for c in descs]
        else:
            parts = {i: {} for i in range(len(descs))}
            for key, v in state_dict.items():
                head, dot, rest = str(key).partition(".")
                if not (dot and head.isdigit() and int(head) in parts):
                    raise ValueError(f"unexpected tensor {key!r} (not '<module index>.<name>')")
                parts[int(head)][rest] = v
            mods = []
            for i, c in enumerate(descs):
                try:
                    mods.append(_build_module(c, parts[i]))
                except (ValueError, TypeError) as exc:
                    raise type(exc)(f"module {i}: {exc}") from None
        return Sequential(*mods, batch_first=cfg.get("batch_first"))
    cls = _STATELESS.get(kind)
    if cls is None:
        raise ValueError(f"unknown module type {kind!r}")
    if cls in (Embedding, Linear):
        m = cls(**cfg, seed=_NO_INIT) if state_dict is not None else cls(**cfg)
    else:
        m = cls(**cfg)
    if state_dict is not None:
        m.load_state_dict(state_dict)
    return m


# --------------------------------------------------------------------------------------------
# torch conversion
# --------------------------------------------------------------------------------------------
def from_torch_module(module):
    """Convert a torch module to fastrnn.

    Supported: ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (via :func:`fastrnn.convert.from_torch`),
    ``nn.Embedding``, ``nn.Linear``, ``nn.Tanh``/``ReLU``/``Sigmoid``/``Softmax``/``LogSoftmax``,
    ``nn.Identity`` and dropout layers (identity at inference), and ``nn.Sequential`` /
    ``nn.ModuleList`` of those (nested ones are flattened) -> :class:`Sequential`.
    A module with Tree-LSTM parameters (``ioux``, ``iouh``, ``fx``, ``fh`` Linear children) converts
    to ChildSumTreeLSTM or BinaryTreeLSTM by their shapes.
    """
    import torch.nn as nn

    from .convert import from_torch

    if isinstance(module, (Module, RNNBase, Sequential)):
        return module
    if isinstance(module, nn.RNNBase):
        return from_torch(module)
    if isinstance(module, (nn.Sequential, nn.ModuleList)):
        flat = []

        def walk(m):
            if isinstance(m, (nn.Sequential, nn.ModuleList)):
                for c in m:
                    walk(c)
            else:
                flat.append(from_torch_module(m))

        walk(module)
        return Sequential(*flat)
    if isinstance(module, nn.Embedding):
        if module.max_norm is not None:
            raise ValueError("nn.Embedding(max_norm=...) renormalises rows at lookup; not supported")
        emb = Embedding(module.num_embeddings, module.embedding_dim, padding_idx=module.padding_idx,
                        seed=_NO_INIT)
        return emb.load_state_dict({"weight": module.weight})
    if isinstance(module, nn.Linear):
        lin = Linear(module.in_features, module.out_features, bias=module.bias is not None, seed=_NO_INIT)
        return lin.load_state_dict(dict(module.state_dict()))
    simple = {nn.Tanh: Tanh, nn.ReLU: ReLU, nn.Sigmoid: Sigmoid, nn.Identity: Identity}
    # every dropout is the identity at inference
    simple.update({getattr(nn, d): Identity for d in ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d",
                                                       "AlphaDropout", "FeatureAlphaDropout") if hasattr(nn, d)})
    for tcls, fcls in simple.items():
        if type(module) is tcls:
            return fcls()
    if isinstance(module, (nn.Softmax, nn.LogSoftmax)):
        if module.dim is None:
            raise ValueError(f"nn.{type(module).__name__}(dim=None) depends on the input rank; give dim explicitly")
        return (Softmax if isinstance(module, nn.Softmax) else LogSoftmax)(module.dim)
    names = {n for n, _ in module.named_children()}
    if {"ioux", "iouh", "fx", "fh"} <= names:
        from .tree import tree_from_config
        extra = sorted(n for n, c in module.named_children()
                       if n not in ("ioux", "iouh", "fx", "fh") and any(True for _ in c.parameters()))
        if extra:
            raise TypeError(f"{type(module).__name__} holds a Tree-LSTM (ioux/iouh/fx/fh) and other "
                            f"modules with parameters ({', '.join(extra)}), which would be dropped: "
                            "convert the Tree-LSTM and the others separately")
        sd = {k: v for k, v in module.state_dict().items()
              if k.split(".")[0] in ("ioux", "iouh", "fx", "fh")}
        I, H = module.fx.in_features, module.fx.out_features
        kind = "BinaryTreeLSTM" if module.iouh.in_features == 2 * H else "ChildSumTreeLSTM"
        return tree_from_config({"type": kind, "input_size": I, "hidden_size": H}, sd)
    raise TypeError(f"cannot convert {type(module).__name__}: supported are nn.LSTM/GRU/RNN, nn.Embedding, "
                    "nn.Linear, nn.Tanh/ReLU/Sigmoid/Softmax/LogSoftmax, nn.Identity, nn.Dropout* and "
                    "nn.Sequential/nn.ModuleList of these (and Tree-LSTMs with ioux/iouh/fx/fh)")


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------
def _module_config(model):
    if isinstance(model, RNNBase):
        return {"type": "RNNLayer", "config": model.config()}
    return model.config()


def save_model(model, path, metadata: Optional[Dict[str, str]] = None):
    """Write a Sequential (or an Embedding, Linear or Tree-LSTM) to ONE .safetensors file.

    Tensors: the model's ``state_dict()`` (a Sequential's as ``"<index>.<name>"``), float32.
    Metadata: ``"fastrnn_model"`` = the architecture as JSON (``model.config()``),
    ``"fastrnn_format"`` = "1", ``"format"`` = "pt", plus ``metadata`` (str -> str).
    """
    from ._safetensors import write_safetensors

    if isinstance(model, RNNBase):
        raise TypeError("save_model writes whole models; save a single recurrent layer with fastrnn.save")
    if not hasattr(model, "config") or not hasattr(model, "state_dict"):
        raise TypeError(f"cannot save a {type(model).__name__}")
    arch = _module_config(model)
    meta = {"format": "pt", MODEL_FORMAT_KEY: MODEL_FORMAT_VERSION,
            MODEL_METADATA_KEY: json.dumps(arch, sort_keys=True)}
    if metadata:
        for k, v in metadata.items():
            if k in meta:
                raise ValueError(f"metadata key {k!r} is reserved")
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError("metadata must map str to str")
            meta[k] = v
    return write_safetensors(os.fspath(path), model.state_dict(), meta)


def is_model_file(path) -> bool:
    """Whether ``path`` is a .safetensors file written by :func:`save_model`."""
    from ._safetensors import read_safetensors_header

    try:
        _, meta, _ = read_safetensors_header(path)
    except (OSError, ValueError):
        return False
    return MODEL_METADATA_KEY in meta


def load_model(path, *, return_metadata: bool = False):
    """Read a model written by :func:`save_model` (numpy only).

    Returns the model (with ``return_metadata=True``: ``(model, metadata)``).
    """
    from ._safetensors import read_safetensors

    path = os.fspath(path)
    tensors, meta = read_safetensors(path)
    if MODEL_METADATA_KEY not in meta:
        raise ValueError(f"{path}: not a fastrnn model file (no {MODEL_METADATA_KEY!r} metadata); "
                         "single recurrent layers load with fastrnn.load")
    version = meta.get(MODEL_FORMAT_KEY, MODEL_FORMAT_VERSION)
    if version != MODEL_FORMAT_VERSION:
        raise ValueError(f"{path}: written in fastrnn model format {version!r}; this version reads "
                         f"{MODEL_FORMAT_VERSION!r} (upgrade fastrnn)")
    try:
        arch = json.loads(meta[MODEL_METADATA_KEY])
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{path}: {MODEL_METADATA_KEY} metadata is not valid JSON ({exc})") from None
    try:
        model = _build_module(arch, tensors)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    return (model, meta) if return_metadata else model
