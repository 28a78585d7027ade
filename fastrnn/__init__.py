"""fastrnn: fast CPU inference for LSTM, GRU and RNN models.

Layers follow torch.nn.LSTM / GRU / RNN semantics; the whole forward pass runs
in C (one GEMM and one fused kernel per step) with the GIL released.
Runtime dependencies: numpy and scipy.
"""
import os as _os

from ._core import get_isa, get_num_threads, isa_supported, release_memory, set_isa, set_num_threads
from .rnn import GRU, LSTM, RNN, RNNBase, layer_from_config
from .models import (Embedding, Identity, Linear, LogSoftmax, ReLU, Select, Sequential, Sigmoid,
                     Softmax, Tanh, load_model, save_model)
from .models import from_torch_module as from_torch
from .tree import BinaryTreeLSTM, ChildSumTreeLSTM, tree_depths

__version__ = "0.1.0"


def _default_threads():
    """CPUs this process may use (affinity and cgroup quota aware), or FASTRNN_NUM_THREADS."""
    env = _os.environ.get("FASTRNN_NUM_THREADS")
    if env:
        try:
            return max(1, int(env))   # set_num_threads clamps a huge one
        except ValueError:
            import warnings
            warnings.warn(f"FASTRNN_NUM_THREADS={env!r} is not an integer; using the CPUs available",
                          RuntimeWarning, stacklevel=4)
    try:
        n = len(_os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = _os.cpu_count() or 1
    try:  # cgroup v2 CPU quota
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def _apply_environment():
    """FASTRNN_NUM_THREADS / FASTRNN_PARALLEL / FASTRNN_PROJECTION / FASTRNN_ISA: a value that
    cannot be used is reported as a warning and the default kept (an environment variable must
    not stop import)."""
    import warnings

    from ._core import PARALLEL_MODES, PROJECTION_MODES, set_parallel, set_projection

    set_num_threads(_default_threads())
    for var, modes, setter in (("FASTRNN_PARALLEL", PARALLEL_MODES, set_parallel),
                               ("FASTRNN_PROJECTION", PROJECTION_MODES, set_projection)):
        mode = _os.environ.get(var, "").strip().lower()
        if mode:
            if mode in modes:
                setter(mode)
            else:
                warnings.warn(f"{var}={mode!r} is not one of {', '.join(modes)}; using auto",
                              RuntimeWarning, stacklevel=3)
    isa = _os.environ.get("FASTRNN_ISA", "")
    if isa and isa != get_isa():
        known = ("scalar", "avx2", "avx512")
        why = "this CPU lacks it" if isa in known else f"it is not one of {', '.join(known)}"
        warnings.warn(f"FASTRNN_ISA={isa!r} ignored ({why}); using {get_isa()}", RuntimeWarning, stacklevel=3)


_apply_environment()

__all__ = ["LSTM", "GRU", "RNN", "RNNBase", "layer_from_config", "from_torch", "save", "load",
           "Sequential", "Embedding", "Linear", "Tanh", "ReLU", "Sigmoid", "Softmax", "LogSoftmax",
           "Identity", "Select", "save_model", "load_model", "ChildSumTreeLSTM", "BinaryTreeLSTM",
           "tree_depths",
           "load_torch", "from_keras", "from_onnx", "get_isa", "set_isa", "isa_supported", "set_num_threads", "get_num_threads",
           "release_memory"]


def save(obj, path, metadata=None):
    """Write a layer or a whole model (:class:`Sequential`, Tree-LSTM, ...) to one
    ``.safetensors`` file, configuration in its metadata."""
    if not isinstance(obj, RNNBase):
        return save_model(obj, path, metadata=metadata)
    from ._safetensors import save as _save
    return _save(obj, path, metadata=metadata)


def load(path, **kwargs):
    """Read what :func:`save` wrote (or a safetensors torch RNN state dict;
    ``cell=``, ``nonlinearity=``, ``prefix=``, ``batch_first=`` steer the inference)."""
    from .models import is_model_file
    if is_model_file(path):
        return load_model(path)
    from ._safetensors import load as _load
    return _load(path, **kwargs)


def load_torch(path, cell=None, nonlinearity="tanh", **kwargs):
    """Read a ``torch.save(module.state_dict())`` file without torch."""
    from ._torch_pt import load_torch as _load_torch
    return _load_torch(path, cell=cell, nonlinearity=nonlinearity, **kwargs)


def from_keras(obj, config=None):
    """Convert a Keras recurrent layer or model, a ``.keras`` or legacy ``.h5`` model file, or
    ``.weights.h5`` + config (see :mod:`fastrnn._keras`)."""
    from ._keras import from_keras as _from_keras
    return _from_keras(obj, config=config)


def from_onnx(path_or_model, name=None):
    """The LSTM/GRU/RNN node of an ONNX graph, runnable with ONNX's shapes."""
    from ._onnx import from_onnx as _from_onnx
    return _from_onnx(path_or_model, name=name)
