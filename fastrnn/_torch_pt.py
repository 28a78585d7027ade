"""Read ``torch.save(module.state_dict(), path)`` files without torch (and without running code).

A .pt file (torch >= 1.6 zip serialization) is a zip archive::

    <prefix>/data.pkl      pickle of the state dict; tensors are persistent references
    <prefix>/data/<key>    raw bytes of each storage
    <prefix>/byteorder     "little" or "big" (absent in old files: little)

``data.pkl`` is unpickled with a restricted Unpickler whose ``find_class`` only resolves
``torch._utils._rebuild_tensor_v2`` / ``_rebuild_tensor`` / ``_rebuild_parameter`` (replaced by
numpy re-implementations), the typed storage classes (replaced by dtype tags) and
``collections.OrderedDict``.  Any other global (``os.system``, ``builtins.eval``,
``torch.nn.Module`` ...) raises ValueError at the GLOBAL opcode, before anything is called.
"""

import collections
import io
import os
import pickle
import pickletools
import warnings
import zipfile

import numpy as np

from ._infer import layer_from_torch_state_dict, require_regular_file

__all__ = ["read_torch_state_dict", "load_torch"]

_BF16 = "bfloat16"
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("f4"), "DoubleStorage": np.dtype("f8"), "HalfStorage": np.dtype("f2"),
    "BFloat16Storage": _BF16, "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"),
    "ShortStorage": np.dtype("i2"), "IntStorage": np.dtype("i4"), "LongStorage": np.dtype("i8"),
    "BoolStorage": np.dtype("?"),
}
# Most elements a rebuilt tensor may have beyond its storage's (stride-0 / overlapping views).
_MAX_VIEW_ELEMENTS = 1 << 24
# Largest plausible uncompressed/compressed ratio of a zip entry (deflate's maximum is ~1032).
_MAX_ZIP_RATIO = 1100
# All rebuilt tensors together: at most this many times the storages' elements, plus the slack.
_VIEW_FACTOR = 4
_VIEW_SLACK = 1 << 22
# All storages together: at most this many times the file's size, plus the slack (torch.save stores
# entries uncompressed; a deflated zip of zeros would otherwise expand a thousandfold).
_STORAGE_FACTOR = 4
_STORAGE_SLACK = 16 << 20


class _ReadOnly:
    """Objects handed to the unpickler cannot be modified by BUILD opcodes (no state poisoning)."""

    __slots__ = ()

    def __init__(self, **fields):
        for k, v in fields.items():
            object.__setattr__(self, k, v)

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __delattr__(self, name):
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __setstate__(self, state):
        raise ValueError("BUILD on a torch stand-in object is not allowed")

    def __reduce__(self):  # never pickled back out
        raise TypeError("not picklable")


class _StorageType(_ReadOnly):
    """Stands in for torch.<X>Storage: just a dtype tag."""

    __slots__ = ("name", "dtype")

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage(_ReadOnly):
    __slots__ = ("key", "array")  # array: 1-D native-endian numpy array (bfloat16 already widened to float32)


class _Function(_ReadOnly):
    """Stands in for an allowed torch function (our numpy re-implementation)."""

    __slots__ = ("name", "fn")

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


_STORAGE_TAGS = {name: _StorageType(name=name, dtype=dt) for name, dt in _STORAGE_DTYPES.items()}


def _itemsize(dtype):
    return 2 if dtype is _BF16 else dtype.itemsize


def _as_int_tuple(x, what):
    if isinstance(x, int) and not isinstance(x, bool):
        x = (x,)
    if not isinstance(x, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in x):
        raise ValueError(f"tensor {what} must be a tuple of ints (got {x!r})")
    return tuple(x)


