"""The ``fastrnn`` command line.

Subcommands::

    fastrnn info FILE [--json]                     what a model file holds
    fastrnn convert IN OUT                         torch .pt / .keras / .h5 / .onnx -> .safetensors
    fastrnn run FILE --input x.npy --output y.npy  run a model on a .npy input
    fastrnn bench [FILE] [--against torch,...]     timing table (benchmarks/compare.py when present)
    fastrnn demo [...]                             the demo (fastrnn.demo)

Also ``python -m fastrnn``.  Errors are one line on stderr (``fastrnn: error: ...``) with exit
status 1 (2 for command-line usage errors); ``--debug`` (or ``FASTRNN_DEBUG=1``) adds the traceback.
Only numpy is needed for fastrnn's own files; reading other formats needs what their loaders need
(``onnx`` for .onnx, ``h5py`` for Keras files; torch files are read without torch).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import time
import traceback
import warnings
import zipfile

import numpy as np

__all__ = ["CLIError", "ProgressBar", "describe", "load_entries", "main"]

PROG = "fastrnn"
FORMATS = ("safetensors", "torch", "keras", "keras-weights", "keras-h5", "onnx")
_FORMAT_NAMES = {
    "fastrnn": "fastrnn .safetensors",
    "fastrnn-model": "fastrnn model .safetensors (fastrnn.save_model)",
    "safetensors": "safetensors (PyTorch state dict)",
    "torch": "PyTorch torch.save() state dict",
    "keras": "Keras 3 .keras archive",
    "keras-weights": "Keras 3 .weights.h5",
    "keras-h5": "Keras HDF5 model (legacy .h5)",
    "onnx": "ONNX model",
}


class CLIError(Exception):
    """An error meant for the user: printed as one line, no traceback."""


class _UsageError(CLIError):
    """Bad command line (exit status 2, like argparse)."""


# --------------------------------------------------------------------------------------------
# progress bar (stderr, no dependency)
# --------------------------------------------------------------------------------------------
class ProgressBar:
    """Minimal progress bar on stderr: ``bar.update(label)`` after each of ``total`` steps.

    Drawn only when the stream is a terminal (or ``enabled=True``); ``close()`` clears the line.
    Usable as a context manager.
    """

    def __init__(self, total, desc="", stream=None, enabled=None, width=24):
        self.total = max(int(total), 1)
        self.desc = desc
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"
        self.enabled = enabled
        self.width = width
        self.n = 0
        self.t0 = time.perf_counter()
        self._last_len = 0
        self._draw("")

    def _draw(self, label):
        if not self.enabled:
            return
        frac = min(self.n / self.total, 1.0)
        fill = int(round(frac * self.width))
        elapsed = time.perf_counter() - self.t0
        eta = ""
        if 0 < self.n < self.total:
            eta = f" eta {elapsed / self.n * (self.total - self.n):.0f}s"
        line = (f"{self.desc + ' ' if self.desc else ''}[{'#' * fill}{'.' * (self.width - fill)}] "
                f"{self.n}/{self.total} {elapsed:.0f}s{eta} {label}").rstrip()
        pad = max(self._last_len - len(line), 0)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._last_len = len(line)

    def update(self, label="", n=1):
        self.n += n
        self._draw(label)

    def set_label(self, label):
        self._draw(label)

    def close(self):
        if self.enabled and self._last_len:
            self.stream.write("\r" + " " * self._last_len + "\r")
            self.stream.flush()
            self._last_len = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# --------------------------------------------------------------------------------------------
# model files
# --------------------------------------------------------------------------------------------
class Entry:
    """One recurrent layer found in a file."""

    def __init__(self, name, obj, kind, dtype=None, extra=None):
        self.name = name          # layer / node / prefix name ("" if the file has just one)
        self.obj = obj            # fastrnn layer, OnnxRNN or KerasRecurrent
        self.kind = kind          # "layer", "onnx", "keras"
        self.dtype = dtype        # stored dtype(s) of the weights, e.g. "float32"
        self.extra = dict(extra or {})


def _sniff(path):
    """Format of ``path`` from its first bytes and name (None if unknown)."""
    with open(path, "rb") as f:  # FileNotFoundError / IsADirectoryError propagate
        head = f.read(16)
    lower = path.lower()
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "keras-h5" if _h5_holds_model(path) else "keras-weights"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            names = []
        if "config.json" in names or "model.weights.h5" in names:
            return "keras"
        if any(n.endswith("/data.pkl") for n in names):
            return "torch"
        if lower.endswith(".keras"):
            return "keras"
        return "torch" if names or lower.endswith((".pt", ".pth", ".bin", ".ckpt")) else None
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if lower.endswith(".safetensors"):
        return "safetensors"
    if lower.endswith(".onnx"):
        return "onnx"
    if lower.endswith((".pt", ".pth")):
        return "torch"
    if lower.endswith(".keras"):
        return "keras"
    if lower.endswith((".h5", ".hdf5")):
        return "keras-weights"
    return None


def _h5_holds_model(path):
    """True for a legacy HDF5 model file (model.save("m.h5")): its architecture is inside."""
    try:
        import h5py

        with h5py.File(path, "r") as h5:
            return "model_config" in h5.attrs
    except Exception:  # noqa: BLE001 - h5py missing or an unreadable file: loading says why
        return False


def detect_format(path, fmt=None):
    if fmt:
        return fmt
    if os.path.isdir(path):
        raise CLIError(f"{path}: is a directory, expected a model file")
    got = _sniff(path)
    if got is None:
        raise CLIError(f"{path}: cannot tell the file format (expected .safetensors, .pt, .keras, "
                       f".weights.h5 or .onnx); pass --format {{{','.join(FORMATS)}}}")
    return got


_ST_DTYPE_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
                   "I8": "int8", "U8": "uint8", "I16": "int16", "U16": "uint16", "I32": "int32",
                   "U32": "uint32", "I64": "int64", "U64": "uint64", "BOOL": "bool"}


def _torch_groups(keys):
    from ._infer import _PREFIXED_RE

    groups = {}
    for k in keys:
        m = _PREFIXED_RE.match(k) if isinstance(k, str) else None
        if m:
            groups.setdefault(m.group(1), []).append(k)
    return groups


def _pick_prefix(groups, name, index, path):
    """Prefixes (of a torch-style state dict) to load: all, or the one chosen by name/index."""
    prefixes = sorted(groups)
    if name is None and index is None:
        return prefixes
    shown = ", ".join(repr(p.rstrip(".")) for p in prefixes)
    if index is not None:
        if -len(prefixes) <= index < len(prefixes):
            return [prefixes[index]]
        raise CLIError(f"{path}: --index {index} out of range; RNNs in the file: {shown}")
    for p in prefixes:
        if name in (p, p.rstrip(".")):
            return [p]
    raise CLIError(f"{path}: no RNN named {name!r}; RNNs in the file (by parameter prefix): {shown}")


def _load_torch_style(path, fmt, args, tensors_keys, loader, dtype_of):
    groups = _torch_groups(tensors_keys)
    if not groups:
        some = ", ".join(repr(k) for k in list(tensors_keys)[:8])
        raise CLIError(f"{path}: no RNN parameters (weight_ih_l0, weight_hh_l0, ...) found; keys: {some}")
    entries = []
    for p in _pick_prefix(groups, args.name, args.index, path):
        layer = loader(p if len(groups) > 1 or p else None)
        entries.append(Entry(p.rstrip("."), layer, "layer", dtype_of(groups[p])))
    return entries


def _model_entries(path, header, dtype_of, name, index):
    """The recurrent layers of a whole-model file (fastrnn.save_model), named by their index
    in the model; the model's modules as metadata."""
    from .models import load_model
    from .rnn import RNNBase

    try:
        model = load_model(path)
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc)) from None
    mods = list(getattr(model, "modules", [model]))
    summary = " -> ".join(repr(m).splitlines()[0] for m in mods)
    entries = []
    for i, m in enumerate(mods):
        if isinstance(m, RNNBase):
            keys = [k for k in header if k.startswith(f"{i}.")]
            entries.append(Entry(str(i), m, "layer", dtype_of(keys), {"model": summary}))
    if not entries:
        raise CLIError(f"{path}: a fastrnn model ({summary}) with no LSTM/GRU/RNN layer; "
                       "load it with fastrnn.load_model")
    return _select(entries, name, index, path, "recurrent layer of the model")


