"""safetensors reader/writer in pure numpy (no dependency on the ``safetensors`` package).

File layout (https://github.com/huggingface/safetensors):

    u64 little-endian N | N bytes of UTF-8 JSON header (space padded) | data buffer

The header maps tensor names to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets
relative to the start of the data buffer) plus an optional ``"__metadata__"`` str->str map.
Tensors are stored little-endian, C-contiguous, packed back to back without gaps or overlaps,
and the buffer ends exactly at the last tensor's end.

Generic API (usable for future quantized layers: bf16/int8 tensors plus scales)::

    write_safetensors(path, tensors, metadata=None, dtypes=None)
    tensors, metadata = read_safetensors(path)

Layer API::

    save(layer, path)          # metadata["fastrnn_config"] = json.dumps(layer.config())
    layer = load(path)         # also plain torch RNN state dicts (config inferred)
"""

import json
import os
import struct
import sys
import tempfile

import numpy as np

from ._infer import (build_layer, check_config_against, infer_config, layer_from_torch_state_dict,
                     to_float32_state_dict)

__all__ = ["write_safetensors", "read_safetensors", "read_safetensors_header", "save", "load",
           "float32_to_bf16_bits", "bf16_bits_to_float32", "METADATA_CONFIG_KEY"]

METADATA_CONFIG_KEY = "fastrnn_config"
METADATA_VERSION_KEY = "fastrnn_format"
FORMAT_VERSION = "1"
MAX_HEADER_SIZE = 100_000_000  # same limit as the reference implementation

# safetensors dtype -> numpy little-endian dtype of the stored bytes.  BF16 is stored as its bit
# pattern (uint16); read_safetensors widens it to float32 exactly unless bf16="bits".
_ST_TO_NP = {
    "BOOL": np.dtype("?"), "U8": np.dtype("u1"), "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"), "I16": np.dtype("<i2"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "U32": np.dtype("<u4"), "I32": np.dtype("<i4"), "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"), "I64": np.dtype("<i8"), "F64": np.dtype("<f8"),
}
_NP_TO_ST = {("b", 1): "BOOL", ("u", 1): "U8", ("i", 1): "I8", ("u", 2): "U16", ("i", 2): "I16",
             ("f", 2): "F16", ("u", 4): "U32", ("i", 4): "I32", ("f", 4): "F32", ("u", 8): "U64",
             ("i", 8): "I64", ("f", 8): "F64"}


# ----------------------------------------------------------------------------------------- bf16
def bf16_bits_to_float32(bits):
    """uint16 bfloat16 bit patterns -> float32 (exact)."""
    bits = np.asarray(bits, dtype=np.uint16)
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def float32_to_bf16_bits(x):
    """float32 -> uint16 bfloat16 bit patterns, round to nearest even (NaN stays NaN)."""
    x = np.array(x, dtype=np.float32, order="C")
    u = x.view(np.uint32)
    rounded = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    nan = np.isnan(x)
    rounded = np.where(nan, (u >> np.uint32(16)) | np.uint32(0x0040), rounded)
    return rounded.astype(np.uint16)


# --------------------------------------------------------------------------------------- writer
def _st_dtype_of(name, arr, override):
    is_bf16 = arr.dtype.name == "bfloat16" and arr.dtype.itemsize == 2  # ml_dtypes.bfloat16
    if override is not None:
        st = str(override).upper()
        if st not in _ST_TO_NP:
            raise ValueError(f"tensor {name!r}: unknown safetensors dtype {override!r}")
        if st == "BF16":
            if is_bf16 or arr.dtype == np.uint16:  # bit patterns
                return st, arr.view(np.uint16)
            if arr.dtype.kind == "f":
                return st, float32_to_bf16_bits(arr)
            raise ValueError(f"tensor {name!r}: BF16 needs floats or uint16 bit patterns (got {arr.dtype})")
        if is_bf16:
            arr = bf16_bits_to_float32(arr.view(np.uint16))
        return st, arr.astype(_ST_TO_NP[st].newbyteorder("="), copy=False)
    if is_bf16:
        return "BF16", arr.view(np.uint16)
    st = _NP_TO_ST.get((arr.dtype.kind, arr.dtype.itemsize))
    if st is None:
        raise ValueError(f"tensor {name!r}: dtype {arr.dtype} cannot be stored in safetensors")
    return st, arr


