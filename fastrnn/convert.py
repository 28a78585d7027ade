"""Conversion of in-memory framework objects (torch modules) to fastrnn layers.

torch is imported only inside the functions: fastrnn never needs it to run.
"""
from __future__ import annotations

from .rnn import GRU, LSTM, RNN

__all__ = ["from_torch"]


def _numpy_state(module):
    # the weights as the module computes with them: a parametrized one (weight_norm, say) is
    # not in state_dict() under its own name
    names = getattr(module, "_flat_weights_names", None) or list(module.state_dict())
    return {k: getattr(module, k).detach().cpu().float().numpy() for k in names}


def from_torch(module):
    """Convert a ``torch.nn.LSTM``, ``GRU`` or ``RNN`` to the fastrnn layer computing the same function.

    Parameters
    ----------
    module : torch.nn.Module
        The module to convert. Dropout is an training-time option and is ignored.

    Returns
    -------
    LSTM, GRU or RNN
    """
    import torch.nn as nn

    common = dict(input_size=module.input_size, hidden_size=module.hidden_size,
                  num_layers=module.num_layers, bias=module.bias, batch_first=module.batch_first,
                  bidirectional=module.bidirectional) if isinstance(module, nn.RNNBase) else None
    if isinstance(module, nn.LSTM):
        layer = LSTM(proj_size=getattr(module, "proj_size", 0), **common)
    elif isinstance(module, nn.GRU):
        layer = GRU(**common)
    elif isinstance(module, nn.RNN):
        layer = RNN(nonlinearity=module.nonlinearity, **common)
    else:
        raise TypeError(f"from_torch supports nn.LSTM, nn.GRU and nn.RNN, got {type(module).__name__}")
    return layer.load_state_dict(_numpy_state(module))