def load_entries(path, args):
    """All recurrent layers of ``path`` (or the one picked by args.name / args.index)."""
    fmt = detect_format(path, getattr(args, "format", None))
    cell = getattr(args, "cell", None)
    nonlin = getattr(args, "nonlinearity", None) or "tanh"
    bf = True if getattr(args, "batch_first", False) else None
    name, index = getattr(args, "name", None), getattr(args, "index", None)

    if fmt == "safetensors":
        import fastrnn
        from ._safetensors import METADATA_CONFIG_KEY, read_safetensors_header

        header, meta, _ = read_safetensors_header(path)
        dt = {k: _ST_DTYPE_NAMES.get(v["dtype"], v["dtype"]) for k, v in header.items()}

        def dtype_of(keys):
            return ", ".join(sorted({dt[k] for k in keys})) or None

        from .models import MODEL_METADATA_KEY

        if MODEL_METADATA_KEY in meta:
            return "fastrnn-model", _model_entries(path, header, dtype_of, name, index)
        if METADATA_CONFIG_KEY in meta:
            if name not in (None, "") or index not in (None, 0, -1):
                raise CLIError(f"{path}: a fastrnn file holds one layer; --name/--index do not apply")
            layer = fastrnn.load(path, batch_first=bf)
            extra = {k: v for k, v in meta.items() if k not in (METADATA_CONFIG_KEY, "format")}
            return "fastrnn", [Entry("", layer, "layer", dtype_of(header), extra)]

        def loader(prefix):
            return fastrnn.load(path, cell=cell, nonlinearity=nonlin, prefix=prefix, batch_first=bf)

        return fmt, _load_torch_style(path, fmt, args, list(header), loader, dtype_of)

    if fmt == "torch":
        import fastrnn
        from ._torch_pt import read_torch_state_dict

        tensors = read_torch_state_dict(path)
        stored = _torch_storage_dtypes(path)

        def dtype_of(keys):
            names = {tensors[k].dtype.name for k in keys}
            if stored == {"bfloat16"} and names == {"float32"}:
                return "bfloat16"  # widened to float32 on reading
            return ", ".join(sorted(names))

        def loader(prefix):
            return fastrnn.load_torch(path, cell=cell, nonlinearity=nonlin, prefix=prefix,
                                      batch_first=bf)

        return fmt, _load_torch_style(path, fmt, args, list(tensors), loader, dtype_of)

    if fmt in ("keras", "keras-weights", "keras-h5"):
        from ._keras import from_keras

        config = None
        if fmt == "keras-weights":
            cfg_arg = getattr(args, "config", None)
            if not cfg_arg:
                raise CLIError(f"{path}: a .weights.h5 file holds no architecture; pass --config "
                               "(a JSON file or string: the layer's get_config(), a list of them, "
                               "or the model config)")
            config = _read_json_arg(cfg_arg, "--config")
        elif fmt == "keras-h5":
            cfg_arg = getattr(args, "config", None)
            config = _read_json_arg(cfg_arg, "--config") if cfg_arg else None
        elif getattr(args, "config", None):
            raise CLIError("--config is only used with a .weights.h5 file (a .keras archive "
                           "carries its own config)")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = from_keras(path, config=config)
        for w in caught:
            _warn(str(w.message))
        res = res if isinstance(res, list) else [res]
        if not res:
            raise CLIError(f"{path}: no recurrent layers (LSTM, GRU, SimpleRNN, RNN(cell), "
                           "Bidirectional) in the model")
        dtype = _keras_dtypes(path, fmt)
        entries = [Entry(r.name or "", r, "keras", dtype) for r in res]
        return fmt, _select(entries, name, index, path, "Keras layer")

    if fmt == "onnx":
        from . import _onnx

        onnx = _onnx._onnx()
        model, _src = _onnx._load_model(path)
        nodes = _onnx._recurrent_nodes(model.graph)
        if not nodes:
            ops = sorted({str(n.op_type) for n in model.graph.node})
            raise CLIError(f"{path}: the graph has no LSTM, GRU or RNN node (its ops: {', '.join(ops)})")
        labels = [n.name or f"#{i}" for i, n in enumerate(nodes)]
        picked = _select(list(zip(labels, range(len(nodes)))), name, index, path, "recurrent node",
                         key=lambda e: e[0], also=lambda e: nodes[e[1]].output)
        inits = {t.name: t for t in model.graph.initializer}
        entries = []
        for label, i in picked:
            try:
                obj = _onnx.from_onnx(model, name=i)
            except ValueError as exc:
                raise CLIError(f"{path}: {_one_line(exc)}") from None
            w = inits.get(nodes[i].input[1]) if len(nodes[i].input) > 1 else None
            dtype = None
            if w is not None:
                try:
                    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(w.data_type)).name
                except Exception:  # noqa: BLE001 - exotic element types
                    dtype = onnx.TensorProto.DataType.Name(w.data_type).lower()
            entries.append(Entry(label, obj, "onnx", dtype))
        return fmt, entries

    raise CLIError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")


def _select(entries, name, index, path, what, key=None, also=None):
    key = key or (lambda e: e.name)
    if name is None and index is None:
        return entries
    listing = ", ".join(f"[{i}] {key(e)!r}" for i, e in enumerate(entries))
    if index is not None:
        if -len(entries) <= index < len(entries):
            return [entries[index]]
        raise CLIError(f"{path}: --index {index} out of range; {what}s: {listing}")
    for e in entries:
        if key(e) == name or (also is not None and name in also(e)):
            return [e]
    raise CLIError(f"{path}: no {what} named {name!r}; {what}s: {listing}")


