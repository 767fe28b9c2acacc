"""File I/O at the bottom of cxrlib: atomic writes, JSON with NumPy values, CSV.

Every file cxrlib writes goes through here, so a crash (or Ctrl-C) never leaves a half-written
file under the final name and never leaves a ``.tmp`` behind: the bytes go to a temporary file
in the same folder, which then replaces the target with :func:`os.replace` (atomic on POSIX).
This module imports nothing from cxrlib (it is the floor every other module may stand on).

API:

- ``atomic_path(path) -> context manager yielding a temporary Path`` (write it; it becomes ``path``)
- ``write_text(path, text)``, ``write_bytes(path, data)``
- ``to_jsonable(obj, strict=True)``: NumPy/Path/pandas values as plain Python; with ``strict``
  NaN/inf become ``null`` (strict JSON), otherwise unknown objects become ``str(obj)``
- ``write_json(path, obj, strict=True)``, ``read_json(path, default=...)``
- ``write_csv(path, df, **to_csv_kwargs)``
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

__all__ = ["atomic_path", "write_text", "write_bytes", "to_jsonable", "write_json", "read_json",
           "write_csv"]

_MISSING = object()


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    The temporary name keeps the file's suffix (``suffix`` overrides it), so writers that pick
    a format by extension (``savefig``, ``np.save``, ``model.save``) still work. On any
    exception the temporary file is removed and ``path`` is left as it was.

    Raises:
        IsADirectoryError: ``path`` is an existing folder (named in the message).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; give a file name to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def to_jsonable(obj: Any, strict: bool = True) -> Any:
    """``obj`` as JSON-ready Python: mappings, sequences, NumPy scalars/arrays, Paths, sets.

    With ``strict`` NaN and inf become ``None`` (``null``; strict JSON has no NaN). Without it,
    NaN is kept (Python's JSON writes ``NaN``) and any other object becomes ``str(obj)``.
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, strict) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v, strict) for v in obj]
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    try:  # NumPy without importing it here (keeps this module light)
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if np is not None:
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.ndarray):
            return to_jsonable(obj.tolist(), strict)
        if isinstance(obj, np.floating):
            obj = float(obj)
    if isinstance(obj, float):
        if strict and (math.isnan(obj) or math.isinf(obj)):
            return None
        return obj
    if hasattr(obj, "isoformat"):  # datetime, pandas Timestamp
        return obj.isoformat()
    return obj if strict else str(obj)


def write_json(path: str | os.PathLike, obj: Any, strict: bool = True, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (see :func:`to_jsonable` for ``strict``)."""
    text = json.dumps(to_jsonable(obj, strict), indent=indent, allow_nan=not strict,
                      default=None if strict else str)
    return write_text(path, text + "\n")


def read_json(path: str | os.PathLike, default: Any = _MISSING) -> Any:
    """Read JSON from ``path``. With ``default`` given, a missing or unreadable file returns it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        if default is _MISSING:
            raise
        return default


def write_csv(path: str | os.PathLike, df, **to_csv_kwargs) -> Path:
    """Write a DataFrame to CSV atomically (``index=False`` unless given); returns the path."""
    to_csv_kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **to_csv_kwargs)
    return Path(path)
