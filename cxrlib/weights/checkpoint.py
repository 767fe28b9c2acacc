"""Read PyTorch checkpoints (``torch.save`` files) into NumPy, without PyTorch.

A ``torch.save`` file is a pickle whose tensors point at raw storages:

- **zip format** (PyTorch >= 1.6): a zip archive ``<name>/data.pkl`` (the pickle; tensors are
  persistent ids ``('storage', StorageType, key, location, numel)``) and ``<name>/data/<key>``
  (each storage's raw little-endian bytes).
- **legacy format** (PyTorch 0.4 - 1.5, e.g. jrzech/reproduce-chexnet's ``pretrained/checkpoint``):
  five pickles in a row (magic number, protocol version, system info, the object, the list
  of storage keys) followed by each storage as an int64 element count and its raw bytes.

The pickle is read by a **restricted** unpickler: only a fixed list of functions is ever
called (tensor/parameter rebuilders -> ``numpy.ndarray``, ``OrderedDict``, ``torch.Size``
-> tuple, ``copyreg`` reconstruction); every other class named in the file (``torch.nn``
modules, torchvision/torchxrayvision models, optimizers) becomes an inert :class:`Stub` that
only records its state, so a checkpoint cannot run code. Whole pickled models (``torch.save(model)``:
torchxrayvision's weight files, jrzech's ``{'model': model}``) are flattened into the state
dict ``model.state_dict()`` would give.

API: ``read_checkpoint(path) -> Checkpoint`` (``.state_dict``: name -> ndarray, ``.meta``:
the non-tensor entries, ``.format``), ``CheckpointError``.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# torch storage class -> numpy dtype (BFloat16 is read as uint16 and widened to float32).
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "UntypedStorage": np.uint8,
}
_TORCH_DTYPES = {"float64": np.float64, "float32": np.float32, "float16": np.float16,
                 "bfloat16": np.uint16, "int64": np.int64, "int32": np.int32, "int16": np.int16,
                 "int8": np.int8, "uint8": np.uint8, "bool": np.bool_}


class CheckpointError(ValueError):
    """The file is not a checkpoint this reader understands (message names the file)."""


class Stub:
    """Inert stand-in for a class named in the pickle (records constructor args and state)."""

    _qualname = "?"

    def __new__(cls, *args, **kwargs):  # NEWOBJ calls __new__ only
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, None
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<stub {self._qualname}>"


@dataclass
class _StorageType:
    name: str  # e.g. FloatStorage (resolved to a dtype in persistent_load)


@dataclass
class _Storage:
    """A storage's raw elements (filled in after the pickle for the legacy format)."""

    dtype: Any
    numel: int
    key: str
    bfloat16: bool = False
    data: np.ndarray | None = None


@dataclass
class Checkpoint:
    """What :func:`read_checkpoint` returns."""

    path: Path
    state_dict: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)  # non-tensor top-level entries
    format: str = "zip"
    source_key: str = ""  # where the weights were found: "state_dict", "model (pickled module)" ...


def _rebuild_tensor(storage, offset, size, stride, *_rest):
    return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_rest):
    return data


@dataclass
class _TensorRef:
    """A view into a storage, materialised once all storages are read."""

    storage: _Storage
    offset: int
    size: tuple
    stride: tuple

    def array(self) -> np.ndarray:
        st = self.storage
        if st.data is None:
            raise CheckpointError(f"storage {st.key} has no data")
        flat = st.data
        if st.bfloat16:  # bfloat16 = upper 16 bits of a float32
            flat = (flat.astype(np.uint32) << 16).view(np.float32)
        item = flat.itemsize
        if any(int(n) < 0 for n in self.size) or any(int(v) < 0 for v in self.stride):
            raise CheckpointError(f"storage {st.key}: negative size/stride {self.size}/{self.stride}")
        if 0 in self.size:
            return np.zeros(self.size, dtype=flat.dtype)
        last = self.offset + sum((int(n) - 1) * int(v) for n, v in zip(self.size, self.stride))
        if self.offset < 0 or last >= flat.size:  # never read outside the storage (as_strided would)
            raise CheckpointError(f"storage {st.key}: tensor of size {self.size} at offset "
                                  f"{self.offset} exceeds its {flat.size} elements")
        if not self.size:
            return np.array(flat[self.offset])
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.size, strides=[s * item for s in self.stride])
        return np.array(view)  # own copy, C order


