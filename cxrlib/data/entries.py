"""Reading one data entry: folder lookup, adapter run, label filter, paths under the data root.

A data entry is one collection of an experiment YAML (``data.target.adapters``,
``data.source.adapters`` or ``external.collections``), e.g. ``{collection: covid-chestxray,
task: paper_a, labels: [covid19]}``. This module is the one home for turning it into manifest
rows plus set-aside rows:

1. :func:`locate_entries`: every entry's ``labels`` checked against its task and every folder
   found by its published names (:mod:`cxrlib.data.adapters.collections`, or ``path:`` /
   ``--dataset KEY=PATH``), before any adapter runs; all missing collections in one message.
2. :func:`read_entry`: the adapter (:mod:`cxrlib.data.adapters`), paths made relative to the data
   root (:func:`prefix_manifest`), rows whose label the entry does not take set aside. Every
   file the adapter did not take and every row left out is a set-aside row
   (:data:`ASIDE_COLUMNS`) with its reason: files on disk = manifest rows + set-aside rows.

Used by the preparation path (:func:`cxrlib.data.prepare.prepare`, through :func:`read_entries`)
and by external validation (:func:`cxrlib.validation.collections.load_collection`).
Collections: NIH ChestX-ray14 (Wang et al. CVPR 2017), Cohen et al.'s COVID-19 collection
(arXiv 2006.11988), Figure 1, Actualmed, Kermany et al. (Cell 2018), as in Basu et al. 2020
(arXiv 2004.10507) and Bassi & Attux 2020 (arXiv 2005.01578).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from cxrlib.data.taxonomy import NO_FINDING, is_multilabel, task_classes

ASIDE_COLUMNS = ("part", "source", "source_row", "file", "findings", "label", "reason", "duplicate_of")
ENTRY_KEYS = ("collection", "adapter", "path", "root", "task", "options", "optional", "classes", "labels")


@dataclass(frozen=True)
class Entry:
    """One collection read into a part: ``{collection: nih, task: paper_a, classes: [...], ...}``.

    ``collection`` is a key of the folder-name table (``adapter`` defaults to it); ``path``
    (old name ``root``) is an explicit folder, absolute or relative to the data root;
    ``labels`` (or its older name ``classes``) limits the labels taken from it (empty = all):
    the other rows are set aside with the reason ``class X not taken from this source in NAME``,
    e.g. ``{collection: covid-chestxray, labels: [covid19]}`` keeps the Cohen non-COVID rows out
    of training so that ``external:`` can evaluate them. For a multi-label task (``nih14``) a
    row is kept when any of its ``|``-separated findings is listed.
    """

    collection: str
    adapter: str
    task: str | None = None
    path: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    optional: bool = False
    classes: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, item: Mapping[str, Any], where: str = "data") -> "Entry":
        """An entry from a YAML mapping; unknown keys are an error naming them."""
        from cxrlib.data.adapters import ADAPTERS
        from cxrlib.data.adapters.collections import COLLECTIONS

        if not isinstance(item, Mapping):
            raise ValueError(f"{where}: each adapters entry must be a mapping, got {item!r}")
        unknown = sorted(set(item) - set(ENTRY_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown} in {dict(item)}; allowed: {', '.join(ENTRY_KEYS)}")
        key = item.get("collection") or item.get("adapter")
        if not key:
            raise ValueError(f"{where}: entry {dict(item)} names neither collection nor adapter")
        adapter = item.get("adapter") or (COLLECTIONS[key].adapter if key in COLLECTIONS else key)
        if adapter not in ADAPTERS:
            raise ValueError(f"{where}: unknown adapter {adapter!r}; known: {', '.join(ADAPTERS)}")
        if item.get("classes") and item.get("labels"):
            raise ValueError(f"{where}: entry {dict(item)} gives both classes and labels (labels replaces classes)")
        classes = item.get("labels") or item.get("classes") or ()
        return cls(str(key), str(adapter), item.get("task"), item.get("path") or item.get("root"),
                   dict(item.get("options") or {}), bool(item.get("optional", False)),
                   tuple([classes] if isinstance(classes, str) else classes))


def aside_rows(df: pd.DataFrame, part: str, reason, **cols) -> pd.DataFrame:
    """Manifest rows as set-aside records (``file`` = path)."""
    out = pd.DataFrame({"part": part, "source": df.get("source", ""), "source_row": "",
                        "file": df.get("path", ""), "findings": df.get("findings", ""),
                        "label": df.get("label", ""), "reason": reason, "duplicate_of": ""}, index=df.index)
    for k, v in cols.items():
        out[k] = v
    return out


def _prefix(values: pd.Series, prefix: str) -> pd.Series:
    values = values.astype(str)
    return values.where(values == "", prefix + "/" + values) if prefix not in ("", ".") else values


def prefix_manifest(man: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """A copy of ``man`` whose ``path`` (and ``mask_path``) are under the folder ``prefix``: an
    adapter's paths, relative to its collection folder, made relative to the data root (empty stays empty)."""
    man = man.copy()
    for col in ("path", "mask_path"):
        if col in man.columns:
            man[col] = _prefix(man[col], prefix)
    return man


def _label_listed(man: pd.DataFrame, listed, multilabel: bool) -> pd.Series:
    """Bool per row: its ``label`` (multi-label: any ``|``-separated ``findings``) is in ``listed``."""
    listed = set(listed)
    if not multilabel:
        return man["label"].isin(listed)
    return man["findings"].astype(str).map(lambda v: bool(listed & set(v.split("|"))))