def _one(entries, path, what="recurrent layer"):
    if len(entries) == 1:
        if "model" in entries[0].extra:
            # a whole model's file: the command works on one of its layers, not the model
            _warn(f"{path} is a whole model ({entries[0].extra['model']}); this uses its "
                  f"{_cell_label(entries[0])} layer {entries[0].name!r} alone (fastrnn.load_model "
                  "runs the whole model)")
        return entries[0]
    listing = ", ".join(f"[{i}] {e.name!r} ({_cell_label(e)})" for i, e in enumerate(entries))
    raise CLIError(f"{path}: holds {len(entries)} {what}s, pick one with --name or --index: {listing}")


def _torch_storage_dtypes(path):
    """Float storage types named in a torch file's data.pkl (its weights' stored dtypes)."""
    import pickletools

    names = {"FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
             "BFloat16Storage": "bfloat16"}
    found = set()
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = [n for n in zf.namelist() if n.endswith("/data.pkl")]
            if len(pkl) != 1:
                return found
            for op, arg, _ in pickletools.genops(zf.read(pkl[0])):
                if op.name == "GLOBAL" and isinstance(arg, str) and arg.startswith("torch "):
                    t = arg.split(" ", 1)[1]
                    if t in names:
                        found.add(names[t])
    except Exception:  # noqa: BLE001 - informational only; the loader reports real problems
        return set()
    return found


def _keras_dtypes(path, fmt):
    try:
        import io

        import h5py

        if fmt == "keras":
            with zipfile.ZipFile(path) as zf:
                src = io.BytesIO(zf.read("model.weights.h5"))
        else:
            src = path
        found = set()
        with h5py.File(src, "r") as h5:
            def visit(_name, obj):
                if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f":
                    bf = obj.attrs.get("dtype") in ("bfloat16", b"bfloat16")
                    found.add("bfloat16" if bf else obj.dtype.name)
                elif isinstance(obj, h5py.Dataset) and obj.attrs.get("dtype") in ("bfloat16", b"bfloat16"):
                    found.add("bfloat16")
            h5.visititems(visit)
        return ", ".join(sorted(found)) or None
    except Exception:  # noqa: BLE001 - informational only
        return None


