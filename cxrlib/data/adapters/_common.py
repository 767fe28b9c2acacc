"""Shared pieces of the dataset adapters: the result type, skip bookkeeping, label mapping."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from cxrlib.data.labels import resolve_label
from cxrlib.data.manifest import new_manifest, read_csv_strings
from cxrlib.data.taxonomy import is_multilabel, normalize_task

#: every extension the pipeline decodes (compared case-insensitively)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".tif", ".tiff")
SKIPPED_COLUMNS = ("source_row", "file", "findings", "reason")


@dataclass
class AdapterResult:
    """What an adapter returns.

    Attributes:
        manifest: the manifest table (see :mod:`cxrlib.data.manifest`), paths relative to
            the adapter's ``root``.
        skipped: one row per skipped metadata row or image file: ``source_row`` (CSV line
            number of the published metadata, '' for files), ``file``, ``findings``, ``reason``.
        notes: warnings a user should read (e.g. patient ids derived from file names).
    """

    manifest: pd.DataFrame
    skipped: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def skip_counts(self) -> pd.Series:
        """Number of skipped rows per reason, most frequent first."""
        if self.skipped.empty:
            return pd.Series(dtype="int64")
        return self.skipped["reason"].value_counts()


class Skips:
    """Collects skipped rows with their reason (nothing is dropped silently)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.frames: list[pd.DataFrame] = []

    def add(self, reason: str, source_row: int | str = "", file: str = "", findings: str = "") -> None:
        self.rows.append(dict(source_row=str(source_row), file=str(file), findings=str(findings), reason=reason))

    def add_frame(self, reason, source_row, file, findings) -> None:
        """Many skips at once (columns as Series/arrays or scalars; vectorised adapters)."""
        frame = pd.DataFrame({"source_row": source_row, "file": file, "findings": findings, "reason": reason})
        if len(frame):
            self.frames.append(frame.astype(str))

    def frame(self) -> pd.DataFrame:
        parts = [pd.DataFrame(self.rows, columns=list(SKIPPED_COLUMNS))] + self.frames
        return pd.concat(parts, ignore_index=True).astype(str)[list(SKIPPED_COLUMNS)]


def finish(
    rows: list[dict] | pd.DataFrame,
    skips: Skips,
    vocabulary: str | None,
    task: str | None,
    notes: Iterable[str] = ()) -> AdapterResult:
    """Build the AdapterResult: map findings to ``task`` (rows not in the task become skips).

    Labels are resolved once per distinct findings cell (NIH: ~800 cells for 112,120 rows).

    Args:
        rows: manifest rows (dicts or a DataFrame): ``findings`` filled; ``label`` may be
            preset (folders); ``_source_row`` (CSV line) and ``_reason`` (why an empty
            preset label) are used for skips and then dropped.
        skips: the skips collected while reading.
        vocabulary: label_map.csv vocabulary of the findings; None when rows carry their
            label already (generic adapters).
        task: target task, or None to leave ``label`` empty (findings only).
        notes: warnings to pass on.
    """
    df = rows.reset_index(drop=True) if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for col in ("path", "findings", "label", "_source_row", "_reason"):
        if col not in df.columns:
            df[col] = ""
    df = df.fillna("")
    task = normalize_task(task) if task else None
    if task is None or is_multilabel(task):
        df["label"] = ""
    else:
        if vocabulary is not None:
            decisions = {f: resolve_label(vocabulary, f, task) for f in df["findings"].unique()}
            df["label"] = df["findings"].map(lambda f: decisions[f].label)
            reason = df["findings"].map(lambda f: decisions[f].reason)
        else:
            reason = df["_reason"].where(df["_reason"] != "", f"not in {task}")
        out = df["label"] == ""
        skips.add_frame(reason[out], df.loc[out, "_source_row"], df.loc[out, "path"], df.loc[out, "findings"])
        df = df[~out]
    manifest = new_manifest(df.drop(columns=["_source_row", "_reason"])) if len(df) else new_manifest([]).iloc[0:0]
    return AdapterResult(manifest.reset_index(drop=True), skips.frame(), list(notes))


