"""Shared pieces of the dataset adapters: the result type, skip bookkeeping, label mapping."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from cxrlib.data.labels import resolve_label
from cxrlib.data.manifest import new_manifest
from cxrlib.data.taxonomy import is_multilabel, normalize_task

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
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

    def add(self, reason: str, source_row: int | str = "", file: str = "", findings: str = "") -> None:
        self.rows.append(dict(source_row=str(source_row), file=str(file), findings=str(findings), reason=reason))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(SKIPPED_COLUMNS)).astype(str)


def finish(
    rows: list[dict],
    skips: Skips,
    vocabulary: str | None,
    task: str | None,
    notes: Iterable[str] = ()) -> AdapterResult:
    """Build the AdapterResult: map findings to ``task`` (rows not in the task become skips).

    Args:
        rows: manifest row dicts (``findings`` filled; ``label`` may be preset, e.g. folders).
        skips: the skips collected while reading.
        vocabulary: label_map.csv vocabulary of the findings; None when rows carry their
            label already (generic adapters).
        task: target task, or None to leave ``label`` empty (findings only).
        notes: warnings to pass on.
    """
    kept = []
    task = normalize_task(task) if task else None
    for row in rows:
        row.setdefault("label", "")
        if task is None or is_multilabel(task):
            row["label"] = ""
            kept.append(row)
            continue
        if vocabulary is not None:
            decision = resolve_label(vocabulary, row["findings"], task)
            row["label"] = decision.label
            reason = decision.reason
        else:
            reason = "" if row["label"] else row.get("_reason", f"not in {task}")
        if row["label"]:
            kept.append(row)
        else:
            skips.add(reason, row.pop("_source_row", ""), row["path"], row["findings"])
    for row in kept:
        row.pop("_source_row", None)
        row.pop("_reason", None)
    manifest = new_manifest(kept) if kept else new_manifest([]).iloc[0:0]
    return AdapterResult(manifest.reset_index(drop=True), skips.frame(), list(notes))


def index_images(folder: Path, root: Path, recursive: bool = True) -> dict[str, str]:
    """Map image file name -> path relative to ``root`` for every image under ``folder``.

    Args:
        folder: where to look.
        root: the data root the returned paths are relative to.
        recursive: descend into subfolders.
    """
    found: dict[str, str] = {}
    if not folder.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__MACOSX")))
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                found.setdefault(name, Path(dirpath, name).relative_to(root).as_posix())
        if not recursive:
            break
    return found


def read_table(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a published metadata CSV as strings without NaN conversion.

    Args:
        path: the CSV file.
        encoding: its text encoding (Figure 1 is latin-1).

    Raises:
        FileNotFoundError: with the missing path named.
    """
    if not path.is_file():
        raise FileNotFoundError(f"metadata file not found: {path}")
    df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding=encoding)
    df.columns = [str(c).strip() for c in df.columns]
    return df


def require_columns(df: pd.DataFrame, columns: Iterable[str], path: Path) -> None:
    """Raise a ValueError naming the file and the missing columns."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")


def source_row(i: int) -> int:
    """CSV line number of positional row ``i`` of a published table (header = line 1)."""
    return int(i) + 2


def patient(source: str, pid: str) -> str:
    """Patient id unique across sources: ``<source>:<published id>``."""
    return f"{source}:{str(pid).strip()}"


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
