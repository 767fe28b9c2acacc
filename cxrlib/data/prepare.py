"""The one data-preparation path: collections -> manifests ready to train on, nothing hidden.

Used by ``cxr data build-manifests`` (:mod:`cxrlib.data.build`), by a run's data stage
(:mod:`cxrlib.report.datastage`, phantoms and real data) and by the benchmarks. Steps, in
this order, each recorded:

1. **adapters**: every collection entry is found under the data root by its published
   folder names (:mod:`cxrlib.data.adapters.collections`, or an explicit folder) and read
   by its adapter; paths become relative to the data root; adapter skips, classes not
   taken from that collection and optional collections that are absent are set aside
   (:mod:`cxrlib.data.entries`, which also reads the ``external:`` entries of a run).
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

import pandas as pd

from cxrlib.data import manifest as mf
from cxrlib.data import selection
from cxrlib.data.dedup import DEFAULT_MAX_DISTANCE, DEFAULT_MIN_CORRELATION
from cxrlib.data.entries import (  # noqa: F401  (reading one entry lives there; names kept importable here)
    ASIDE_COLUMNS, ENTRY_KEYS, Entry, aside_rows, locate_entries, prefix_manifest, read_entries, read_entry,
)
from cxrlib.data.taxonomy import is_multilabel, task_classes

PAIR_COLUMNS = ("path_a", "path_b", "source_a", "source_b", "kind", "distance")


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


def effective_root(root: Path, folders: list[Path]) -> Path:
    """The data root, or the common ancestor when an explicit folder lies outside it."""
    root = Path(os.path.abspath(root))
    outside = [f for f in folders if not Path(os.path.abspath(f)).is_relative_to(root)]
    return Path(os.path.commonpath([root, *map(os.path.abspath, outside)])) if outside else root


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
    asides = [aside_rows(removed, "target", "duplicate of another target image", duplicate_of=removed["duplicate_of"])]
    if source is not None:
        source = both[1]
        spaths = set(source["path"])
        cross = pairs[(pairs["path_a"].isin(tpaths) & pairs["path_b"].isin(spaths))
                      | (pairs["path_b"].isin(tpaths) & pairs["path_a"].isin(spaths))]
        of_target = dict(zip(cross["path_b"], cross["path_a"])) | dict(zip(cross["path_a"], cross["path_b"]))
        hit = source["path"].isin(of_target) & ~source["path"].isin(tpaths)
        asides.append(aside_rows(source[hit], "source", "source image duplicates a target image",
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
        asides.append(aside_rows(unlabeled, "target", f"no {plan.task} label"))
    again = target["path"].duplicated()
    asides.append(aside_rows(target[again], "target", "path listed twice (first kept)"))
    target = target[~again].reset_index(drop=True)
    single = not is_multilabel(plan.task)
    mf.check_manifest(target, root=root, classes=task_classes(plan.task) if single else None,
                      require_label=single, name=f"{plan.name} target")
    if plan.max_per_class and single:
        target, over = selection.cap_per_class(target, int(plan.max_per_class), int(plan.cap_seed))
        asides.append(aside_rows(over, "target", f"above max_per_class={plan.max_per_class}"))
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
        asides.append(aside_rows(source[same], "source", "same image file is a target image or listed twice"))
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