def write_safetensors(path, tensors, metadata=None, dtypes=None):
    """Write ``tensors`` (name -> array) and ``metadata`` (str -> str) to a .safetensors file.

    ``dtypes`` optionally maps names to safetensors dtype strings, e.g. ``{"w": "BF16"}`` for a
    uint16 array holding bfloat16 bit patterns (see float32_to_bf16_bits).  Tensors are laid out
    by decreasing element size (keeps every tensor aligned), then by name.  The file is written to
    a temporary name and renamed into place.
    """
    path = os.fspath(path)
    dtypes = dict(dtypes or {})
    unknown = set(dtypes) - set(tensors)
    if unknown:
        raise ValueError(f"dtypes= names tensors that are not given: {sorted(unknown)}")
    entries = []
    for name, arr in tensors.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"tensor names must be non-empty strings (got {name!r})")
        if name == "__metadata__":
            raise ValueError("'__metadata__' is reserved and cannot be a tensor name")
        arr = np.asarray(arr)
        st, arr = _st_dtype_of(name, arr, dtypes.get(name))
        le = _ST_TO_NP[st]
        arr = arr.astype(le, copy=False)
        if not arr.flags.c_contiguous:  # (np.ascontiguousarray would turn 0-d into 1-d)
            arr = arr.copy(order="C")
        entries.append((name, st, arr))
    entries.sort(key=lambda e: (-_ST_TO_NP[e[1]].itemsize, e[0]))

    header = {}
    if metadata is not None:
        meta = {}
        for k, v in dict(metadata).items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError(f"metadata must map str to str (got {k!r}: {type(v).__name__})")
            meta[k] = v
        header["__metadata__"] = meta
    offset = 0
    for name, st, arr in entries:
        header[name] = {"dtype": st, "shape": [int(s) for s in arr.shape],
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    hbytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    hbytes += b" " * (-(8 + len(hbytes)) % 8)

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(hbytes)))
            f.write(hbytes)
            for _, _, arr in entries:
                if arr.nbytes:
                    f.write(memoryview(arr.reshape(-1)).cast("B"))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


