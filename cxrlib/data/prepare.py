"""The one data-preparation path: collections -> manifests ready to train on, nothing hidden.

Used by ``cxr data build-manifests`` (:mod:`cxrlib.data.build`), by a run's data stage
(:mod:`cxrlib.report.datastage`, phantoms and real data) and by the benchmarks. Steps, in
this order, each recorded:

1. **adapters**: every collection entry is found under the data root by its published
   folder names (:mod:`cxrlib.data.adapters.collections`, or an explicit folder) and read
   by its adapter; paths become relative to the data root; adapter skips, classes not
   taken from that collection and optional collections that are absent are set aside.
2. **selection**: target rows without a label for the task, paths listed twice and rows
   above ``max_per_class`` are set aside; the target is validated (schema, labels, files;
   errors name the CSV line and column) before any long work; earlier ``split``/``fold``
   columns (NIH / Kermany official lists) are dropped: the experiment makes its own split.
3. **hashes and duplicates** (:mod:`cxrlib.data.dedup`): exact (SHA-1) and near (phash,
   verified on pixels) duplicates over both parts; inside the target one image per
   duplicate group is kept; source images that duplicate a target image leave the source
   (a model must not pretrain on target test images).
4. **patient groups**: patients that share a duplicate image are one group
   (``patient_group``): one image published under two ids or in two collections.
5. **split**: patient-group-grouped, class-stratified k folds (``fold``) and/or hold-out
   (``split``) with scikit-learn's StratifiedGroupKFold (:mod:`cxrlib.data.splits`); a
   class with fewer patients than folds gives a note.
6. **leakage check**: no patient group, identical file or duplicate pair crosses folds or
   splits (:class:`cxrlib.data.splits.LeakageError` otherwise).

The result holds the manifests plus every set-aside row with its part and reason.
Papers: Basu et al. 2020 (arXiv 2004.10507) and Bassi & Attux 2020 (arXiv 2005.01578)
merge NIH ChestX-ray14 / Kermany with the public COVID-19 collections; DeGrave et al.
2021 (Nat. Mach. Intell.) show why duplicates and patients must not cross splits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from cxrlib.data import manifest as mf
from cxrlib.data import selection
from cxrlib.data.dedup import DEFAULT_MAX_DISTANCE, DEFAULT_MIN_CORRELATION
from cxrlib.data.taxonomy import NO_FINDING, is_multilabel, task_classes

ASIDE_COLUMNS = ("part", "source", "source_row", "file", "findings", "label", "reason", "duplicate_of")
PAIR_COLUMNS = ("path_a", "path_b", "source_a", "source_b", "kind", "distance")
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


@dataclass
class Plan:
    """What to prepare: the target (and optional source) entries and every setting."""

    task: str
    target: list[Entry]
    source: list[Entry] = field(default_factory=list)
    source_task: str = "nih14"
    folds: int = 0
    test_size: float = 0.0
    val_size: float = 0.0
    seed: int = 0
    max_per_class: int | None = None
    cap_seed: int = 0
    dedup: bool = True
    max_distance: int = DEFAULT_MAX_DISTANCE
    min_correlation: float = DEFAULT_MIN_CORRELATION
    prefer: tuple[str, ...] = ()
    datasets: dict[str, str] = field(default_factory=dict)  # --dataset KEY=PATH overrides
    name: str = "data"


@dataclass
class Prepared:
    """Manifests (paths relative to ``root``), duplicate pairs, set-aside rows, notes."""

    root: Path
    target: pd.DataFrame
    source: pd.DataFrame | None
    pairs: pd.DataFrame
    set_aside: pd.DataFrame
    folders: dict[str, str] = field(default_factory=dict)  # collection -> folder under root
    notes: list[str] = field(default_factory=list)


def _aside(df: pd.DataFrame, part: str, reason, **cols) -> pd.DataFrame:
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


def effective_root(root: Path, folders: list[Path]) -> Path:
    """The data root, or the common ancestor when an explicit folder lies outside it."""
    root = Path(os.path.abspath(root))
    outside = [f for f in folders if not Path(os.path.abspath(f)).is_relative_to(root)]
    return Path(os.path.commonpath([root, *map(os.path.abspath, outside)])) if outside else root


def read_entries(entries: list[Entry], part: str, task: str, root: Path, datasets: Mapping[str, str],
                 name: str = "this experiment") -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Path], list[str]]:
    """Run the adapters of one part: (manifest, set-aside rows, folders found, notes).

    Raises:
        FileNotFoundError: a required collection is missing (every folder name tried listed).
    """
    from cxrlib.data.adapters import build_manifest
    from cxrlib.data.adapters.collections import find_collection, tried_names

    if not entries:
        raise ValueError(f"data.{part}.adapters is empty")
    found: dict[str, Path] = {}
    missing, notes = [], []
    for e in entries:
        allowed = task_classes(e.task or task) + ((NO_FINDING,) if is_multilabel(e.task or task) else ())
        typo = sorted(set(e.classes) - set(allowed))
        if typo:
            raise ValueError(f"data.{part}: collection {e.collection!r}: classes {typo} are not classes of "
                             f"{e.task or task} ({', '.join(allowed)})")
    for e in entries:
        try:
            folder = find_collection(root, e.collection, datasets.get(e.collection) or e.path,
                                     required=not e.optional)
        except FileNotFoundError as exc:
            missing.append(str(exc))
            continue
        if folder is None:
            notes.append(f"{part}: optional collection {e.collection!r} not found (tried "
                         f"{', '.join(tried_names(e.collection))}); not used")
        found[e.collection] = folder
    if missing:
        raise FileNotFoundError(f"data.{part}: " + "\n".join(missing))
    frames, asides = [], []
    for e in entries:
        folder = found[e.collection]
        if folder is None:
            asides.append(pd.DataFrame([dict(part=part, source=e.collection, source_row="", file="", findings="",
                                             label="", reason="optional collection not found", duplicate_of="")]))
            continue
        res = build_manifest(e.adapter, folder, task=e.task or task, **dict(e.options))
        prefix = Path(os.path.relpath(folder, root)).as_posix()
        man = prefix_manifest(res.manifest, prefix)
        skip = res.skipped.copy()
        skip["file"] = _prefix(skip["file"], prefix)
        asides.append(skip.assign(part=part, source=e.collection, label="", duplicate_of=""))
        if e.classes:
            multi = is_multilabel(e.task or task)
            other = ~_label_listed(man, e.classes, multi)
            asides.append(_aside(man[other], part, "class " + man.loc[other, "findings" if multi else "label"].astype(str)
                                 + f" not taken from this source in {name}"))
            man = man[~other]
        frames.append(man)
        notes += [f"{e.collection}: {n}" for n in res.notes]
    if not frames:
        raise FileNotFoundError(f"data.{part}: none of the collections was found under {root}")
    df = pd.concat(frames, ignore_index=True).fillna("").astype(str)
    aside = pd.concat(asides, ignore_index=True).fillna("").astype(str) if asides else _aside(df.head(0), part, "")
    return df, aside, found, notes


def hash_rows(df: pd.DataFrame, root: Path, cache: dict | None = None, progress: bool = False) -> pd.DataFrame:
    """``add_hashes`` with a path -> (sha1, phash) cache; decompression bombs named by file."""
    from PIL import Image

    from cxrlib.data.dedup import add_hashes

    df = df.copy()
    if cache:
        df["sha1"] = [cache.get(p, ("", ""))[0] for p in df["path"]]
        df["phash"] = [cache.get(p, ("", ""))[1] for p in df["path"]]
    try:
        out = add_hashes(df, root, progress=progress)
    except Image.DecompressionBombError as exc:
        raise ValueError(decompression_bomb_message(df, root, exc)) from None
    if cache is not None:
        cache.update({p: (s, h) for p, s, h in zip(out["path"], out["sha1"], out["phash"])})
    return out


def decompression_bomb_message(df: pd.DataFrame, root: Path, exc: Exception) -> str:
    """Name the manifest line of the first image PIL refuses as a decompression bomb."""
    from PIL import Image

    for i, p in enumerate(df["path"]):
        try:
            with Image.open(Path(root) / p):
                pass
        except Image.DecompressionBombError:
            return (f"line {mf.line_of(i)}, column 'path': {Path(root) / p}: image too large to hash safely ({exc}); "
                    "downsample it or set it aside")
        except (OSError, ValueError):
            continue
    return f"an image is too large to hash safely: {exc}"


def _pairs_within(pairs: pd.DataFrame, paths: set) -> pd.DataFrame:
    return pairs[pairs["path_a"].isin(paths) & pairs["path_b"].isin(paths)]


def _dedup(target, source, root, plan, cache, progress):
    """(target kept, source kept, duplicate pairs, set-aside frames); both get ``patient_group``."""
    from cxrlib.data.dedup import drop_duplicates, find_duplicates, patient_groups

    target = hash_rows(target, root, cache, progress)
    both = [target] + ([hash_rows(source, root, cache, progress)] if source is not None else [])
    allrows = pd.concat(both, ignore_index=True).fillna("")
    pairs = find_duplicates(allrows, root=root, max_distance=plan.max_distance,
                            min_correlation=plan.min_correlation)
    tpaths = set(target["path"])
    tpairs = _pairs_within(pairs, tpaths)
    groups = patient_groups(target, tpairs)  # patients sharing an image are one group
    kept, removed = drop_duplicates(target.assign(patient_group=groups.to_numpy()), tpairs, prefer=plan.prefer)
    asides = [_aside(removed, "target", "duplicate of another target image", duplicate_of=removed["duplicate_of"])]
    if source is not None:
        source = both[1]
        spaths = set(source["path"])
        cross = pairs[(pairs["path_a"].isin(tpaths) & pairs["path_b"].isin(spaths))
                      | (pairs["path_b"].isin(tpaths) & pairs["path_a"].isin(spaths))]
        of_target = dict(zip(cross["path_b"], cross["path_a"])) | dict(zip(cross["path_a"], cross["path_b"]))
        hit = source["path"].isin(of_target) & ~source["path"].isin(tpaths)
        asides.append(_aside(source[hit], "source", "source image duplicates a target image",
                             duplicate_of=source.loc[hit, "path"].map(of_target)))
        source = source[~hit].reset_index(drop=True)
        # copies inside the source stay (pretraining data; the source stage splits it by patient),
        # but patients sharing an image are one group there too
        spairs = _pairs_within(pairs, set(source["path"]))
        source = source.assign(patient_group=patient_groups(source, spairs).to_numpy())
    return kept, source, pairs, asides


def _select_target(target: pd.DataFrame, plan: Plan, root: Path, notes: list[str]):
    """Empty labels, repeated paths, validation, caps, earlier split columns (see module docstring)."""
    asides = []
    if not is_multilabel(plan.task):
        target, unlabeled = selection.without_label(target)
        asides.append(_aside(unlabeled, "target", f"no {plan.task} label"))
    again = target["path"].duplicated()
    asides.append(_aside(target[again], "target", "path listed twice (first kept)"))
    target = target[~again].reset_index(drop=True)
    single = not is_multilabel(plan.task)
    mf.check_manifest(target, root=root, classes=task_classes(plan.task) if single else None,
                      require_label=single, name=f"{plan.name} target")
    if plan.max_per_class and single:
        target, over = selection.cap_per_class(target, int(plan.max_per_class), int(plan.cap_seed))
        asides.append(_aside(over, "target", f"above max_per_class={plan.max_per_class}"))
    old = [c for c in ("split", "fold") if c in target.columns and (target[c] != "").any()]
    if old:
        notes.append(f"published {'/'.join(old)} columns replaced by this experiment's patient-grouped split")
    return target.drop(columns=[c for c in ("split", "fold") if c in target.columns]), asides


def split_and_check(target: pd.DataFrame, plan: Plan, pairs: pd.DataFrame | None, notes: list[str]
                    ) -> pd.DataFrame:
    """Patient-group k folds and/or hold-out split, then the leakage check (raises LeakageError)."""
    from cxrlib.data import splits

    if "patient_group" not in target.columns:  # no dedup: one group per patient
        from cxrlib.data.dedup import patient_groups

        target = target.assign(patient_group=patient_groups(target, pd.DataFrame(columns=list(PAIR_COLUMNS))))
    few = selection.few_patient_classes(target, max(plan.folds, 0))
    if few:
        notes.append("classes with fewer patients than folds (some folds lack them): "
                     + ", ".join(f"{k} {v}" for k, v in few.items()))
    out = target
    if plan.folds:
        out = splits.kfold_split(out, plan.folds, seed=plan.seed, group_col="patient_group")
    if plan.test_size or plan.val_size:
        out = splits.holdout_split(out, plan.test_size, plan.val_size, seed=plan.seed, group_col="patient_group",
                                   keep_existing_test=False)
    splits.assert_no_leakage(out, pairs, group_col="patient_group")
    splits.assert_no_leakage(out)
    order = [c for c in ("split", "label") if c in out.columns and (out[c] != "").any()] + ["path"]
    return out.sort_values(order, kind="stable").reset_index(drop=True)  # canonical row order


def prepare(plan: Plan, root: str | os.PathLike, target: pd.DataFrame | None = None,
            source: pd.DataFrame | None = None, hashes: dict | None = None, progress: bool = False) -> Prepared:
    """Run the preparation path (see the module docstring).

    Args:
        plan: entries and settings.
        root: the data root (manifest paths are relative to it, or to the common ancestor
            when a ``--dataset`` folder lies outside it; see :attr:`Prepared.root`).
        target, source: ready manifests (phantoms) instead of running the plan's adapters.
        hashes: path -> (sha1, phash) cache shared between calls.
        progress: tqdm progress bar while hashing.
    """
    root = Path(root)
    notes: list[str] = []
    asides: list[pd.DataFrame] = []
    folders: dict[str, str] = {}
    if target is None:
        from cxrlib.data.adapters.collections import find_collection

        unused = sorted(set(plan.datasets) - {e.collection for e in plan.target + plan.source})
        if unused:
            raise ValueError(f"--dataset {', '.join(unused)}: no data entry names this collection; entries name "
                             f"{', '.join(dict.fromkeys(e.collection for e in plan.target + plan.source))}")

        located = {e.collection: find_collection(root, e.collection, plan.datasets.get(e.collection) or e.path,
                                                 required=False) for e in plan.target + plan.source}
        new_root = effective_root(root, [f for f in located.values() if f is not None])
        datasets = dict(plan.datasets)
        if new_root != Path(os.path.abspath(root)):
            notes.append(f"a collection lies outside {root}: paths are relative to {new_root}")
            datasets.update({k: str(Path(os.path.abspath(f))) for k, f in located.items() if f is not None})
            root = new_root
        target, aside_t, found, n = read_entries(plan.target, "target", plan.task, root, datasets, plan.name)
        asides.append(aside_t)
        notes += n
        if plan.source:
            source, aside_s, found_s, n = read_entries(plan.source, "source", plan.source_task, root,
                                                        datasets, plan.name)
            asides.append(aside_s)
            notes += n
            found.update(found_s)
        folders = {k: Path(os.path.relpath(v, root)).as_posix() for k, v in found.items() if v is not None}
    target, selected = _select_target(target, plan, root, notes)
    asides += selected
    if source is not None:
        same = source["path"].isin(set(target["path"])) | source["path"].duplicated()
        asides.append(_aside(source[same], "source", "same image file is a target image or listed twice"))
        source = source[~same].reset_index(drop=True)
    pairs = pd.DataFrame(columns=list(PAIR_COLUMNS))
    if plan.dedup:
        target, source, pairs, dedup_asides = _dedup(target, source, root, plan, hashes, progress)
        asides += dedup_asides
    target = split_and_check(target, plan, pairs, notes)
    aside = pd.concat([a for a in asides if len(a)], ignore_index=True) if any(len(a) for a in asides) else None
    aside = (aside if aside is not None else pd.DataFrame(columns=list(ASIDE_COLUMNS))).fillna("").astype(str)
    aside = aside[list(ASIDE_COLUMNS) + [c for c in aside.columns if c not in ASIDE_COLUMNS]]
    return Prepared(root, target, source, pairs, aside, folders, notes)