def _rebuild_from_type(func, _new_type, args, _state=None):
    if func not in (_rebuild_tensor, _rebuild_parameter):
        raise pickle.UnpicklingError(f"refusing to call {func!r}")
    return func(*args)


_SAFE_FUNCS = {
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "Size"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("__builtin__", "set"): set,
}


def _reconstructor(cls, base, state=None):  # copyreg._reconstructor, restricted to stubs
    if isinstance(cls, type) and issubclass(cls, Stub):
        return cls()
    raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r}")


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict, load_storage):
        super().__init__(file, encoding="latin1")
        self._storages, self._load_storage = storages, load_storage
        self._stub_classes: dict[tuple[str, str], type] = {}

    def find_class(self, module, name):
        if (module, name) in _SAFE_FUNCS:
            return _SAFE_FUNCS[(module, name)]
        if (module, name) == ("copyreg", "_reconstructor"):
            return _reconstructor
        if module == "torch" and (name.endswith("Storage") or name in _TORCH_DTYPES):
            return _StorageType(name)
        key = (module, name)
        if key not in self._stub_classes:  # never import: any other name is inert
            self._stub_classes[key] = type(name, (Stub,), {"_qualname": f"{module}.{name}"})
        return self._stub_classes[key]

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) >= 2 and pid[0] == "module":
            return pid[1]  # legacy whole-model pickles record each module class and its source
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and len(pid) >= 5):
            raise pickle.UnpicklingError(f"unsupported persistent id {repr(pid)[:120]}")
        _, stype, key, _location, numel = pid[:5]
        key = str(key)
        if key not in self._storages:
            name = getattr(stype, "name", str(stype))
            dtype = _TORCH_DTYPES.get(name) or _STORAGE_DTYPES.get(name)
            if dtype is None:
                raise pickle.UnpicklingError(f"unsupported storage type {name}")
            st = _Storage(np.dtype(dtype), int(numel), key, name in ("bfloat16", "BFloat16Storage"))
            self._load_storage(st)
            self._storages[key] = st
        return self._storages[key]


def _read_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise CheckpointError(f"{path}: a zip file without data.pkl is not a torch.save checkpoint")
        prefix = pkl[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in names and zf.read(f"{prefix}byteorder").strip() == b"big":
            raise CheckpointError(f"{path}: big-endian checkpoints are not supported")

        def load(st: _Storage):
            # UntypedStorage (uint8): numel counts bytes; typed dtype comes from the tensor
            st.data = np.frombuffer(zf.read(f"{prefix}data/{st.key}"), dtype=st.dtype).copy()

        return _Unpickler(io.BytesIO(zf.read(pkl[0])), {}, load).load()


def _read_legacy(path: Path) -> Any:
    """Legacy format: magic, protocol, sys info, the object, the storage keys, raw storages."""
    buf = io.BytesIO(path.read_bytes())
    try:
        magic = pickle.load(buf, encoding="latin1")
    except Exception as exc:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a "
                              f"pickle: {type(exc).__name__}: {exc})") from exc
    if magic != LEGACY_MAGIC:
        raise CheckpointError(f"{path}: a pickle but not a torch.save checkpoint (no PyTorch magic number)")
    pickle.load(buf, encoding="latin1")  # protocol version
    sys_info = pickle.load(buf, encoding="latin1")
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
    storages: dict = {}
    obj = _Unpickler(buf, storages, lambda st: None).load()
    for key in pickle.load(buf, encoding="latin1"):
        st = storages.get(str(key))
        (numel,) = struct.unpack("<q", buf.read(8))
        if st is None:
            raise CheckpointError(f"{path}: storage {key} is listed but never referenced")
        nbytes = numel * st.dtype.itemsize
        raw = buf.read(nbytes)
        if len(raw) != nbytes:
            raise CheckpointError(f"{path}: truncated file (storage {key} needs {nbytes} bytes, "
                                  f"{len(raw)} left)")
        st.data = np.frombuffer(raw, dtype=st.dtype).copy()
    return obj