# --------------------------------------------------------------------------------------- reader
def _parse_header(path, f, file_size):
    """Read and validate the header; returns (entries sorted by offset, metadata, data_start)."""
    if file_size < 8:
        raise ValueError(f"{path}: not a safetensors file (only {file_size} bytes, need an 8-byte header length)")
    head = f.read(8)
    (n,) = struct.unpack("<Q", head)
    if head.startswith(b"PK\x03\x04") and n > file_size - 8:
        raise ValueError(f"{path}: not a safetensors file: this is a zip archive (a torch.save() .pt file? "
                         f"use fastrnn.load_torch)")
    if n > MAX_HEADER_SIZE:
        raise ValueError(f"{path}: header length {n} exceeds the {MAX_HEADER_SIZE}-byte limit (corrupt file?)")
    if n > file_size - 8:
        raise ValueError(f"{path}: header length {n} is larger than the file ({file_size} bytes; truncated?)")
    raw = f.read(n)
    if len(raw) != n:
        raise ValueError(f"{path}: file truncated while reading the header")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: header is not valid UTF-8 ({exc})") from None
    if not text.startswith("{"):
        raise ValueError(f"{path}: header does not start with '{{' (not a safetensors file?)")

    def no_dupes(pairs):
        d = {}
        for k, v in pairs:
            if k in d:
                raise ValueError(f"duplicate key {k!r}")
            d[k] = v
        return d

    try:
        header = json.loads(text, object_pairs_hook=no_dupes)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{path}: header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header must be a JSON object")

    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"{path}: __metadata__ must map strings to strings")

    data_start = 8 + n
    data_len = file_size - data_start
    entries = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise ValueError(f"{path}: tensor {name!r}: entry must be a JSON object")
        missing = [k for k in ("dtype", "shape", "data_offsets") if k not in info]
        if missing:
            raise ValueError(f"{path}: tensor {name!r}: missing {', '.join(missing)}")
        st, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(st, str) or st not in _ST_TO_NP:
            raise ValueError(f"{path}: tensor {name!r}: unknown or unsupported dtype {st!r} "
                             f"(supported: {', '.join(sorted(_ST_TO_NP))})")
        if (not isinstance(shape, list) or len(shape) > 64
                or not all(type(s) is int and s >= 0 for s in shape)):
            raise ValueError(f"{path}: tensor {name!r}: invalid shape {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(type(o) is int for o in offs) or not 0 <= offs[0] <= offs[1]):
            raise ValueError(f"{path}: tensor {name!r}: invalid data_offsets {offs!r}")
        numel = 1
        for s in shape:
            numel *= s
        nbytes = numel * _ST_TO_NP[st].itemsize
        if offs[1] - offs[0] != nbytes:
            raise ValueError(f"{path}: tensor {name!r}: shape {shape} of {st} needs {nbytes} bytes "
                             f"but data_offsets {offs} span {offs[1] - offs[0]}")
        if offs[1] > data_len:
            raise ValueError(f"{path}: tensor {name!r}: data_offsets {offs} run past the end of the data "
                             f"({data_len} bytes; truncated file?)")
        entries.append((offs[0], offs[1], name, st, tuple(shape)))
    entries.sort()
    pos = 0
    for begin, end, name, _, _ in entries:
        if begin != pos:
            what = "overlaps the previous tensor" if begin < pos else f"leaves a gap at byte {pos}"
            raise ValueError(f"{path}: tensor {name!r}: data_offsets [{begin}, {end}] {what}")
        pos = end
    if pos != data_len:
        raise ValueError(f"{path}: data buffer has {data_len} bytes but the tensors cover {pos} "
                         f"(trailing bytes or truncated file)")
    return entries, metadata, data_start


def read_safetensors_header(path):
    """Validated header: ({name: {"dtype", "shape", "data_offsets"}}, metadata, data_start)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        entries, metadata, start = _parse_header(path, f, os.fstat(f.fileno()).st_size)
    info = {name: {"dtype": st, "shape": list(shape), "data_offsets": [b, e]} for b, e, name, st, shape in entries}
    return info, metadata, start


def read_safetensors(path, *, bf16="float32"):
    """Read a .safetensors file with numpy alone -> (tensors, metadata).

    Tensors come back in file order as native-endian, C-contiguous arrays of their stored dtype,
    except BF16, which is widened exactly to float32 (``bf16="bits"`` returns the uint16 bit
    patterns instead; read_safetensors_header tells which tensors are BF16).
    """
    if bf16 not in ("float32", "bits"):
        raise ValueError(f"bf16 must be 'float32' or 'bits' (got {bf16!r})")
    path = os.fspath(path)
    tensors = {}
    with open(path, "rb") as f:  # a missing file raises FileNotFoundError as usual
        entries, metadata, start = _parse_header(path, f, os.fstat(f.fileno()).st_size)
        for begin, end, name, st, shape in entries:
            # Sizes were checked against the real file size above.
            arr = np.empty(shape, dtype=_ST_TO_NP[st])
            if end > begin:
                f.seek(start + begin)
                got = f.readinto(memoryview(arr.reshape(-1)).cast("B"))
                if got != end - begin:
                    raise ValueError(f"{path}: file truncated while reading tensor {name!r}")
            if sys.byteorder != "little" and arr.dtype.itemsize > 1:
                arr = arr.astype(arr.dtype.newbyteorder("="))
            if st == "BF16" and bf16 == "float32":
                arr = bf16_bits_to_float32(arr)
            tensors[name] = arr
    return tensors, metadata


# ----------------------------------------------------------------------------------- layer level
def save(layer, path, metadata=None):
    """Save a fastrnn layer (float32 parameters + configuration) as .safetensors.

    The tensors use PyTorch's names, so ``safetensors.torch.load_file(path)`` gives a state dict
    that the equivalent ``torch.nn`` module accepts.  Extra ``metadata`` (str -> str) is kept.
    """
    cfg = layer.config()
    meta = {"format": "pt", METADATA_VERSION_KEY: FORMAT_VERSION,
            METADATA_CONFIG_KEY: json.dumps(cfg, sort_keys=True)}
    if metadata:
        for k in metadata:
            if k in meta:
                raise ValueError(f"metadata key {k!r} is reserved")
        meta.update(metadata)
    sd = {k: np.asarray(v) for k, v in layer.state_dict().items()}
    dtypes = None
    wtype = cfg.get("dtype", "float32")
    if wtype != "float32":
        # Quantized layers store their weights at their own precision: bf16 exactly (BF16);
        # int8 as the int8 values plus one float32 scale per output row ("<name>.scale").
        from .rnn import int8_quantize
        weights = [k for k in sd if k.startswith(("weight_ih_", "weight_hh_"))]
        if wtype == "bf16":
            dtypes = {k: "BF16" for k in weights}
        else:
            for k in weights:
                q, scale = int8_quantize(sd[k])
                sd[k], sd[k + QSCALE_SUFFIX] = q, scale
    return write_safetensors(path, sd, meta, dtypes=dtypes)


QSCALE_SUFFIX = ".scale"


def _dequantize_int8(tensors, source):
    """Replace int8 weights and their "<name>.scale" rows by float32 values."""
    out = dict(tensors)
    for name in [k for k in tensors if k.endswith(QSCALE_SUFFIX)]:
        base = name[: -len(QSCALE_SUFFIX)]
        q, scale = tensors.get(base), np.asarray(tensors[name])
        if q is None or np.asarray(q).dtype != np.int8 or np.asarray(q).ndim != 2 or \
                scale.shape != (np.asarray(q).shape[0],) or scale.dtype.kind != "f":
            raise ValueError(f"{source}: int8 weight {base!r} and its scale {name!r} do not match")
        out[base] = np.asarray(q).astype(np.float32) * scale.astype(np.float32)[:, None]
        del out[name]
    return out


def load(path, cell=None, nonlinearity="tanh", prefix=None, batch_first=None):
    """Load a layer from .safetensors (numpy only).

    Files written by ``save`` carry their configuration and load back bit-identically.  Plain
    files holding a torch RNN state dict (e.g. from ``safetensors.torch.save_file``) load too:
    the configuration is inferred from names and shapes (see infer_config; ``cell=`` and
    ``nonlinearity=`` as there, ``prefix=`` picks one RNN out of a bigger model's state dict).
    ``batch_first`` overrides the stored/inferred value when given.
    """
    path = os.fspath(path)
    tensors, metadata = read_safetensors(path)
    stored = metadata.get(METADATA_CONFIG_KEY)
    version = metadata.get(METADATA_VERSION_KEY, FORMAT_VERSION)
    if stored is not None and version != FORMAT_VERSION:
        raise ValueError(f"{path}: written in fastrnn file format {version!r}; this version reads format "
                         f"{FORMAT_VERSION!r} (upgrade fastrnn)")
    if stored is not None and prefix is None:
        try:
            config = json.loads(stored)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"{path}: {METADATA_CONFIG_KEY} metadata is not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise ValueError(f"{path}: {METADATA_CONFIG_KEY} metadata must be a JSON object")
        sd = _dequantize_int8(tensors, path) if config.get("dtype") == "int8" else tensors
        try:
            inferred = infer_config(sd, cell=config.get("cell") if isinstance(config.get("cell"), str) else None)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        check_config_against(config, inferred, source=path)
    else:
        return layer_from_torch_state_dict(tensors, source=path, cell=cell, nonlinearity=nonlinearity,
                                           prefix=prefix, batch_first=batch_first)
    if batch_first is not None:
        config["batch_first"] = bool(batch_first)
    return build_layer(config, to_float32_state_dict(sd, source=path), source=path)