def scan_images(folder: Path, root: Path, skips: "Skips", recursive: bool = True) -> list[str]:
    """Paths (relative to ``root``, sorted) of every image file under ``folder``.

    Nothing disappears: every other entry is counted in ``skips`` with its reason: hidden
    files, files whose extension the decoder does not read (compared case-insensitively with
    :data:`IMAGE_EXTENSIONS`), names that are not valid UTF-8, and hidden or ``__MACOSX``
    folders (one skip per folder, with its file count).

    Args:
        folder: where to look.
        root: the root the returned paths (and skip files) are relative to.
        skips: collects the files not taken.
        recursive: descend into subfolders (else subfolders are skips too).
    """
    found: list[str] = []
    if not folder.is_dir():
        return found
    root_s = os.path.abspath(root)
    for dirpath, dirnames, filenames in os.walk(folder):
        here = os.path.relpath(os.path.abspath(dirpath), root_s)
        prefix = "" if here == "." else here.replace(os.sep, "/") + "/"
        for d in sorted(dirnames):
            hidden = d.startswith(".") or d == "__MACOSX"
            if hidden or not recursive:
                n = sum(len(f) for _, _, f in os.walk(os.path.join(dirpath, d)))
                what = "hidden folder" if hidden else "subfolder (not searched)"
                skips.add(f"{what} skipped with {n} file(s)", "", _shown(prefix + d))
        dirnames[:] = sorted(d for d in dirnames if recursive and not d.startswith(".") and d != "__MACOSX")
        for name in sorted(filenames):
            if name.isascii() and not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(prefix + name)  # fast path: the common case
                continue
            reason = file_skip_reason(name)
            if reason:
                skips.add(reason, "", _shown(prefix + name))
            else:
                found.append(prefix + name)
        if not recursive:
            break
    return found


def file_skip_reason(name: str) -> str:
    """Why a file name is not an image the pipeline reads ('' when it is one)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8 (rename the file)"
    if name.startswith("."):
        return "hidden file"
    if not name.lower().endswith(IMAGE_EXTENSIONS):
        ext = Path(name).suffix or "(none)"
        return f"not an image file (extension {ext})"
    return ""


def _shown(rel: str) -> str:
    """A relative path for reports: undecodable bytes of a file name shown as ``\\xNN``."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def by_name(paths: list[str], skips: "Skips") -> dict[str, str]:
    """File name -> relative path; a second file of the same name is a skip naming the first."""
    out: dict[str, str] = {}
    for rel in paths:
        name = rel.rsplit("/", 1)[-1]
        if name in out:
            skips.add(f"same file name as {out[name]} (only the first is used)", "", rel)
        else:
            out[name] = rel
    return out


def index_images(folder: Path, root: Path, recursive: bool = True, skips: "Skips | None" = None) -> dict[str, str]:
    """Image file name -> path relative to ``root`` (see :func:`scan_images`, :func:`by_name`)."""
    skips = Skips() if skips is None else skips
    return by_name(scan_images(folder, root, skips, recursive), skips)


def inside(root: Path, rel: str, table: Path, line: int, column: str) -> str:
    """``rel`` as a clean relative path inside ``root``.

    Raises:
        ValueError: the path is absolute or leaves ``root`` (``../x.png``), naming the row.
    """
    clean = os.path.normpath(rel.replace("\\", "/")) if rel else ""
    if os.path.isabs(rel) or clean == ".." or clean.startswith("../") or Path(rel).drive:
        raise ValueError(f"{table}: line {line}, column {column!r}: path {rel!r} leaves the collection "
                         f"folder {root}; paths must be relative to it")
    return Path(clean).as_posix() if clean not in ("", ".") else ""


def read_table(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a published metadata CSV as strings (see :func:`cxrlib.data.manifest.read_csv_strings`).

    Raises:
        FileNotFoundError: with the missing path named.
        ValueError: empty, ragged or wrongly encoded table, naming the file, line and fix.
    """
    if not path.is_file():
        raise FileNotFoundError(f"metadata file not found: {path}")
    df = read_csv_strings(path, encoding)
    df.columns = [str(c).strip() for c in df.columns]
    return df


def unlisted(on_disk: list[str], used: set[str], table: str, skips: "Skips") -> None:
    """Image files on disk that no metadata row uses become skips (nothing disappears)."""
    for rel in on_disk:
        if rel not in used:
            skips.add(f"image not listed in {table}", "", rel)


def require_columns(df: pd.DataFrame, columns: Iterable[str], path: Path) -> None:
    """Raise a ValueError naming the file and the missing columns."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")


def source_row(i: int) -> int:
    """CSV line number of positional row ``i`` of a published table (header = line 1)."""
    return int(i) + 2


def patient(source: str, pid: str) -> str:
    """Patient id unique across sources: ``<source>:<published id>`` ('' when the id is empty).

    An empty id must become a skip (``patient id not given``), never the shared id ``source:``.
    """
    pid = str(pid).strip()
    return f"{source}:{pid}" if pid else ""


def parse_mapping(value: dict | str | None) -> dict[str, str]:
    """A ``{key: value}`` option given as a dict or as ``"a:x,b:y"`` (command-line form).

    Raises:
        ValueError: an item of the string form has no ``:``.
    """
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    out = {}
    for item in str(value).split(","):
        if ":" not in item:
            raise ValueError(f"mapping item {item!r} is not of the form key:value")
        key, val = item.split(":", 1)
        out[key.strip()] = val.strip()
    return out
