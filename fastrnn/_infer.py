"""Configuration inference for PyTorch-style RNN state dicts (shared by the file loaders).

Pure numpy; never imports torch.  Parameter names follow ``docs/API_CONTRACT.md``::

    weight_ih_l{k}{sfx} (G*H, in_k)   weight_hh_l{k}{sfx} (G*H, H or P)
    bias_ih_l{k}{sfx}   (G*H,)        bias_hh_l{k}{sfx}   (G*H,)
    weight_hr_l{k}{sfx} (P, H)        weight_ph_l{k}{sfx} (3*H,)

with ``sfx`` in ``("", "_reverse")`` and G = 4 (LSTM), 3 (GRU) or 1 (RNN).
"""

import json
import os
import re

import numpy as np

__all__ = ["infer_config", "select_rnn_state_dict", "GATES", "build_layer", "layer_from_torch_state_dict"]

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_GATE_TO_CELL = {g: c for c, g in GATES.items()}

_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr", "weight_ph")
_PARAM_RE = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr|weight_ph)_l(\d+)(_reverse)?$")
# Same, but allowing any leading prefix (e.g. "encoder.rnn.").
_PREFIXED_RE = re.compile(r"^(.*?)(?:weight_ih|weight_hh|bias_ih|bias_hh|weight_hr|weight_ph)_l\d+(?:_reverse)?$")