def _materialise(obj: Any) -> Any:
    """Replace every tensor reference by its ndarray, recursively (stubs included)."""
    if isinstance(obj, _TensorRef):
        return obj.array()
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _materialise(v)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v) for v in obj) if not hasattr(obj, "_fields") else obj
    if isinstance(obj, Stub):
        obj.args = tuple(_materialise(a) for a in obj.args)
        obj.state = _materialise(obj.state)
        return obj
    return obj


def _module_state(stub: Stub) -> dict | None:
    """The state dict of a pickled ``torch.nn.Module`` stub, or None if it is not one."""
    state = stub.state
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
        state = {**(state[0] or {}), **state[1]}  # (dict, slotstate)
    if not isinstance(state, dict) or "_modules" not in state or "_parameters" not in state:
        return None
    out: dict[str, np.ndarray] = {}
    for group in ("_parameters", "_buffers"):
        for k, v in (state.get(group) or {}).items():
            if isinstance(v, Stub) and v.args:  # old torch.nn.Parameter(data, ...) reduce
                v = v.args[0]
            if isinstance(v, np.ndarray):
                out[k] = v
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, Stub):
            sub = _module_state(child) or {}
            out.update({f"{name}.{k}": v for k, v in sub.items()})
    return out


def _is_state_dict(d: Any) -> bool:
    return (isinstance(d, dict) and bool(d) and all(isinstance(k, str) for k in d)
            and sum(isinstance(v, np.ndarray) for v in d.values()) >= max(1, len(d) // 2))


# Keys under which training scripts store the weights (first match wins).
_WEIGHT_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "net", "network",
                "weights", "module")


def _find_weights(obj: Any, path: Path) -> tuple[dict[str, np.ndarray], dict, str]:
    if isinstance(obj, Stub):
        sd = _module_state(obj)
        if sd:
            return sd, {}, f"pickled module {obj._qualname}"
    if _is_state_dict(obj):
        return {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}, {}, "state dict"
    if isinstance(obj, dict):
        meta = {k: v for k, v in obj.items() if not isinstance(v, (dict, Stub, np.ndarray))}
        for key in _WEIGHT_KEYS:
            if key in obj:
                try:
                    sd, _, where = _find_weights(obj[key], path)
                except CheckpointError:
                    continue
                return sd, meta, f"{key} ({where})"
        raise CheckpointError(
            f"{path}: no weights found; top-level keys: {sorted(map(str, obj))}. Expected a "
            f"state dict, a pickled model, or one under {', '.join(_WEIGHT_KEYS)}")
    raise CheckpointError(f"{path}: no weights found in a {type(obj).__name__} "
                          f"({getattr(obj, '_qualname', '')})")


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a ``torch.save`` file (zip or legacy format) into NumPy arrays, without torch.

    Args:
        path: checkpoint file (``.pt``, ``.pth``, ``.pth.tar``, ``checkpoint`` ...).

    Returns:
        :class:`Checkpoint` whose ``state_dict`` maps parameter/buffer names (as in the
        file; see :func:`cxrlib.weights.densenet.normalise_keys`) to arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        if zipfile.is_zipfile(path):
            obj, fmt = _read_zip(path), "zip"
        else:
            obj, fmt = _read_legacy(path), "legacy"
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, struct.error, KeyError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc
    obj = _materialise(obj)
    sd, meta, where = _find_weights(obj, path)
    return Checkpoint(path=path, state_dict=sd, meta=meta, format=fmt, source_key=where)