def _rebuild(storage, storage_offset, size, stride, budget=None):
    if not isinstance(storage, _Storage):
        raise ValueError(f"tensor storage is not a storage reference (got {type(storage).__name__})")
    if not isinstance(storage_offset, int) or isinstance(storage_offset, bool) or storage_offset < 0:
        raise ValueError(f"invalid storage offset {storage_offset!r}")
    size = _as_int_tuple(size, "size")
    stride = _as_int_tuple(stride, "stride")
    if len(size) != len(stride) or len(size) > 32:
        raise ValueError(f"tensor size {size} and stride {stride} do not match")
    if any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise ValueError(f"negative tensor size/stride {size} / {stride}")
    src = storage.array
    numel = 1
    for s in size:
        numel *= s
    if numel == 0:
        return np.zeros(size, dtype=src.dtype)
    last = storage_offset + sum((n - 1) * st for n, st in zip(size, stride))
    if last >= src.shape[0]:
        raise ValueError(f"tensor view (offset {storage_offset}, size {size}, stride {stride}) runs past "
                         f"its storage of {src.shape[0]} elements")
    if numel > max(src.shape[0], _MAX_VIEW_ELEMENTS):
        raise ValueError(f"tensor view of size {size} is implausibly large for a storage of {src.shape[0]}")
    if budget is not None:
        budget.take(numel)
    item = src.dtype.itemsize
    base = src[storage_offset:]
    view = np.lib.stride_tricks.as_strided(base, shape=size, strides=tuple(s * item for s in stride),
                                           writeable=False)
    return np.array(view, copy=True, order="C")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    return _rebuild(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _rebuild(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, np.ndarray):
        raise ValueError("parameter data is not a tensor")
    return data


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _Function(name="_rebuild_tensor_v2", fn=_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_tensor"): _Function(name="_rebuild_tensor", fn=_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _Function(name="_rebuild_parameter", fn=_rebuild_parameter),
    ("collections", "OrderedDict"): collections.OrderedDict,  # a C type: BUILD/setattr on it fail
}
_ALLOWED.update({("torch", name): tag for name, tag in _STORAGE_TAGS.items()})


def _refused(path, module, name):
    hint = " (save module.state_dict(), not the module)" if module.startswith(("torch", "__torch__")) else ""
    return ValueError(f"{path}: refusing to load global '{module}.{name}' from data.pkl: only "
                      f"tensors, storages and OrderedDict are allowed{hint}")


def _prescan(data, path):
    """Static pass over the pickle opcodes before unpickling anything.

    Refuses disallowed GLOBAL/INST names, extension-registry and out-of-band-buffer opcodes, and
    memo indices or payload lengths that do not fit the data (CPython's unpickler would allocate
    memory sized from them before noticing).
    """
    limit = len(data)
    try:
        for op, arg, _pos in pickletools.genops(data):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                if (module, attr) not in _ALLOWED:
                    raise _refused(path, module, attr)
            elif name in ("EXT1", "EXT2", "EXT4", "NEXT_BUFFER", "READONLY_BUFFER"):
                raise ValueError(f"{path}: data.pkl uses the unsupported pickle opcode {name}")
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET", "FRAME"):
                if not isinstance(arg, int) or arg < 0 or arg > limit:
                    raise ValueError(f"{path}: data.pkl has an implausible {name} argument {arg!r}")
    except ValueError as exc:
        if str(exc).startswith(f"{path}: "):
            raise
        raise ValueError(f"{path}: corrupt data.pkl ({exc})") from None
    except Exception as exc:
        raise ValueError(f"{path}: corrupt data.pkl ({type(exc).__name__}: {exc})") from None


class _ElementBudget:
    """All rebuilt tensors of a file together may hold at most _VIEW_FACTOR times the elements of
    the storages read plus _VIEW_SLACK: overlapping / stride-0 views of a tiny storage cannot
    turn a few-KB file into gigabytes."""

    __slots__ = ("storage_elements", "rebuilt")

    def __init__(self):
        self.storage_elements = 0
        self.rebuilt = 0

    def take(self, numel):
        allowed = _VIEW_FACTOR * self.storage_elements + _VIEW_SLACK
        if self.rebuilt + numel > allowed:
            raise ValueError(f"the tensors' views add up to {self.rebuilt + numel} elements, more than the "
                             f"file's storages ({self.storage_elements} elements) warrant (expanded or "
                             "overlapping views?)")
        self.rebuilt += numel


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data, path, read_storage):
        super().__init__(io.BytesIO(data))
        self._path = path
        self._read_storage = read_storage
        self._storages = {}
        self._budget = _ElementBudget()
        budget = self._budget
        self._rebuilds = {
            "_rebuild_tensor_v2": _Function(name="_rebuild_tensor_v2", fn=lambda storage, storage_offset, size,
                                            stride, *a, **k: _rebuild(storage, storage_offset, size, stride,
                                                                      budget)),
            "_rebuild_tensor": _Function(name="_rebuild_tensor", fn=lambda storage, storage_offset, size, stride:
                                         _rebuild(storage, storage_offset, size, stride, budget)),
        }

    def find_class(self, module, name):
        obj = _ALLOWED.get((module, name))
        if obj is None:
            raise _refused(self._path, module, name)
        if module == "torch._utils" and name in self._rebuilds:
            return self._rebuilds[name]  # same function, counting against this file's budget
        return obj

    def persistent_load(self, pid):
        path = self._path
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ValueError(f"{path}: unsupported persistent id in data.pkl: {str(pid)[:100]}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType):
            raise ValueError(f"{path}: persistent id names no storage type ({stype!r})")
        if not isinstance(key, str) or not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise ValueError(f"{path}: malformed storage reference in data.pkl: {str(pid)[:100]}")
        cached = self._storages.get(key)
        if cached is not None:
            if cached[1] is not stype:
                raise ValueError(f"{path}: storage {key!r} is referenced with two different types")
            return cached[0]
        st = _Storage(key=key, array=self._read_storage(key, stype.dtype, numel))
        self._budget.storage_elements += numel
        self._storages[key] = (st, stype)
        return st


def _zip_entry_check(path, info):
    if info.file_size > max(info.compress_size, 1) * _MAX_ZIP_RATIO + 4096:
        raise ValueError(f"{path}: zip entry {info.filename!r} claims an implausible size {info.file_size}")


def read_torch_state_dict(path):
    """Read a torch.save()d state dict -> {name: numpy array} (torch not needed, nothing executed).

    Nested dicts (e.g. {"model": state_dict, ...} checkpoints) are flattened with "." joined
    names; non-tensor values are dropped.  BF16 tensors come back as float32 (exact).
    """
    path = require_regular_file(path)
    with open(path, "rb"):  # a missing file raises FileNotFoundError as usual
        pass
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            head = f.read(9)
        hint = ""
        if len(head) == 9 and head[8:9] == b"{":
            hint = " (this looks like a .safetensors file: use fastrnn.load)"
        elif head[:2] == b"\x80\x02":
            hint = " (this looks like a legacy pre-1.6 torch.save file: re-save it with a current torch)"
        raise ValueError(f"{path}: not a zip archive: expected a file written by torch.save (torch >= 1.6); "
                         f"the legacy non-zip format and corrupt/truncated files are not supported{hint}") from None
    except Exception as exc:  # zipfile raises assorted errors on corrupt central directories
        raise ValueError(f"{path}: corrupt zip archive ({type(exc).__name__}: {exc})") from None
    with zf:
        try:
            return _read_from_zip(path, zf)
        except ValueError as exc:
            if str(exc).startswith(f"{path}: "):
                raise
            raise ValueError(f"{path}: {exc}") from None
        except Exception as exc:  # BadZipFile, UnpicklingError, EOFError, struct.error, zlib.error, ...
            raise ValueError(f"{path}: corrupt torch file ({type(exc).__name__}: {exc})") from None


def _read_from_zip(path, zf):
    infos = {i.filename: i for i in zf.infolist()}
    pkls = [n for n in infos if n.endswith("data.pkl") and n.count("/") == 1 and n.split("/")[1] == "data.pkl"]
    if not pkls:
        hint = ""
        if any(n.endswith("constants.pkl") for n in infos):
            hint = " (this looks like a TorchScript archive; save module.state_dict() instead)"
        raise ValueError(f"{path}: no '<name>/data.pkl' in the zip: not a torch.save() file{hint}")
    if len(pkls) > 1:
        raise ValueError(f"{path}: several data.pkl records in the zip ({pkls[:5]})")
    prefix = pkls[0][: -len("data.pkl")]

    byteorder = "little"
    if prefix + "byteorder" in infos:
        bo_info = infos[prefix + "byteorder"]
        if bo_info.file_size > 16:
            raise ValueError(f"{path}: invalid byteorder record")
        byteorder = zf.read(bo_info).decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise ValueError(f"{path}: unknown byteorder {byteorder!r}")

    file_size = os.path.getsize(path)
    read_total = [0]

    def read_storage(key, dtype, numel):
        info = infos.get(f"{prefix}data/{key}")
        if info is None:
            raise ValueError(f"{path}: storage record 'data/{key}' is missing from the zip")
        nbytes = numel * _itemsize(dtype)
        if info.file_size < nbytes:
            raise ValueError(f"{path}: storage 'data/{key}' has {info.file_size} bytes, "
                             f"{numel} elements need {nbytes}")
        _zip_entry_check(path, info)
        read_total[0] += info.file_size
        if read_total[0] > _STORAGE_FACTOR * file_size + _STORAGE_SLACK:
            raise ValueError(f"{path}: the storages expand to {read_total[0]} bytes from a {file_size}-byte "
                             "file (a zip bomb?); torch.save writes them uncompressed")
        raw = zf.read(info)
        if len(raw) < nbytes:
            raise ValueError(f"{path}: storage 'data/{key}' is truncated")
        np_dtype = np.dtype("u2") if dtype is _BF16 else dtype
        arr = np.frombuffer(raw, dtype=np_dtype.newbyteorder("<" if byteorder == "little" else ">"),
                            count=numel)
        arr = arr.astype(np_dtype.newbyteorder("="))  # native order, owned copy
        if dtype is _BF16:
            arr = (arr.astype(np.uint32) << np.uint32(16)).view(np.float32)
        return arr

    pkl_info = infos[pkls[0]]
    _zip_entry_check(path, pkl_info)
    data = zf.read(pkl_info)
    with warnings.catch_warnings():  # protocol-0 strings with odd escapes warn (or raise under -W error)
        warnings.simplefilter("ignore", DeprecationWarning)
        _prescan(data, path)
        obj = _RestrictedUnpickler(data, path, read_storage).load()

    out = {}

    def flatten(d, pre, depth):
        if depth > 8:
            return
        for k, v in d.items():
            name = f"{pre}{k}"
            if isinstance(v, np.ndarray):
                out[name] = v
            elif isinstance(v, dict):
                flatten(v, name + ".", depth + 1)

    if isinstance(obj, np.ndarray):
        raise ValueError(f"{path}: holds a single tensor, not a state dict")
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: data.pkl holds a {type(obj).__name__}, expected a state dict")
    flatten(obj, "", 0)
    if not out:
        raise ValueError(f"{path}: no tensors in the state dict")
    return out


def load_torch(path, cell=None, nonlinearity="tanh", prefix=None, batch_first=None):
    """Build a fastrnn layer from a ``torch.save(module.state_dict(), path)`` file, without torch.

    The configuration is inferred from parameter names and shapes (see infer_config);
    ``cell=`` settles the cell type if needed, ``nonlinearity=`` gives an nn.RNN's nonlinearity
    (not inferable; default "tanh"), ``prefix=`` picks one RNN out of a bigger model's state dict
    (e.g. "encoder.rnn."), ``batch_first`` sets the layer's batch_first (default False).
    """
    path = os.fspath(path)
    return layer_from_torch_state_dict(read_torch_state_dict(path), source=path, cell=cell,
                                       nonlinearity=nonlinearity, prefix=prefix, batch_first=batch_first)
