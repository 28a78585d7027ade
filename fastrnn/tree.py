"""Tree-LSTMs (Tai, Socher & Manning 2015) over forests: Child-Sum and binary (N-ary, N = 2).

A forest is given as node features ``x`` (num_nodes, input_size) and a ``parent`` vector
(num_nodes,), -1 for roots; nodes may come in any order and any number of trees may share one
call. ``h, c = tree(x, parent)`` returns the hidden and cell state of every node, in node order.

How it computes (csrc/tree.c, GIL released): node depths by parent chasing (cycles and
out-of-range parents are errors), one GEMM for the input projection of all nodes, then the levels
deepest first; every level of the whole forest is one batch: the child aggregation (Child-Sum:
the sum of the children's h; binary: ``[h_left; h_right]``), one GEMM over the level's inner
nodes (Child-Sum: plus one GEMM for the per-child forget gates over the level below) and the
fused gate math. No per-node work happens in Python.

Parameters (``state_dict()`` names; PyTorch ``nn.Linear`` layout ``(out, in)``; gate blocks in
the order i, o, u: input gate, output gate, candidate):

ChildSumTreeLSTM (the names of the widely used PyTorch implementation,
treelstm.pytorch's ``ChildSumTreeLSTM``)::

    ioux.weight (3H, I)  ioux.bias (3H)    iouh.weight (3H, H)  iouh.bias (3H)
    fx.weight   (H, I)   fx.bias   (H)     fh.weight   (H, H)   fh.bias   (H)

    h~   = sum_k h_k
    i, o, u = sigmoid, sigmoid, tanh of  ioux(x) + iouh(h~)
    f_k  = sigmoid(fx(x) + fh(h_k))                 (one forget gate per child)
    c    = i * u + sum_k f_k * c_k ;   h = o * tanh(c)

A leaf has no children (h~ = 0, so ``iouh.bias`` still counts, exactly like the reference
implementation, which feeds a leaf one zero child).

BinaryTreeLSTM (N-ary Tree-LSTM with N = 2)::

    ioux.weight (3H, I)  ioux.bias (3H)    iouh.weight (3H, 2H) iouh.bias (3H)
    fx.weight   (H, I)   fx.bias   (H)     fh.weight   (2H, 2H) fh.bias   (2H)

    hc   = [h_left; h_right]                        (2H; a missing child is zeros)
    i, o, u = sigmoid, sigmoid, tanh of  ioux(x) + iouh(hc)
    [f_left; f_right] = sigmoid([fx(x); fx(x)] + fh(hc))
    c    = i * u + f_left * c_left + f_right * c_right ;   h = o * tanh(c)

i.e. ``iouh.weight[:, :H]`` is U^(1) (left child) and ``[:, H:]`` U^(2) (right child) of the
paper's equations; ``fh.weight`` rows ``[:H]`` give the left child's forget gate, rows ``[H:]``
the right one's, each seeing both children (the paper's U^(f)_{kl}). Child order: the children
of a node, sorted by node index, are left then right; a node with one child has a left child
only; more than two children is a ValueError.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np

from . import _tree
from .rnn import InferenceModule, load_params, non_strict

__all__ = ["TreeLSTMBase", "ChildSumTreeLSTM", "BinaryTreeLSTM", "tree_depths"]


def tree_depths(parent) -> np.ndarray:
    """Depth of every node of a forest (roots 0), computed in C by parent chasing.

    Raises ValueError for parent indices outside -1..N-1 and for cycles.
    """
    return _tree.depths(parent)


class TreeLSTMBase(InferenceModule):
    """Common machinery of :class:`ChildSumTreeLSTM` and :class:`BinaryTreeLSTM`."""

    _kind = ""
    _arity = 1  # children seen at once by iouh / fh

    def __init__(self, input_size: int, hidden_size: int, seed: Optional[int] = None):
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {type(v).__name__}")
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
            if v > 2**26:
                raise ValueError(f"{name}={v} is too large")
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        if seed is not _NO_INIT:
            self._init_params(seed)

    # -- parameters ---------------------------------------------------------
    def _param_shapes(self) -> Dict[str, tuple]:
        H, I, A = self.hidden_size, self.input_size, self._arity
        return {"ioux.weight": (3 * H, I), "ioux.bias": (3 * H,),
                "iouh.weight": (3 * H, A * H), "iouh.bias": (3 * H,),
                "fx.weight": (H, I), "fx.bias": (H,),
                "fh.weight": (A * H, A * H), "fh.bias": (A * H,)}

    def _init_params(self, seed):
        """nn.Linear's default init: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
        rng = np.random.default_rng(seed)
        shapes = self._param_shapes()
        params = {}
        for name, shape in shapes.items():
            fan_in = shapes[name.rsplit(".", 1)[0] + ".weight"][1]
            bound = 1.0 / math.sqrt(fan_in)
            params[name] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
        self._set_params(params)

    def _set_params(self, params):
        for a in params.values():
            a.flags.writeable = False
        H = self.hidden_size
        w_x = np.ascontiguousarray(np.concatenate([params["ioux.weight"], params["fx.weight"]]))
        u = np.ascontiguousarray(np.concatenate([params["iouh.weight"], params["fh.weight"]]))
        b_iou = params["ioux.bias"] + params["iouh.bias"]
        if self._kind == "childsum":
            b_x = np.concatenate([b_iou, params["fx.bias"] + params["fh.bias"]])
            b_f2 = None
        else:
            b_x = np.concatenate([b_iou, params["fx.bias"]])
            b_f2 = np.ascontiguousarray(params["fh.bias"], dtype=np.float32)
        b_x = np.ascontiguousarray(b_x, dtype=np.float32)
        assert b_x.shape == (4 * H,)
        net = _tree.TreeNet(self._kind, self.input_size, self.hidden_size, w_x, b_x, u, b_f2)
        self.__dict__.update(_params=params, _net=net)   # one store, as in RNNBase._set_params

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Parameters (see the module docstring for names and shapes), float32 copies."""
        return {k: v.copy() for k, v in self._params.items()}

    def load_state_dict(self, state_dict, strict: bool = True):
        """Load parameters (numpy arrays, torch tensors, anything ``np.asarray`` takes).

        Strict: a missing, unexpected or misshapen entry is a ValueError naming it;
        strict=False as in torch (see :meth:`fastrnn.LSTM.load_state_dict`).
        """
        if not strict:
            state_dict = non_strict(self.state_dict(), state_dict)
        self._set_params(load_params(type(self).__name__, self._param_shapes(), state_dict))
        return self

    def parameters_count(self) -> int:
        return int(sum(a.size for a in self._params.values()))

    def config(self):
        """JSON-serialisable description (``{"type": ..., "input_size", "hidden_size"}``)."""
        return {"type": type(self).__name__, "input_size": self.input_size, "hidden_size": self.hidden_size}

    def __reduce__(self):
        return (_rebuild, (type(self).__name__, self.input_size, self.hidden_size, self._params))

    def __repr__(self):
        return f"{type(self).__name__}({self.input_size}, {self.hidden_size})"

    # -- call -----------------------------------------------------------------
    def __call__(self, x, parent):
        """Run the Tree-LSTM over a forest.

        Parameters
        ----------
        x : array_like, (num_nodes, input_size)
            Node features (float).
        parent : array_like of int, (num_nodes,)
            Parent index of every node, -1 for a root. Nodes may be in any order; any number of
            trees may be given at once.

        Returns
        -------
        h, c : ndarray, (num_nodes, hidden_size)
            Hidden and cell state of every node, in node order (float32). A root's h is the
            representation of its tree.

        Raises
        ------
        ValueError
            Bad shapes, a parent index outside -1..num_nodes-1, a cycle in the parent links,
            or (BinaryTreeLSTM) a node with more than two children.
        TypeError
            Non-float ``x`` or non-integer ``parent``.
        """
        return self._net.forward(x, parent)

    forward = __call__


class ChildSumTreeLSTM(TreeLSTMBase):
    """Child-Sum Tree-LSTM (any number of unordered children per node).

    ``ChildSumTreeLSTM(input_size, hidden_size, seed=None)``; parameters as in the widely used
    PyTorch implementation (``ioux``, ``iouh``, ``fx``, ``fh`` Linear layers, gates i, o, u),
    so ``load_state_dict(torch_module.state_dict())`` takes its weights. ``h, c = tree(x,
    parent)``; see :mod:`fastrnn.tree` for the equations.
    """

    _kind = "childsum"
    _arity = 1


class BinaryTreeLSTM(TreeLSTMBase):
    """Binary (N-ary, N = 2) Tree-LSTM: ordered children, left = the smaller node index.

    ``BinaryTreeLSTM(input_size, hidden_size, seed=None)``; parameters ``ioux`` (3H, I),
    ``iouh`` (3H, 2H) acting on ``[h_left; h_right]``, ``fx`` (H, I), ``fh`` (2H, 2H) giving the
    left and right forget gates (see :mod:`fastrnn.tree`). A node may have 0, 1 (left) or 2
    children.
    """

    _kind = "binary"
    _arity = 2


_NO_INIT = object()
_TREE_CLASSES = {"ChildSumTreeLSTM": ChildSumTreeLSTM, "BinaryTreeLSTM": BinaryTreeLSTM}


def _rebuild(name, input_size, hidden_size, params):
    return _TREE_CLASSES[name](input_size, hidden_size, seed=_NO_INIT).load_state_dict(params)


def tree_from_config(cfg, state_dict=None):
    """Build a Tree-LSTM from :meth:`TreeLSTMBase.config` output (and load ``state_dict``)."""
    cfg = dict(cfg)
    name = cfg.pop("type", None)
    if name not in _TREE_CLASSES:
        raise ValueError(f"unknown Tree-LSTM type {name!r}; expected one of {sorted(_TREE_CLASSES)}")
    if state_dict is None:
        return _TREE_CLASSES[name](**cfg)
    return _TREE_CLASSES[name](seed=_NO_INIT, **cfg).load_state_dict(state_dict)
