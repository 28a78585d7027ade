"""fastrnn: fast CPU inference for LSTM, GRU and RNN models.

Layers follow torch.nn.LSTM / GRU / RNN semantics; the whole forward pass runs
in C (one GEMM and one fused kernel per step) with the GIL released.
Runtime dependencies: numpy and scipy.
"""
from ._core import get_isa, isa_supported, set_isa
from .rnn import GRU, LSTM, RNN, RNNBase, layer_from_config
from .convert import from_torch

__version__ = "0.1.0"

__all__ = ["LSTM", "GRU", "RNN", "RNNBase", "layer_from_config", "from_torch", "save", "load",
           "load_torch", "from_keras", "from_onnx", "get_isa", "set_isa", "isa_supported"]


def save(layer, path):
    """Write ``layer`` to a ``.safetensors`` file (configuration in its metadata)."""
    from ._safetensors import save as _save
    return _save(layer, path)


def load(path):
    """Read a layer saved by :func:`save` (or a safetensors torch RNN state dict)."""
    from ._safetensors import load as _load
    return _load(path)


def load_torch(path, cell=None, nonlinearity="tanh", **kwargs):
    """Read a ``torch.save(module.state_dict())`` file without torch."""
    from ._torch_pt import load_torch as _load_torch
    return _load_torch(path, cell=cell, nonlinearity=nonlinearity, **kwargs)


def from_keras(obj, config=None):
    """Convert a Keras recurrent layer, a ``.keras`` file or ``.weights.h5`` + config."""
    from ._keras import from_keras as _from_keras
    return _from_keras(obj, config=config)


def from_onnx(path_or_model, name=None):
    """The LSTM/GRU/RNN node of an ONNX graph, runnable with ONNX's shapes."""
    from ._onnx import from_onnx as _from_onnx
    return _from_onnx(path_or_model, name=name)