def _read_json_arg(value, what):
    """A JSON string, or the path of a JSON file."""
    text = value
    if not value.lstrip().startswith(("{", "[")):
        try:
            with open(value, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise CLIError(f"{what}: no such file: {value}") from None
        except OSError as exc:
            raise CLIError(f"{what}: cannot read {value}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CLIError(f"{what}: not valid JSON ({exc})") from None


# --------------------------------------------------------------------------------------------
# describing layers
# --------------------------------------------------------------------------------------------
_DEFAULT_ACTS = {"LSTM": ["sigmoid", "tanh", "tanh"], "GRU": ["sigmoid", "tanh"]}


def describe_layer(layer):
    """Dict describing a fastrnn layer (ReversedLayer: the wrapped layer, reversed)."""
    from ._onnx import ReversedLayer

    reverse = isinstance(layer, ReversedLayer)
    if reverse:
        layer = layer.layer
    cfg = layer.config()
    cell = cfg["cell"]
    D = 2 if cfg["bidirectional"] else 1
    opts = {}
    if cell == "LSTM":
        for k in ("peephole", "input_forget"):
            if cfg.get(k):
                opts[k] = True
    if cell == "GRU":
        opts["linear_before_reset"] = cfg["linear_before_reset"]
    if cell == "RNN":
        opts["nonlinearity"] = cfg["nonlinearity"]
    if cfg.get("clip") is not None:
        opts["clip"] = cfg["clip"]
    acts = cfg.get("activations") or []
    n = len(_DEFAULT_ACTS.get(cell, [cfg.get("nonlinearity")]))
    default = _DEFAULT_ACTS.get(cell, [cfg.get("nonlinearity")]) * (len(acts) // max(n, 1))
    alphas, betas = cfg.get("activation_alpha") or [], cfg.get("activation_beta") or []
    if acts and (acts != default or any(a is not None for a in alphas + betas)):
        if cell != "RNN" or len(set(acts)) > 1 or acts[0] not in ("tanh", "relu") or \
                any(a is not None for a in alphas + betas):
            shown = []
            for i, a in enumerate(acts):
                params = [f"{v:g}" for v in (alphas[i] if i < len(alphas) else None,
                                               betas[i] if i < len(betas) else None) if v is not None]
                shown.append(f"{a}({', '.join(params)})" if params else a)
            opts["activations"] = shown
    if reverse:
        opts["direction"] = "reverse"
    return {
        "cell": cell,
        "num_layers": cfg["num_layers"],
        "directions": D,
        "input_size": cfg["input_size"],
        "hidden_size": cfg["hidden_size"],
        "proj_size": cfg.get("proj_size", 0),
        "bias": cfg["bias"],
        "batch_first": cfg["batch_first"],
        "options": opts,
        "precision": cfg.get("dtype", "float32"),  # what the kernels compute with (layer.quantize)
        "parameters": layer.parameters_count(),
    }


def describe(entry):
    """JSON-serialisable description of an Entry."""
    obj = entry.obj
    d = {"name": entry.name}
    if entry.kind == "layer":
        d.update(describe_layer(obj))
    elif entry.kind == "onnx":
        d["onnx"] = {"op_type": obj.op_type, "direction": obj.direction, "layout": obj.layout,
                     "constant_inputs": sorted(obj._defaults)}
        d.update(describe_layer(obj.layer))
    else:  # keras
        d["keras"] = {"class_name": obj.class_name, "go_backwards": obj.go_backwards}
        if obj.bidirectional:
            d["keras"]["merge_mode"] = obj.merge_mode
            d["keras"]["fused"] = obj.fused
        if isinstance(obj.layer, tuple):  # non-fused Bidirectional: two layers
            parts = [describe_layer(l) for l in obj.layer]
            d.update(parts[0])
            d["directions"] = 2
            d["parameters"] = sum(p["parameters"] for p in parts)
            d["sublayers"] = parts
        else:
            d.update(describe_layer(obj.layer))
    d["dtype"] = entry.dtype
    return d


def _cell_label(entry):
    try:
        d = describe(entry)
    except Exception:  # noqa: BLE001
        return type(entry.obj).__name__
    return d["cell"]


# --------------------------------------------------------------------------------------------
# output helpers
# --------------------------------------------------------------------------------------------
def _warn(msg):
    print(f"{PROG}: warning: {_one_line(msg)}", file=sys.stderr)


def _one_line(msg):
    return " ".join(str(msg).split())


def _set_threads(args):
    import fastrnn

    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise _UsageError(f"--threads must be >= 1, got {args.threads}")
        fastrnn.set_num_threads(args.threads)
    isa = getattr(args, "isa", None)
    if isa:
        if not fastrnn.isa_supported(isa):
            raise CLIError(f"--isa {isa}: not supported by this CPU")
        fastrnn.set_isa(isa)


# --------------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------------
def cmd_info(args):
    fmt, entries = load_entries(args.file, args)
    descs = [describe(e) for e in entries]
    if args.json:
        out = {"file": args.file, "format": fmt, "layers": descs,
               "parameters": sum(d["parameters"] for d in descs)}
        extra = entries[0].extra if entries else {}
        if extra:
            out["metadata"] = extra
        print(json.dumps(out, indent=2, sort_keys=False))
        return 0
    dtypes = sorted({d["dtype"] for d in descs if d["dtype"]})
    lines = [f"file:       {args.file}",
             f"format:     {_FORMAT_NAMES.get(fmt, fmt)}",
             f"dtype:      {', '.join(dtypes) if dtypes else 'unknown'}",
             f"layers:     {len(descs)}",
             f"parameters: {sum(d['parameters'] for d in descs):,}"]
    for k, v in sorted((entries[0].extra if entries else {}).items()):
        lines.append(f"metadata:   {k} = {v}")
    for i, d in enumerate(descs):
        title = f"[{i}] {d['cell']}" + (f" {d['name']!r}" if d["name"] else "")
        if "onnx" in d:
            title += f" (ONNX {d['onnx']['op_type']}, direction={d['onnx']['direction']}, layout={d['onnx']['layout']})"
        if "keras" in d:
            k = d["keras"]
            bits = [k["class_name"]]
            if k.get("go_backwards"):
                bits.append("go_backwards")
            if "merge_mode" in k:
                bits.append(f"merge_mode={k['merge_mode']}")
            title += f" (Keras {', '.join(bits)})"
        lines.append("")
        lines.append(title)
        D = d["directions"]
        lines.append(f"    num_layers:  {d['num_layers']}")
        lines.append(f"    directions:  {D}{' (bidirectional)' if D == 2 else ''}")
        lines.append(f"    input_size:  {d['input_size']}")
        lines.append(f"    hidden_size: {d['hidden_size']}")
        lines.append(f"    proj_size:   {d['proj_size']}")
        lines.append(f"    bias:        {d['bias']}")
        lines.append(f"    batch_first: {d['batch_first']}")
        opts = d["options"]
        if opts:
            lines.append("    options:     " + ", ".join(
                f"{k}=[{', '.join(v)}]" if isinstance(v, list) else f"{k}={v}" for k, v in opts.items()))
        if d.get("onnx", {}).get("constant_inputs"):
            lines.append(f"    constants:   {', '.join(d['onnx']['constant_inputs'])} (from the graph)")
        lines.append(f"    dtype:       {d['dtype'] or 'unknown'}")
        if d.get("precision", "float32") != "float32":
            lines.append(f"    precision:   {d['precision']} (quantized weights)")
        lines.append(f"    parameters:  {d['parameters']:,}")
    print("\n".join(lines))
    return 0


# --------------------------------------------------------------------------------------------
# convert
# --------------------------------------------------------------------------------------------
def _convertible_layer(entry, path):
    """The plain fastrnn layer of an entry, or CLIError when its semantics need more than that."""
    from ._onnx import ReversedLayer

    what = f"{path}: {entry.kind} layer {entry.name!r}" if entry.name else f"{path}"
    if entry.kind == "layer":
        return entry.obj, []
    notes = []
    if entry.kind == "onnx":
        obj = entry.obj
        if isinstance(obj.layer, ReversedLayer):
            raise CLIError(f"{what}: direction='reverse' has no plain fastrnn layer equivalent "
                           "(run the .onnx file itself: fastrnn run, or fastrnn.from_onnx)")
        if obj._defaults:
            notes.append(f"the graph's constant {', '.join(sorted(obj._defaults))} are not saved; "
                         "pass them at call time")
        notes_layout = "batch_first=True" if obj.layout == 1 else "batch_first=False"
        notes.append(f"saved with PyTorch call semantics ({notes_layout}): outputs are (T, B, D*H) "
                     "instead of ONNX's (T, D, B, H)")
        return obj.layer, notes
    obj = entry.obj  # keras
    if isinstance(obj.layer, tuple):
        raise CLIError(f"{what}: a Bidirectional layer whose two directions differ has no single "
                       "fastrnn layer equivalent")
    if obj.go_backwards:
        raise CLIError(f"{what}: go_backwards=True (outputs reversed in time) has no fastrnn layer "
                       "equivalent")
    if obj.bidirectional and obj.merge_mode != "concat":
        raise CLIError(f"{what}: Bidirectional merge_mode={obj.merge_mode!r} has no fastrnn layer "
                       "equivalent (only 'concat')")
    cfg = obj.config.get("config", {}) if isinstance(obj.config, dict) else {}
    if cfg.get("return_sequences") is False:
        notes.append("the saved layer returns the whole sequence (Keras return_sequences=False "
                     "keeps only the last step)")
    return obj.layer, notes


def cmd_convert(args):
    import fastrnn

    src, dst = args.input, args.output
    if os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst):
        raise CLIError(f"{dst}: output would overwrite the input file")
    fmt, entries = load_entries(src, args)
    entry = _one(entries, src)
    layer, notes = _convertible_layer(entry, src)
    if getattr(args, "batch_first", False):
        if not layer.batch_first:
            layer = fastrnn.layer_from_config(dict(layer.config(), batch_first=True), layer.state_dict())
    meta = {"fastrnn_source": os.path.basename(src), "fastrnn_source_format": fmt}
    if entry.name:
        meta["fastrnn_source_layer"] = entry.name
    d = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(d):
        raise CLIError(f"{dst}: directory {d} does not exist")
    fastrnn.save(layer, dst, metadata=meta)
    # read back: the written file must load to the same parameters
    back = fastrnn.load(dst)
    a, b = layer.state_dict(), back.state_dict()
    if a.keys() != b.keys() or any(not np.array_equal(a[k], b[k]) for k in a):
        raise CLIError(f"{dst}: verification failed: the written file does not load back identically")
    for n in notes:
        _warn(n)
    desc = describe_layer(layer)
    if not args.quiet:
        print(f"wrote {dst}: {desc['cell']} {desc['num_layers']} layer(s) x {desc['directions']} "
              f"direction(s), input {desc['input_size']}, hidden {desc['hidden_size']}"
              f"{', proj ' + str(desc['proj_size']) if desc['proj_size'] else ''}, "
              f"{desc['parameters']:,} parameters (from {_FORMAT_NAMES.get(fmt, fmt)})")
    return 0


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------
def _load_npy(path, what):
    try:
        a = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CLIError(f"{what}: no such file: {path}") from None
    except (ValueError, OSError, EOFError) as exc:
        raise CLIError(f"{what}: {path} is not a readable .npy array ({_one_line(exc)})") from None
    if isinstance(a, np.lib.npyio.NpzFile):
        keys = list(a.keys())
        a.close()
        raise CLIError(f"{what}: {path} is an .npz archive ({', '.join(keys)}); expected one .npy array")
    return a


def _float_input(a, what):
    if a.dtype.kind not in "fiu" or a.dtype.kind == "b":
        raise CLIError(f"{what}: expected real numbers, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _parse_lengths(value):
    if value is None:
        return None
    if os.path.exists(value) or value.endswith(".npy"):
        lens = _load_npy(value, "--lengths")
    else:
        try:
            lens = np.array([int(v) for v in value.replace(" ", "").split(",") if v != ""])
        except ValueError:
            raise CLIError(f"--lengths: expected a .npy file or comma-separated integers, got {value!r}") from None
    if lens.dtype.kind not in "iu":
        if lens.dtype.kind == "f" and np.all(np.isfinite(lens)) and np.all(lens == np.round(lens)):
            lens = lens.astype(np.int64)
        else:
            raise CLIError(f"--lengths: expected integers, got dtype {lens.dtype}")
    return lens.reshape(-1).astype(np.int64)


def _load_states_npz(path):
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise CLIError(f"--states-input: {path} is a single array, not an .npz archive of h_n (and c_n)")
        with z:
            return {k: z[k] for k in z}
    except FileNotFoundError:
        raise CLIError(f"--states-input: no such file: {path}") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise CLIError(f"--states-input: {path} is not a readable .npz archive ({_one_line(exc)})") from None


def _flatten_states(state, prefix=""):
    """Final states -> {name: array} (h_n, c_n; forward_/backward_ for split Bidirectionals)."""
    if isinstance(state, np.ndarray):
        return {prefix + "h_n": state}
    if isinstance(state, tuple) and len(state) == 2 and all(isinstance(s, np.ndarray) for s in state):
        return {prefix + "h_n": state[0], prefix + "c_n": state[1]}
    if isinstance(state, tuple) and len(state) == 2:
        out = {}
        out.update(_flatten_states(state[0], prefix + "forward_"))
        out.update(_flatten_states(state[1], prefix + "backward_"))
        return out
    raise CLIError(f"unexpected state structure {type(state).__name__}")


def cmd_run(args):
    _set_threads(args)
    if args.states_input and (args.h0 or args.c0):
        raise _UsageError("give initial states with --states-input or with --h0/--c0, not both")
    fmt, entries = load_entries(args.file, args)
    entry = _one(entries, args.file)
    x = _float_input(_load_npy(args.input, "--input"), "--input")
    lengths = _parse_lengths(args.lengths)
    h0 = _float_input(_load_npy(args.h0, "--h0"), "--h0") if args.h0 else None
    c0 = _float_input(_load_npy(args.c0, "--c0"), "--c0") if args.c0 else None
    if args.states_input:
        st = _load_states_npz(args.states_input)
        h0 = st.get("h_n", st.get("h0"))
        c0 = st.get("c_n", st.get("c0"))
        if h0 is None:
            raise CLIError(f"--states-input: {args.states_input} has no 'h_n' array (keys: {', '.join(st)})")
        h0 = _float_input(h0, "--states-input h_n")
        c0 = None if c0 is None else _float_input(c0, "--states-input c_n")

    obj = entry.obj
    t0 = time.perf_counter()
    if entry.kind == "onnx":
        results = obj.run(x, lengths, h0, c0)
        out = results[0]
        states = {"h_n": results[1]}
        if len(results) > 2:
            states["c_n"] = results[2]
    else:
        cell = describe(entry)["cell"]
        if cell == "LSTM":
            if (h0 is None) != (c0 is None):
                if args.states_input:
                    raise CLIError(f"--states-input: {args.states_input} has h_n but no c_n "
                                   "(an LSTM needs both)")
                raise CLIError("an LSTM needs both --h0 and --c0 (or neither)")
            hx = None if h0 is None else (h0, c0)
        else:
            if c0 is not None:
                raise CLIError(f"a {cell} has no cell state: --c0 / c_n do not apply")
            hx = h0
        if entry.kind == "keras" and isinstance(obj.layer, tuple) and hx is not None:
            raise CLIError("initial states are not supported for a Bidirectional Keras layer whose "
                           "directions differ")
        lens = None if lengths is None else lengths.tolist()
        out, state = obj(x, hx, lens) if lens is not None else obj(x, hx)
        if isinstance(out, list):  # Keras Bidirectional merge_mode=None: [forward, backward]
            out = np.stack(out)
        states = _flatten_states(state)
    elapsed = time.perf_counter() - t0
    out = np.asarray(out, dtype=np.float32)
    if args.output:
        _save_npy(args.output, out)
    if args.states_output:
        _save_npz(args.states_output, {k: np.asarray(v) for k, v in states.items()})
    if not args.quiet:
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in states.items())
        where = f" -> {args.output}" if args.output else ""
        print(f"output {tuple(out.shape)} float32{where}; states: {shapes}"
              f"{' -> ' + args.states_output if args.states_output else ''}; {elapsed * 1e3:.2f} ms")
    return 0


def _save_npy(path, arr):
    try:
        with open(path, "wb") as f:
            np.save(f, arr, allow_pickle=False)
    except OSError as exc:
        raise CLIError(f"cannot write {path}: {exc.strerror or exc}") from None


def _save_npz(path, arrays):
    try:
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    except OSError as exc:
        raise CLIError(f"cannot write {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------------------------
def _repo_benchmarks_dir():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(here, "benchmarks")


def _load_compare_module():
    """benchmarks/compare.py of a source checkout, or None."""
    path = os.path.join(_repo_benchmarks_dir(), "compare.py")
    if os.environ.get("FASTRNN_BENCH_BUILTIN") or not os.path.isfile(path):
        return None
    spec = importlib.util.spec_from_file_location("fastrnn_benchmarks_compare", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception:
        sys.modules.pop(spec.name, None)
        raise
    return mod


def timed_calls(fn, min_time, repeat=5, warmup=2, max_calls=2000):
    """Seconds of each timed call of ``fn`` (after ``warmup`` untimed ones, garbage
    collection off): at least ``repeat`` calls, more (up to ``max_calls``) until
    ``min_time`` seconds have been spent. Shared with benchmarks/compare.py."""
    import gc

    for _ in range(warmup):
        fn()
    times = []
    gc_was = gc.isenabled()
    gc.disable()
    try:
        total = 0.0
        while len(times) < repeat or (total < min_time and len(times) < max_calls):
            t = time.perf_counter()
            fn()
            dt = time.perf_counter() - t
            times.append(dt)
            total += dt
    finally:
        if gc_was:
            gc.enable()
    return times


def _time_call(fn, min_time, repeat=5, warmup=2, max_calls=2000):
    """Median seconds per call (see ``timed_calls``)."""
    return float(np.median(timed_calls(fn, min_time, repeat, warmup, max_calls)))


def _torch_twin(layer):
    """(torch.nn module with the layer's weights, None) or (None, reason)."""
    try:
        import torch
    except ImportError:
        return None, "torch not installed"
    cfg = layer.config()
    if cfg.get("peephole") or cfg.get("input_forget") or cfg.get("clip") is not None:
        return None, "the layer uses options torch lacks"
    cell = cfg["cell"]
    if cell == "GRU" and not cfg["linear_before_reset"]:
        return None, "GRU(linear_before_reset=False) has no torch equivalent"
    if "activations" in describe_layer(layer)["options"]:
        return None, "custom activations have no torch equivalent"
    kw = dict(input_size=cfg["input_size"], hidden_size=cfg["hidden_size"], num_layers=cfg["num_layers"],
              bias=cfg["bias"], batch_first=cfg["batch_first"], bidirectional=cfg["bidirectional"])
    if cell == "LSTM":
        mod = torch.nn.LSTM(proj_size=cfg["proj_size"], **kw)
    elif cell == "GRU":
        mod = torch.nn.GRU(**kw)
    else:
        mod = torch.nn.RNN(nonlinearity=cfg["nonlinearity"], **kw)
    mod.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    return mod.eval(), None


def _plain_single(layer):
    """True if ONNX's single LSTM/GRU/RNN node (as benchmarks/compare.py builds it) computes the layer."""
    cfg = layer.config()
    d = describe_layer(layer)
    return (cfg["num_layers"] == 1 and not cfg.get("proj_size") and cfg["bias"] and not cfg["batch_first"]
            and not cfg.get("peephole") and not cfg.get("input_forget") and cfg.get("clip") is None
            and cfg.get("linear_before_reset", True) and cfg.get("nonlinearity", "tanh") == "tanh"
            and "activations" not in d["options"])


def _flops(layer, T, B):
    cfg = layer.config()
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[cfg["cell"]]
    H, P, D = cfg["hidden_size"], cfg.get("proj_size", 0), 2 if cfg["bidirectional"] else 1
    Ho = P or H
    total = 0
    for k in range(cfg["num_layers"]):
        in_k = cfg["input_size"] if k == 0 else D * Ho
        total += 2 * G * H * (in_k + Ho) + (2 * P * H if P else 0)
    return float(total) * T * B * D


def _as_outputs(r):
    out, st = r
    st = st if isinstance(st, tuple) else (st,)
    return (np.asarray(out),) + tuple(np.asarray(s) for s in st)


def _max_abs_diff(ref, got):
    if len(ref) != len(got):
        return float("inf")
    worst = 0.0
    for a, b in zip(ref, got):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        if a.shape != b.shape:
            return float("inf")
        if a.size:
            d = np.abs(a - b)
            if np.isnan(d).any():
                return float("nan")
            worst = max(worst, float(d.max()))
    return worst


def _bench_layer(layer, cell_label, T, batches, engines, threads, min_time, compare, bar, notes):
    """Rows (benchmarks/compare.py's row layout) for one model at several batch sizes."""
    import tempfile

    cfg = layer.config()
    H, I, D = cfg["hidden_size"], cfg["input_size"], 2 if cfg["bidirectional"] else 1
    sd = layer.state_dict()
    plain = _plain_single(layer)
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fastrnn-bench-") as tmp:
        for B in batches:
            shape = (B, T, I) if cfg["batch_first"] else (T, B, I)
            x = rng.standard_normal(shape).astype(np.float32)
            gflop = _flops(layer, T, B) / 1e9
            row = {"cell": cell_label, "T": T, "B": B, "H": H, "I": I, "directions": D, "threads": threads,
                   "dtype": "fp32", "gflop": gflop, "engines": {}}
            ref = None
            for eng in engines:
                bar.set_label(f"{cell_label} T={T} B={B}: {eng}")
                try:
                    call, to_outputs, why = None, _as_outputs, None
                    if eng == "fastrnn":
                        def call(x=x):
                            return layer(x)
                    elif eng == "torch":
                        if compare is not None and plain:
                            call, to_outputs = compare.make_engine("torch", cfg["cell"].lower(), sd, x, threads,
                                                                   D == 2, None, None)
                        else:
                            mod, why = _torch_twin(layer)
                            if mod is not None:
                                import torch

                                torch.set_num_threads(threads)
                                xt = torch.from_numpy(x)

                                def call(mod=mod, xt=xt):
                                    with torch.inference_mode():
                                        return mod(xt)

                                def to_outputs(r):
                                    out, st = r
                                    st = st if isinstance(st, tuple) else (st,)
                                    return (out.numpy(),) + tuple(s.numpy() for s in st)
                    elif compare is None:
                        why = "needs benchmarks/compare.py (a source checkout)"
                    elif not plain:
                        why = ("only single-layer models with default options are compared "
                               "(one ONNX node)")
                    else:
                        model = compare.build_onnx_node_model(cfg["cell"].lower(), sd, T, B, I, H, D == 2)
                        path = os.path.join(tmp, f"m{B}.onnx")
                        import onnx

                        onnx.save(model, path)
                        call, to_outputs = compare.make_engine(eng, cfg["cell"].lower(), sd, x, threads,
                                                               D == 2, path, model)
                except Exception as exc:  # noqa: BLE001 - a missing or failing peer is a note, not an error
                    why = _one_line(exc) or type(exc).__name__
                if call is None:
                    row["engines"][eng] = {"skipped": why}
                    if why not in notes.setdefault(eng, []):
                        notes[eng].append(why)
                    continue
                outs = to_outputs(call())
                res = {}
                if eng == "fastrnn":
                    ref = outs
                else:
                    res["max_abs_diff"] = _max_abs_diff(ref, outs)
                sec = _time_call(call, min_time, warmup=1)
                res.update(ms=sec * 1e3, gflops=gflop / sec)
                row["engines"][eng] = res
                del call
                time.sleep(0.1)  # let this engine's spinning worker threads go idle before the next
            _finish(row)
            rows.append(row)
            bar.update(f"{cell_label} T={T} B={B}")
    return rows


def _finish(row, tol=1e-4):
    fr = row["engines"].get("fastrnn", {})
    peers = {e: r for e, r in row["engines"].items() if e != "fastrnn" and "ms" in r}
    if peers and "ms" in fr:
        best = min(peers, key=lambda e: peers[e]["ms"])
        row.update(best_peer=best, best_peer_ms=peers[best]["ms"], speedup=peers[best]["ms"] / fr["ms"])
    else:
        row.update(best_peer=None, best_peer_ms=None, speedup=None)
    diffs = [r["max_abs_diff"] for r in peers.values()]
    row["max_abs_diff"] = max(diffs) if diffs else None
    row["agree"] = all(d <= tol for d in diffs)


def _format_rows(rows, engines):
    shown = [e for e in engines if any("ms" in r["engines"].get(e, {}) for r in rows)]
    head = ["model", "T", "B", "H"] + [f"{e} ms" for e in shown] + ["speed-up vs best peer", "max abs diff"]
    table = [head]
    for r in rows:
        line = [r["cell"] + ("-bi" if r["directions"] == 2 else ""), str(r["T"]), str(r["B"]),
                str(r["H"]) + (f" (I={r['I']})" if r["I"] != r["H"] else "")]
        for e in shown:
            er = r["engines"].get(e, {})
            line.append(f"{er['ms']:.3f}" if "ms" in er else "-")
        line.append(f"{r['speedup']:.2f}x ({r['best_peer']})" if r.get("speedup") else "-")
        d = r.get("max_abs_diff")
        line.append("-" if d is None else f"{d:.1e}" + ("" if r["agree"] else " MISMATCH"))
        table.append(line)
    widths = [max(len(t[i]) for t in table) for i in range(len(head))]
    out = []
    for j, t in enumerate(table):
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(t, widths))))
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


class _CompareProgress:
    """Feeds benchmarks/compare.py's progress lines ("[i/n] ...") to a ProgressBar."""

    _RE = None

    def __init__(self, bar):
        import re

        self.bar = bar
        self.re = re.compile(r"\[(\d+)/(\d+)\]\s*(.*)")

    def __call__(self, line):
        m = self.re.search(line)
        if not m:
            return
        i, n, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        self.bar.total = max(n, 1)
        done = " ms" in rest  # the summary line of a finished shape
        self.bar.n = i if done else i - 1
        self.bar.set_label(rest.split(":")[0] + ("" if done else ": " + rest.split(":")[-1].strip()))


def _grid_shapes(args, compare):
    if args.shapes:
        return args.shapes
    if args.batch is None and args.hidden is None and args.steps is None and compare is not None:
        return None  # compare.py's default grid
    T = args.steps or 100
    return [(T, B, H) for H in (args.hidden or [256, 512]) for B in (args.batch or [1, 64])]


def cmd_bench(args, extra, raw):
    import fastrnn

    against = [a.strip().lower() for a in (args.against or "").split(",") if a.strip()]
    unknown = sorted(set(against) - {"torch", "onnxruntime", "openvino"})
    if unknown:
        raise _UsageError(f"--against: unknown engine(s) {', '.join(unknown)} "
                          "(choose from torch, onnxruntime, openvino)")
    if extra:
        raise _UsageError(f"unrecognized arguments: {' '.join(extra)} (see '{PROG} bench --help')")
    if args.threads is not None and args.threads < 1:
        raise _UsageError(f"--threads must be >= 1, got {args.threads}")
    if args.min_time <= 0:
        raise _UsageError("--min-time must be > 0")
    compare = None if args.builtin else _load_compare_module()
    engines = ["fastrnn"] + [e for e in dict.fromkeys(against) if e != "fastrnn"]
    from . import _default_threads

    threads = args.threads or _default_threads()
    fastrnn.set_num_threads(threads)
    notes = {}
    header = (f"fastrnn {fastrnn.__version__}, ISA {fastrnn.get_isa()}, {threads} thread(s); "
              f"median ms per call (>= {args.min_time:g} s of calls each)")

    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*")
    if args.file:
        _, entries = load_entries(args.file, args)
        entry = _one(entries, args.file)
        layer, _ = _convertible_layer(entry, args.file)
        d = describe_layer(layer)
        label = d["cell"].lower() + (f"-L{d['num_layers']}" if d["num_layers"] > 1 else "") + \
            (f"-P{d['proj_size']}" if d["proj_size"] else "")
        T = args.steps or 100
        batches = args.batch or [1, 64]
        with ProgressBar(len(batches), "bench", enabled=args.progress) as bar:
            rows = _bench_layer(layer, label, T, batches, engines, threads, args.min_time, compare, bar, notes)
        header = f"{args.file}: " + header
    elif compare is not None:
        shapes = _grid_shapes(args, compare)
        cells = args.cells or ["lstm", "gru", "rnn"]
        n = len(cells) * len(shapes or compare.DEFAULT_SHAPES)
        compare_notes = []
        with ProgressBar(n, "bench", enabled=args.progress) as bar:
            rows = compare.run_comparison(cells, shapes, threads=threads, engines=engines,
                                          min_time=args.min_time, progress=_CompareProgress(bar),
                                          notes=compare_notes)
        for msg in compare_notes:
            notes.setdefault("", []).append(msg)
    else:
        shapes = _grid_shapes(args, None)
        cells = args.cells or ["lstm", "gru", "rnn"]
        rows = []
        with ProgressBar(len(cells) * len(shapes), "bench", enabled=args.progress) as bar:
            for cell in cells:
                for T, B, H, *rest in shapes:
                    I = rest[0] if rest else H
                    layer = getattr(fastrnn, cell.upper())(I, H, seed=0)
                    rows += _bench_layer(layer, cell, T, [B], engines, threads, args.min_time, None, bar, notes)
    if args.json:
        print(json.dumps({"threads": threads, "isa": fastrnn.get_isa(), "engines": engines,
                          "notes": [m for v in notes.values() for m in v], "rows": rows},
                         indent=1, default=str))
        return 0
    print(header)
    print(compare.format_table(rows, engines) if compare is not None else _format_rows(rows, engines))
    for eng, msgs in notes.items():
        for m in msgs:
            print(f"note: {eng + ' skipped: ' if eng else ''}{m}")
    return 0


# --------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------
def cmd_demo(argv):
    try:
        demo = importlib.import_module("fastrnn.demo")
    except ModuleNotFoundError as exc:
        if exc.name in ("fastrnn.demo",):
            raise CLIError("the demo is not available in this installation (no module fastrnn.demo)") from None
        raise CLIError(f"the demo cannot start: {_one_line(exc)}") from None
    except ImportError as exc:
        raise CLIError(f"the demo cannot start: {_one_line(exc)}") from None
    if not hasattr(demo, "main"):
        raise CLIError("fastrnn.demo has no main(argv)")
    rc = demo.main(list(argv))
    return 0 if rc is None else int(rc)


# --------------------------------------------------------------------------------------------
# argument parsing
# --------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def _int_list(value):
    try:
        vals = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {value!r}")
    return vals


def _cell_list(value):
    cells = [c.strip().lower() for c in value.split(",") if c.strip()]
    bad = [c for c in cells if c not in ("lstm", "gru", "rnn")]
    if bad or not cells:
        raise argparse.ArgumentTypeError(f"cells must be from lstm, gru, rnn; got {value!r}")
    return list(dict.fromkeys(cells))


def _parse_shapes(value):
    shapes = []
    for part in value.replace(" ", "").split(";"):
        if not part:
            continue
        try:
            nums = tuple(int(v) for v in part.split(","))
        except ValueError:
            nums = ()
        if len(nums) not in (3, 4) or min(nums) < 1:
            raise argparse.ArgumentTypeError(f"shape {part!r}: expected T,B,H or T,B,H,I (positive integers)")
        shapes.append(nums)
    if not shapes:
        raise argparse.ArgumentTypeError("no shapes given")
    return shapes


def _add_selection(p, keras_config=True):
    g = p.add_argument_group("choosing and reading the model")
    g.add_argument("--format", choices=FORMATS, help="file format (default: from the file's contents and name)")
    g.add_argument("--name", help="which recurrent layer: Keras layer name, ONNX node name, or "
                                  "the parameter prefix in a state dict holding several RNNs")
    g.add_argument("--index", type=int, help="which recurrent layer, by position (0-based)")
    if keras_config:
        g.add_argument("--config", help="Keras .weights.h5 (needed) or legacy .h5 (instead of the one "
                                        "stored): the architecture, as a JSON file or string (layer "
                                        "get_config(), a list of them, or the model config)")
    g.add_argument("--cell", choices=("LSTM", "GRU", "RNN"), type=str.upper,
                   help="torch state dicts: the cell type, when the shapes leave it open")
    g.add_argument("--nonlinearity", choices=("tanh", "relu"),
                   help="torch state dicts of an nn.RNN: its nonlinearity (default tanh)")


def build_parser():
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback on errors")
    p = _Parser(prog=PROG, description="fastrnn: fast CPU inference for LSTM, GRU and RNN models.",
                parents=[debug])
    from . import __version__
    p.add_argument("--version", action="version", version=f"fastrnn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("info", parents=[debug], help="describe a model file",
                       description="Describe the recurrent layers of a model file: format, cell, sizes, "
                                   "options, weight dtype, parameter count.")
    s.add_argument("file", help=".safetensors, .pt, .keras, .weights.h5, legacy Keras .h5 or .onnx")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    _add_selection(s)
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("convert", parents=[debug], help="convert a model to fastrnn .safetensors",
                       description="Convert a torch .pt state dict, a .keras / .weights.h5 / legacy .h5 "
                                   "Keras file, an .onnx model or a torch-style .safetensors to "
                                   "fastrnn's .safetensors "
                                   "(loadable with fastrnn.load, without torch/keras/onnx).")
    s.add_argument("input", help="model file to convert")
    s.add_argument("output", help="the .safetensors file to write")
    s.add_argument("--batch-first", action="store_true", help="save the layer with batch_first=True")
    s.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    _add_selection(s)
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("run", parents=[debug], help="run a model on a .npy input",
                       description="Run a model on an input array. fastrnn / torch files use PyTorch "
                                   "semantics (x: (T, B, I), or (B, T, I) with batch_first; out: "
                                   "(T, B, D*H)); .onnx files the node's ONNX semantics (Y: (T, D, B, H)); "
                                   "Keras files Keras' (x: (B, T, I), return_sequences=True).")
    s.add_argument("file", help="model file")
    s.add_argument("--input", "-i", required=True, metavar="X.npy", help="input array")
    s.add_argument("--lengths", metavar="L.npy|N,N,...", help="per-sequence lengths (.npy or a comma list)")
    s.add_argument("--h0", metavar="H0.npy", help="initial hidden state")
    s.add_argument("--c0", metavar="C0.npy", help="initial cell state (LSTM)")
    s.add_argument("--states-input", metavar="STATES.npz",
                   help="initial states from an .npz with h_n (and c_n), e.g. a previous --states-output")
    s.add_argument("--output", "-o", metavar="Y.npy", help="where to write the output sequence")
    s.add_argument("--states-output", metavar="STATES.npz", help="where to write the final states (h_n, c_n)")
    s.add_argument("--batch-first", action="store_true",
                   help="torch state dicts: the input is (B, T, I)")
    s.add_argument("--threads", type=int, help="fastrnn threads (default: all usable CPUs)")
    s.add_argument("--isa", choices=("scalar", "avx2", "avx512"), help="force a kernel path")
    s.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    _add_selection(s)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("bench", parents=[debug], help="timing table against other engines",
                       description="Time fastrnn next to torch / onnxruntime / openvino on the same weights "
                                   "and inputs, for a model file (at T=100, B=1 and 64 by default) or a grid "
                                   "of LSTM/GRU/RNN shapes. Uses the repository's benchmarks/compare.py when "
                                   "present (its default grid); otherwise a small built-in timing of fastrnn "
                                   "and torch (grid: H 256/512, B 1/64, T 100). A progress bar is drawn on "
                                   "stderr when it is a terminal.")
    s.add_argument("file", nargs="?", help="model file (default: the standard grid)")
    s.add_argument("--against", default="torch,onnxruntime,openvino",
                   help="comma list of peers: torch, onnxruntime, openvino (default: all; missing ones "
                        "are skipped with a note)")
    s.add_argument("--threads", type=int, help="threads for every engine (default: all usable CPUs)")
    s.add_argument("--cells", type=_cell_list,
                   help="grid: comma list of lstm, gru, rnn (default: all)")
    s.add_argument("--shapes", type=_parse_shapes, help="grid: 'T,B,H;T,B,H;...' (4th number: input size)")
    s.add_argument("--steps", "-T", type=int, help="sequence length (default 100)")
    s.add_argument("--batch", type=_int_list, help="comma list of batch sizes (default 1,64)")
    s.add_argument("--hidden", type=_int_list, help="grid: comma list of hidden sizes (default 256,512)")
    s.add_argument("--min-time", type=float, default=0.25, help="seconds of timed calls per measurement "
                                                                "(default 0.25)")
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    s.add_argument("--progress", action="store_true", default=None,
                   help="always draw the progress bar (default: when stderr is a terminal)")
    s.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    s.add_argument("--builtin", action="store_true", help="use the built-in timing even if "
                                                          "benchmarks/compare.py exists")
    _add_selection(s)
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("demo", help="run the fastrnn demo (arguments go to fastrnn.demo)",
                       add_help=False)
    s.add_argument("args", nargs=argparse.REMAINDER)
    s.set_defaults(func=None)
    return p


def _run(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    # `fastrnn demo ...`: everything after "demo" belongs to the demo (its own --help too)
    lead = []
    for i, a in enumerate(argv):
        if a == "demo":
            lead, rest = argv[:i], argv[i + 1:]
            if all(x == "--debug" for x in lead):
                return cmd_demo([x for x in rest])
            break
        if not a.startswith("-"):
            break
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "bench":
        i = argv.index("bench")
        raw = [a for a in argv[i + 1:] if a != "--debug"]
        return cmd_bench(args, extra, raw)
    if extra:
        raise _UsageError(f"unrecognized arguments: {' '.join(extra)} (see '{PROG} {args.command} --help')")
    return args.func(args)


def _wants_debug(argv):
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get("FASTRNN_DEBUG", "") not in ("", "0")


def _error_message(exc):
    if isinstance(exc, FileNotFoundError):
        name = exc.filename if exc.filename is not None else (str(exc.args[0]) if exc.args else "")
        if exc.filename is None and exc.args and " " in str(exc.args[0]):
            return _one_line(exc.args[0])
        return f"no such file: {name}"
    if isinstance(exc, IsADirectoryError):
        return f"{exc.filename}: is a directory, expected a file"
    if isinstance(exc, PermissionError):
        return f"{exc.filename}: permission denied"
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, (CLIError, ValueError, TypeError, ImportError)):
        msg = _one_line(exc)
    else:
        msg = f"{type(exc).__name__}: {_one_line(exc)}"
    return msg or type(exc).__name__


def main(argv=None):
    """Entry point of the ``fastrnn`` command; returns the exit status."""
    debug = _wants_debug(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            rc = _run(argv)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return 0 if rc is None else int(rc)
    except SystemExit as exc:  # --help / --version
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `fastrnn info x | head -1`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 0
    except Exception as exc:  # noqa: BLE001 - the command line reports, it does not crash
        if debug:
            traceback.print_exc()
        print(f"{PROG}: error: {_error_message(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, _UsageError) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
