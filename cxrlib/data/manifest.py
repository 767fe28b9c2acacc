"""The manifest: one CSV table format for every dataset cxrlib reads.

Schema (one row per image):

==============  ========  ===============================================================
column          required  meaning
==============  ========  ===============================================================
path            yes       image path relative to the data root (``/`` separators)
patient_id      yes       patient identifier, unique within ``source`` (splits group by it)
source          yes       collection the image comes from (``nih``, ``covid-chestxray``, ...)
view            yes       projection as published (``PA``, ``AP``, ``AP Supine``, ...; may be empty)
findings        yes       ``|``-separated source labels, NIH style (``Effusion|Pneumonia``)
label           yes       target class of the task, or empty (multi-label source rows)
split           no        ``train``, ``val`` or ``test``
fold            no        cross-validation fold index (0..k-1) of the row
sha1            no        SHA-1 of the image file (exact duplicates)
phash           no        64-bit perceptual hash as 16 hex digits (near duplicates)
mask_path       no        ground-truth lesion mask (phantoms), relative to the data root
shortcut        no        1 if a burnt-in text marker was drawn (phantoms), else 0
text_box        no        ``x,y,w,h`` of the burnt-in text marker in stored-image pixels ('' if none)
lr_box          no        ``x,y,w,h`` of an L/R side marker (phantoms; not class-correlated)
patient_group   no        patients merged because they share a duplicate image (splits group by it)
age, sex        no        patient age in years and sex, as published
ctr, subtype    no        phantoms only: cardiothoracic ratio; pneumonia subtype (bacterial/viral)
==============  ========  ===============================================================

All values are read as strings (``keep_default_na=False``), so nothing is silently turned
into NaN. Row numbers in error messages are the CSV line numbers (header = line 1).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from cxrlib._text import shown_list

REQUIRED_COLUMNS: tuple[str, ...] = ("path", "patient_id", "source", "view", "findings", "label")
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "split", "fold", "sha1", "phash", "mask_path", "shortcut", "text_box", "lr_box",
    "patient_group", "age", "sex",
)
SPLITS: tuple[str, ...] = ("train", "val", "test")
FINDINGS_SEP = "|"


@dataclass(frozen=True)
class Problem:
    """One validation problem, located by CSV line and column."""

    line: int | None  # CSV line number (header is line 1); None for table-level problems
    column: str | None
    message: str
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        loc = ", ".join(where)
        return f"{self.severity}: {loc}: {self.message}" if loc else f"{self.severity}: {self.message}"


class ManifestError(ValueError):
    """Raised when a manifest fails validation; lists every problem with its line and column."""

    def __init__(self, name: str, problems: Sequence[Problem], limit: int = 20):
        self.name = name
        self.problems = list(problems)
        super().__init__(f"{name}: {len(self.problems)} problem(s)\n  {shown_list(self.problems, limit)}")


def line_of(index: int) -> int:
    """CSV line number of the DataFrame row at positional ``index`` (header is line 1)."""
    return int(index) + 2


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest CSV with every column as a string and no NaN conversion.

    Args:
        path: the manifest CSV file.

    Raises:
        ManifestError: the file is missing or lacks a required column.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(str(path), [Problem(None, None, "file not found")])
    try:
        df = read_csv_strings(path)
    except ValueError as exc:
        raise ManifestError(str(path), [Problem(None, None, str(exc).removeprefix(f"{path}: "))]) from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(
            str(path), [Problem(1, c, "required column is missing") for c in missing]
        )
    df.attrs["manifest_path"] = str(path)
    return df.reset_index(drop=True)


def read_csv_strings(path: str | os.PathLike, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a CSV with every value a string (no NaN conversion); errors name file, line and fix.

    Used for manifests and for the published metadata tables the adapters read.

    Args:
        path: the CSV file.
        encoding: its text encoding (Figure 1 is latin-1).

    Raises:
        ValueError: empty, ragged or wrongly encoded table, naming the file, the line (as an
            editor shows it, header = line 1) and the option that fixes it.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding=encoding)
    except UnicodeDecodeError:
        raw = path.read_bytes()
        try:
            raw.decode(encoding)
            start = 0
        except UnicodeDecodeError as exc:  # the exact offset (pandas reports one inside its buffer)
            start = exc.start
        line = raw[:start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line}: not valid {encoding} text (byte 0x{raw[start]:02x}); "
                         "give the table's encoding, e.g. --opt encoding=latin-1 "
                         "(YAML entry: options: {encoding: latin-1})"
                         ) from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: the file is empty (no header line)") from None
    except pd.errors.ParserError as exc:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        detail = (f"line {m.group(2)}: {m.group(3)} fields where the header has {m.group(1)} (quote values "
                  "that contain commas)") if m else str(exc)
        raise ValueError(f"{path}: {detail}") from None
    return df


def new_manifest(rows: Iterable[dict] | pd.DataFrame) -> pd.DataFrame:
    """Build a manifest DataFrame from row dicts, with required columns first, all strings.

    Args:
        rows: one dict per image (or a DataFrame); missing required keys become empty strings.
    """
    df = rows.reset_index(drop=True) if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for c in REQUIRED_COLUMNS:
        if c not in df.columns:
            df[c] = ""
    return order_columns(df.fillna("").astype(str))


def order_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Required columns first, then the known optional ones, then any extra columns."""
    known = [c for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if c in df.columns]
    extra = [c for c in df.columns if c not in known]
    return df[known + extra]