def require_regular_file(path):
    """Refuse a device or a pipe (/dev/zero would be read until memory runs out); a missing
    path or a directory raise what open() raises."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path) and not os.path.isfile(path):
        raise ValueError(f"{path}: not a regular file")
    return path


def _normalize_cell(cell):
    if cell is None:
        return None
    name = str(getattr(cell, "__name__", cell)).upper()
    if name not in GATES:
        raise ValueError(f"cell must be one of 'LSTM', 'GRU', 'RNN' (got {cell!r})")
    return name


def select_rnn_state_dict(state_dict, prefix=None, *, source=None):
    """Extract one RNN's parameters from a (possibly bigger) state dict, with the prefix stripped.

    Keys that do not look like RNN parameters are ignored.  If all RNN keys share one prefix
    (e.g. ``"rnn."``) it is stripped; if several RNNs are present, ``prefix=`` must name one.
    """
    where = f"{source}: " if source else ""
    groups = {}
    for key in state_dict:
        if not isinstance(key, str):
            continue
        m = _PREFIXED_RE.match(key)
        if m:
            groups.setdefault(m.group(1), []).append(key)
    if prefix is not None:
        prefix = str(prefix)
        cands = [prefix] if prefix in groups else []
        if not cands and prefix and not prefix.endswith(".") and prefix + "." in groups:
            cands = [prefix + "."]
        if not cands:
            listed = ", ".join(repr(p) for p in sorted(groups)) or "none"
            raise ValueError(f"{where}no RNN parameters with prefix {prefix!r} (RNN prefixes found: {listed})")
        prefix = cands[0]
    else:
        if not groups:
            some = ", ".join(repr(k) for k in list(state_dict)[:8])
            raise ValueError(f"{where}no RNN parameters (weight_ih_l0, weight_hh_l0, ...) found; keys: {some}")
        if len(groups) > 1:
            listed = ", ".join(repr(p) for p in sorted(groups))
            raise ValueError(f"{where}several RNNs found (prefixes {listed}); pass prefix= to choose one")
        prefix = next(iter(groups))
    return {k[len(prefix):]: state_dict[k] for k in groups[prefix]}


def _shape(v):
    shp = getattr(v, "shape", None)
    if shp is None:
        shp = np.shape(v)
    return tuple(int(s) for s in shp)


def infer_config(state_dict, cell=None, nonlinearity="tanh"):
    """Infer a ``layer_from_config`` configuration from torch RNN parameter names and shapes.

    ``cell`` ("LSTM" / "GRU" / "RNN") settles the cell type when it cannot be inferred (and is
    checked against the shapes otherwise).  An RNN's nonlinearity (tanh / relu) cannot be inferred
    from the weights: ``nonlinearity=`` gives it (default "tanh").  ``batch_first`` is False.
    """
    cell = _normalize_cell(cell)
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu' (got {nonlinearity!r})")
    params = {}
    unexpected = []
    for key, val in state_dict.items():
        m = _PARAM_RE.match(key) if isinstance(key, str) else None
        if not m:
            unexpected.append(key)
            continue
        params[(m.group(1), int(m.group(2)), 1 if m.group(3) else 0)] = _shape(val)
    if unexpected:
        raise ValueError(f"unexpected keys in RNN state dict: {unexpected[:10]!r}")
    if not params:
        raise ValueError("empty RNN state dict")

    num_layers = max(k for _, k, _ in params) + 1
    bidirectional = any(d for _, _, d in params)
    D = 2 if bidirectional else 1
    has = {kind: any(p[0] == kind for p in params) for kind in _KINDS}
    bias = has["bias_ih"] or has["bias_hh"]
    for k in range(num_layers):
        for d in range(D):
            sfx = "_reverse" if d else ""
            need = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if bias else [])
            need += [kind for kind in ("weight_hr", "weight_ph") if has[kind]]
            for kind in need:
                if (kind, k, d) not in params:
                    raise ValueError(f"missing parameter {kind}_l{k}{sfx} in RNN state dict")

    w_hh = params[("weight_hh", 0, 0)]
    w_ih = params[("weight_ih", 0, 0)]
    if len(w_hh) != 2 or len(w_ih) != 2:
        raise ValueError(f"weight_ih_l0 / weight_hh_l0 must be 2-D (got {w_ih} and {w_hh})")
    rows = w_hh[0]
    if has["weight_hr"]:
        w_hr = params[("weight_hr", 0, 0)]
        if len(w_hr) != 2:
            raise ValueError(f"weight_hr_l0 must be 2-D (got {w_hr})")
        proj_size, hidden_size = w_hr
        if proj_size <= 0 or proj_size >= hidden_size:
            raise ValueError(f"weight_hr_l0 shape {w_hr}: proj_size must be in (0, hidden_size)")
        if w_hh[1] != proj_size:
            raise ValueError(f"weight_hh_l0 has {w_hh[1]} columns but weight_hr_l0 gives proj_size {proj_size}")
    else:
        proj_size, hidden_size = 0, w_hh[1]
    if hidden_size <= 0:
        raise ValueError(f"cannot infer hidden size from weight_hh_l0 of shape {w_hh}")

    if cell is None:
        if rows % hidden_size or rows // hidden_size not in _GATE_TO_CELL:
            raise ValueError(
                f"cannot infer the cell type: weight_hh_l0 has {rows} rows for hidden size {hidden_size} "
                f"(expected 4x LSTM, 3x GRU or 1x RNN); pass cell='LSTM', 'GRU' or 'RNN'")
        cell = _GATE_TO_CELL[rows // hidden_size]
    if cell != "LSTM" and (has["weight_hr"] or has["weight_ph"]):
        raise ValueError(f"weight_hr/weight_ph parameters are only valid for LSTM (cell={cell})")
    G = GATES[cell]
    if rows != G * hidden_size:
        raise ValueError(f"weight_hh_l0 has {rows} rows, expected {G}*{hidden_size} for cell={cell}")

    input_size = w_ih[1]
    h_out = proj_size or hidden_size
    GH = G * hidden_size
    for (kind, k, d), shp in params.items():
        name = f"{kind}_l{k}{'_reverse' if d else ''}"
        in_k = input_size if k == 0 else D * h_out
        expected = {"weight_ih": (GH, in_k), "weight_hh": (GH, h_out), "bias_ih": (GH,), "bias_hh": (GH,),
                    "weight_hr": (proj_size, hidden_size), "weight_ph": (3 * hidden_size,)}[kind]
        if shp != expected:
            raise ValueError(f"{name} has shape {shp}, expected {expected} "
                             f"(inferred cell={cell}, hidden_size={hidden_size}, proj_size={proj_size})")

    cfg = {"cell": cell, "input_size": input_size, "hidden_size": hidden_size, "num_layers": num_layers}
    if cell == "RNN":
        cfg["nonlinearity"] = nonlinearity
    cfg.update(bias=bool(bias), batch_first=False, bidirectional=bool(bidirectional))
    if cell == "LSTM":
        cfg.update(proj_size=int(proj_size), peephole=bool(has["weight_ph"]))
    return cfg


# Fields of a layer configuration that are fully determined by the parameter shapes.
_STRUCTURAL = ("cell", "input_size", "hidden_size", "num_layers", "bias", "bidirectional", "proj_size", "peephole")


def check_config_against(config, inferred, *, source=None):
    """Raise ValueError if a stored configuration contradicts the parameter shapes."""
    where = f"{source}: " if source else ""
    if not isinstance(config, dict):
        raise ValueError(f"{where}layer configuration must be a JSON object")
    defaults = {"num_layers": 1, "bias": True, "bidirectional": False, "proj_size": 0, "peephole": False}
    for key in _STRUCTURAL:
        if key not in inferred and key not in config:
            continue
        want = inferred.get(key, defaults.get(key))
        got = config.get(key, defaults.get(key))
        if key == "cell" and isinstance(got, str):
            got = got.upper()
        if got != want or type(got) is not type(want):
            raise ValueError(f"{where}stored configuration says {key}={got!r} but the tensors imply {want!r}")


def build_layer(config, state_dict, *, source):
    """layer_from_config + load_state_dict, with every failure reported as ValueError."""
    import fastrnn  # late import: this module is imported by fastrnn/__init__

    try:
        json.dumps(config)
        # Validates the configuration without paying for a random init.
        fastrnn.rnn.layer_from_config(dict(config), state_dict={})
    except ValueError as exc:
        if "missing key" not in str(exc):
            raise ValueError(f"{source}: invalid layer configuration {config!r}: {exc}") from exc
    except Exception as exc:  # engine may raise TypeError/KeyError for bad configurations
        raise ValueError(f"{source}: invalid layer configuration {config!r}: {exc}") from exc
    try:
        return fastrnn.rnn.layer_from_config(dict(config), state_dict=state_dict)
    except Exception as exc:
        raise ValueError(f"{source}: parameters do not fit the layer configuration: {exc}") from exc


def layer_from_torch_state_dict(tensors, *, source, cell=None, nonlinearity="tanh", prefix=None,
                                batch_first=None):
    """A layer from a plain torch RNN state dict (a bigger model's, with ``prefix``): the
    configuration inferred from names and shapes; every failure a ValueError naming ``source``."""
    sd = select_rnn_state_dict(tensors, prefix, source=source)
    try:
        config = infer_config(sd, cell=cell, nonlinearity=nonlinearity)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    if batch_first is not None:
        config["batch_first"] = bool(batch_first)
    return build_layer(config, to_float32_state_dict(sd, source=source), source=source)


def to_float32_state_dict(tensors, *, source):
    """Convert floating tensors to float32 (F16/BF16 exactly, F64 rounded); reject others."""
    out = {}
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        if arr.dtype.kind != "f":
            raise ValueError(f"{source}: tensor {name!r} has dtype {arr.dtype}, expected a floating-point type")
        out[name] = np.array(arr, dtype=np.float32, order="C")
    return out