def looked_in(e: Entry, datasets: Mapping[str, str]) -> str:
    """Where the folder of ``e`` is looked for: its explicit folder, or every published folder name."""
    from cxrlib.data.adapters.collections import tried_names

    explicit = datasets.get(e.collection) or e.path
    return str(explicit) if explicit else ", ".join(tried_names(e.collection))


def locate_entries(entries: list[Entry], part: str, task: str, root: Path, datasets: Mapping[str, str],
                   where: str | None = None) -> tuple[dict[str, Path | None], list[str]]:
    """Check every entry's ``labels`` and find every folder, before any adapter runs.

    Returns:
        ({collection: folder, or None for an absent optional one}, notes).

    Raises:
        ValueError: a listed label is not a class of the entry's task (naming both).
        FileNotFoundError: a required collection is missing (every missing one, every folder name tried).
    """
    from cxrlib.data.adapters.collections import find_collection

    where = where or f"data.{part}"
    for e in entries:
        allowed = task_classes(e.task or task) + ((NO_FINDING,) if is_multilabel(e.task or task) else ())
        typo = sorted(set(e.classes) - set(allowed))
        if typo:
            raise ValueError(f"{where}: collection {e.collection!r}: classes {typo} are not classes of "
                             f"{e.task or task} ({', '.join(allowed)})")
    found: dict[str, Path | None] = {}
    missing, notes = [], []
    for e in entries:
        explicit = datasets.get(e.collection) or e.path
        try:
            folder = find_collection(root, e.collection, explicit, required=not e.optional)
        except FileNotFoundError as exc:
            missing.append(str(exc))
            continue
        if folder is None:
            notes.append(f"{part}: optional collection {e.collection!r} not found (tried {looked_in(e, datasets)}); "
                         "not used")
        found[e.collection] = folder
    if missing:
        raise FileNotFoundError(f"{where}: " + "\n".join(missing))
    return found, notes


def read_entry(e: Entry, folder: Path | None, part: str, task: str, root: Path, name: str = "this experiment",
               tried: str = "") -> tuple[pd.DataFrame | None, pd.DataFrame, list[str]]:
    """One located entry: its adapter's manifest with paths under ``root``, minus the labels it does not take.

    Args:
        e: the entry; ``folder``: where :func:`locate_entries` found it (None: optional and absent).
        part: ``target``, ``source`` or ``external`` (written in the set-aside rows).
        task: the part's task (the entry's own ``task`` wins).
        root: the data root the paths become relative to.
        name: named in the reason of rows whose label the entry does not take.
        tried: where an absent folder was looked for (:func:`looked_in`), named in its set-aside row.

    Returns:
        (manifest, or None when the folder is absent; set-aside rows (:data:`ASIDE_COLUMNS`):
        adapter skips with their file under ``root``, rows of unlisted labels, the absent folder; notes).
    """
    from cxrlib.data.adapters import build_manifest

    if folder is None:
        reason = "optional collection not found" + (f" (tried {tried})" if tried else "")
        return None, pd.DataFrame([dict(part=part, source=e.collection, source_row="", file="", findings="",
                                        label="", reason=reason, duplicate_of="")]), []
    res = build_manifest(e.adapter, folder, task=e.task or task, **dict(e.options))
    prefix = Path(os.path.relpath(folder, root)).as_posix()
    man = prefix_manifest(res.manifest, prefix)
    skip = res.skipped.copy()
    skip["file"] = _prefix(skip["file"], prefix)
    asides = [skip.assign(part=part, source=e.collection, label="", duplicate_of="")]
    if e.classes:
        multi = is_multilabel(e.task or task)
        other = ~_label_listed(man, e.classes, multi)
        shown = man.loc[other, "findings" if multi else "label"].astype(str)
        asides.append(aside_rows(man[other], part, "class " + shown + f" not taken from this source in {name}"))
        man = man[~other]
    aside = pd.concat(asides, ignore_index=True).fillna("").astype(str)
    return man, aside, [f"{e.collection}: {n}" for n in res.notes]


def read_entries(entries: list[Entry], part: str, task: str, root: Path, datasets: Mapping[str, str],
                 name: str = "this experiment") -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Path], list[str]]:
    """Run the adapters of one part: (manifest, set-aside rows, folders found, notes).

    Every entry is checked and located first (:func:`locate_entries`), then read (:func:`read_entry`).

    Raises:
        FileNotFoundError: a required collection is missing (every folder name tried listed).
    """
    if not entries:
        raise ValueError(f"data.{part}.adapters is empty")
    found, notes = locate_entries(entries, part, task, root, datasets)
    frames, asides = [], []
    for e in entries:
        man, aside, n = read_entry(e, found[e.collection], part, task, root, name, looked_in(e, datasets))
        asides.append(aside)
        notes += n
        if man is not None:
            frames.append(man)
    if not frames:
        raise FileNotFoundError(f"data.{part}: none of the collections was found under {root}")
    df = pd.concat(frames, ignore_index=True).fillna("").astype(str)
    aside = pd.concat(asides, ignore_index=True).fillna("").astype(str) if asides else aside_rows(df.head(0), part, "")
    return df, aside, found, notes