def write_manifest(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a manifest CSV atomically (a failed write leaves the earlier file intact).

    Args:
        df: manifest table; must have the required columns.
        path: destination CSV.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(str(path), [Problem(None, c, "required column is missing") for c in missing])
    from cxrlib.io import write_csv

    return write_csv(path, order_columns(df), index=False)


def split_findings(value: str) -> list[str]:
    """Split a ``|``-separated findings cell into its labels (empty cell -> [])."""
    return [f.strip() for f in str(value).split(FINDINGS_SEP) if f.strip()]


def validate_manifest(
    df: pd.DataFrame,
    root: str | os.PathLike | None = None,
    classes: Sequence[str] | None = None,
    require_label: bool = False,
    check_images: bool = False,
    name: str | None = None,
) -> list[Problem]:
    """Check a manifest and return every problem found (an empty list means valid).

    Checks: required columns, empty ``path``/``patient_id``/``source``, duplicate paths,
    labels outside ``classes``, ``split`` values, integer ``fold``; with ``root``, files
    that do not exist; with ``check_images``, images that cannot be decoded
    (see :func:`cxrlib.data.images.scan_images` for the full bad-image report).

    Args:
        df: the manifest table (as returned by :func:`read_manifest`).
        root: data root the ``path`` column is relative to; None skips file checks.
        classes: allowed ``label`` values; None skips the label check.
        require_label: every row must have a non-empty label (single-label tasks).
        check_images: also decode every image (slow on large sets).
        name: file name that :func:`check_manifest` puts in its error (defaults to the
            manifest's path); the problems themselves carry line and column.
    """
    problems: list[Problem] = []
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    problems += [Problem(1, c, "required column is missing") for c in missing]
    if missing:
        return problems

    for col in ("path", "patient_id", "source"):
        for i in df.index[df[col].astype(str).str.strip() == ""]:
            problems.append(Problem(line_of(i), col, "empty value"))
    prefix_only = df["patient_id"].astype(str).str.strip() == df["source"].astype(str).str.strip() + ":"
    for i in df.index[prefix_only]:  # e.g. 'nih:': an empty published id would merge all such rows
        problems.append(Problem(line_of(i), "patient_id", f"patient id {df.at[i, 'patient_id']!r} has no id after "
                                                          "the source prefix"))

    dup = df["path"].duplicated(keep="first") & (df["path"] != "")
    for i in df.index[dup]:
        first = df.index[df["path"] == df.at[i, "path"]][0]
        problems.append(Problem(line_of(i), "path", f"duplicate path {df.at[i, 'path']!r} (first on line {line_of(first)})"))

    # vectorised: 112,120 NIH rows are checked in well under a second
    if classes is not None:
        allowed = set(classes)
        lab = df["label"].astype(str)
        if require_label:
            problems += [Problem(line_of(i), "label", "empty label") for i in df.index[lab == ""]]
        for i in df.index[(lab != "") & ~lab.isin(allowed)]:
            problems.append(Problem(line_of(i), "label", f"unknown label {lab[i]!r}; expected one of {sorted(allowed)}"))

    if "split" in df.columns:
        sp = df["split"].astype(str)
        for i in df.index[(sp != "") & ~sp.isin(SPLITS)]:
            problems.append(Problem(line_of(i), "split", f"unknown split {sp[i]!r}; expected one of {list(SPLITS)}"))
    if "fold" in df.columns:
        fo = df["fold"].astype(str)
        for i in df.index[(fo != "") & ~fo.str.fullmatch(r"-?\d+")]:
            problems.append(Problem(line_of(i), "fold", f"fold {fo[i]!r} is not an integer"))

    problems += hash_problems(df)
    for col in ("path", "mask_path"):
        if col in df.columns:
            values = df[col].astype(str)
            maybe = values.str.startswith(("/", "\\")) | values.str.contains("..", regex=False) \
                | values.str.match(r"^[A-Za-z]:[\\/]")
            for i in df.index[maybe]:
                if leaves_root(values[i]):
                    problems.append(Problem(line_of(i), col, f"path {values[i]!r} leaves the data root (absolute or '..')"))

    if root is not None:
        root = Path(root)
        base = str(root)
        for col in ("path", "mask_path"):
            if col not in df.columns:
                continue
            values = df[col].astype(str).tolist()
            for i, p in zip(df.index, values):
                if p and not os.path.isfile(os.path.join(base, p)):
                    problems.append(Problem(line_of(i), col, f"file not found: {root / p}"))
        if check_images:
            from cxrlib.data.images import scan_images  # local import: PIL only when needed

            pos = [i for i, p in enumerate(df["path"]) if not leaves_root(p)]  # positions in df
            report = scan_images(df.iloc[pos], root)
            for bad in report.bad:
                problems.append(Problem(line_of(pos[bad.index]), "path", f"unreadable image {bad.path}: {bad.reason}"))
            for warn in report.warnings:
                problems.append(Problem(line_of(pos[warn.index]), "path", f"{warn.path}: {warn.reason}",
                                        severity="warning"))
    return problems


def leaves_root(path: str) -> bool:
    """True for an absolute path (also ``C:\\...``) or one whose ``..`` parts leave the data root."""
    path = str(path)
    clean = os.path.normpath(path.replace("\\", "/"))
    return os.path.isabs(path) or clean == ".." or clean.startswith("../") or bool(re.match(r"[A-Za-z]:[\\/]", path))


def hash_problems(df: pd.DataFrame) -> list[Problem]:
    """Malformed ``sha1`` (40 hex digits) and ``phash`` (16 hex digits) values, by line."""
    problems = []
    for col, n in (("sha1", 40), ("phash", 16)):
        if col not in df.columns:
            continue
        values = df[col].astype(str)
        bad = (values != "") & ~values.str.fullmatch(f"[0-9a-fA-F]{{{n}}}")
        for i in df.index[bad]:
            problems.append(Problem(line_of(i), col, f"{values[i]!r} is not {n} hex digits (clear the cell to "
                                                     "recompute it)"))
    return problems


def check_manifest(df: pd.DataFrame, **kwargs) -> pd.DataFrame:
    """Validate and raise :class:`ManifestError` on any error; return ``df`` unchanged if valid.

    Args:
        df: the manifest table.
        **kwargs: passed to :func:`validate_manifest`.
    """
    problems = [p for p in validate_manifest(df, **kwargs) if p.severity == "error"]
    if problems:
        raise ManifestError(kwargs.get("name") or df.attrs.get("manifest_path", "manifest"), problems)
    return df
