"""Stage-level row selection and splitting: what one training stage trains, validates and tests on.

One home next to :mod:`cxrlib.data.splits` for choosing rows. Each function returns what it keeps
and what it sets aside (or counts it), so callers record every set-aside row with its reason.

Before the split, used by the one preparation path (:mod:`cxrlib.data.prepare`) and the notebooks:

- ``without_label(rows) -> (kept, set aside)``, ``cap_per_class(rows, cap, seed)``,
  ``sample_per_class(rows, classes, per_class, seed)`` (image grids),
  ``few_patient_classes(rows, folds)`` (classes with fewer patients than folds: a warning).

Per training stage (moved unchanged from ``cxrlib.experiment``):

- ``prepare_frame(cfg) -> (rows, excluded)``: read a stage's manifest and select its rows
  (empty labels of a single-label task, ``exclude_patients_of``, ``max_images``), every
  set-aside group counted with its reason.
- ``split_frame(rows, cfg) -> (splits, description)``: train/val/test of a stage: the test fold
  of a k-fold manifest with a patient-grouped inner validation fold, the manifest's ``split``
  column, or a patient-grouped hold-out split.
- ``oversample(rows, seed)``: balanced sampling by repetition.
- ``NORMAL_DISEASE`` and ``normal_disease(findings)``: paper A's grouping of the NIH
  ChestX-ray14 findings (Basu et al. 2020, arXiv 2004.10507): ``No Finding``/empty = normal.

``cfg`` is a resolved stage config (:func:`cxrlib.experiment.resolve_config`); only the keys
``manifest``, ``task``, ``exclude_patients_of``, ``max_images``, ``split_seed``, ``fold``,
``val_fraction`` and ``test_fraction`` are read.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from cxrlib.data import manifest as mf
from cxrlib.data.taxonomy import NO_FINDING, is_multilabel, task_classes

NORMAL_DISEASE = ("normal", "disease")


def stage_classes(task: str) -> tuple[list[str], bool]:
    """(output names, multi_label) of a stage task (incl. the ``normal_disease`` grouping)."""
    if task == "normal_disease":
        return list(NORMAL_DISEASE), False
    return list(task_classes(task)), is_multilabel(task)


def normal_disease(findings: str) -> str:
    """``normal`` when ``findings`` is empty or only ``No Finding``, else ``disease``."""
    f = [x for x in mf.split_findings(findings) if x]
    return "normal" if not f or f == [NO_FINDING] else "disease"


def prepare_frame(cfg: Mapping[str, Any]) -> tuple[pd.DataFrame, list[dict]]:
    """Read and filter the stage's manifest. Returns (rows, excluded-row records with reasons).

    Single-label tasks drop rows with an empty ``label`` (e.g. multi-label NIH rows in a
    merged manifest), counted and reported; labels outside the task's classes are an error
    (raised by the pipeline naming the CSV line).
    """
    df = mf.read_manifest(cfg["manifest"])
    df.attrs["manifest_path"] = cfg["manifest"]
    excluded: list[dict] = []
    task = cfg["task"]
    if task == "normal_disease":
        df = df.assign(label=[normal_disease(v) for v in df["findings"]])
    elif not is_multilabel(task):
        empty = df["label"] == ""
        if empty.any():
            excluded.append({"reason": f"empty label (not part of task {task})", "n": int(empty.sum())})
            df = df[~empty]
    if cfg["exclude_patients_of"]:
        other = mf.read_manifest(cfg["exclude_patients_of"])
        keys = set(zip(other["source"], other["patient_id"]))
        hit = np.array([k in keys for k in zip(df["source"], df["patient_id"])], dtype=bool)
        if hit.any():
            excluded.append({"reason": f"patient also in {cfg['exclude_patients_of']}",
                             "n": int(hit.sum())})
            df = df[~hit]
    if cfg["max_images"] and len(df) > int(cfg["max_images"]):
        frac = int(cfg["max_images"]) / len(df)
        strata = df["findings"].map(normal_disease) if stage_classes(task)[1] else df["label"]
        keep = df.groupby(strata, group_keys=False).sample(frac=frac, random_state=cfg["split_seed"])
        excluded.append({"reason": f"subsampled to max_images={cfg['max_images']} (class-stratified)",
                         "n": int(len(df) - len(keep))})
        df = keep.sort_index()
    if len(df) == 0:
        raise ValueError(f"{cfg['manifest']}: no rows left for task {task!r} ({excluded})")
    return df.reset_index(drop=True), excluded


def split_frame(df: pd.DataFrame, cfg: Mapping[str, Any]) -> tuple[dict[str, pd.DataFrame], str]:
    """Train/val/test rows of a stage (see module docstring). Returns (splits, description).

    Uses :func:`cxrlib.data.splits.kfold_split` / ``holdout_split`` (patient-grouped,
    class-stratified) for everything it has to split itself.
    """
    from cxrlib.data import splits

    seed = int(cfg["split_seed"])
    if cfg["fold"] is not None:
        if "fold" not in df.columns or (df["fold"] == "").any():
            raise ValueError(f"{cfg['manifest']}: fold={cfg['fold']} needs a complete 'fold' column; "
                             "use cross_validate() (adds folds with cxrlib.data.splits.kfold_split) "
                             "or `cxr data split`")
        f = str(cfg["fold"])
        test = df[df["fold"].astype(str) == f]
        if len(test) == 0:
            raise ValueError(f"{cfg['manifest']}: no row has fold {f}")
        rest = df[df["fold"].astype(str) != f].drop(columns=["fold"])
        k_inner = max(2, int(round(1 / float(cfg["val_fraction"]))))
        inner = splits.kfold_split(rest, k=k_inner, seed=seed)
        val_mask = inner["fold"].astype(str) == "0"
        return ({"train": inner[~val_mask].drop(columns=["fold"]), "val": inner[val_mask].drop(columns=["fold"]),
                 "test": test},
                f"test = fold {f}; val = inner patient-grouped fold 0 of {k_inner} of the other folds")
    if "split" in df.columns and (df["split"] != "").all():
        parts = {s: df[df["split"] == s] for s in mf.SPLITS}
        if len(parts["train"]) == 0 or len(parts["val"]) == 0:
            raise ValueError(f"{cfg['manifest']}: the 'split' column needs train and val rows")
        if len(parts["test"]) == 0:
            parts["test"] = parts["val"]
            return parts, "manifest 'split' column; no test rows: test = val"
        return parts, "manifest 'split' column"
    d = splits.holdout_split(df, test_size=float(cfg["test_fraction"]), val_size=float(cfg["val_fraction"]),
                             seed=seed)
    return {s: d[d["split"] == s] for s in mf.SPLITS}, \
        f"holdout_split(test={cfg['test_fraction']}, val={cfg['val_fraction']}, seed={seed})"


def oversample(df: pd.DataFrame, seed: int = 0, label_col: str = "label") -> pd.DataFrame:
    """Balanced sampling: repeat rows of the smaller classes (with replacement) up to the largest.

    Args:
        df: training rows.
        seed: sampling seed.
        label_col: class column.
    """
    counts = df[label_col].value_counts()
    top = int(counts.max())
    parts = [df]
    for i, (label, n) in enumerate(counts.items()):
        if n < top:
            parts.append(df[df[label_col] == label].sample(top - int(n), replace=True, random_state=seed + i))
    return pd.concat(parts).reset_index(drop=True)


_normal_disease = normal_disease  # the name it had in cxrlib.experiment


# ----------------------------------------------------------------- before the split (data stage)
def without_label(df: pd.DataFrame, label_col: str = "label") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows with a label, rows whose label is empty), both re-indexed from 0."""
    empty = df[label_col].astype(str) == ""
    return df[~empty].reset_index(drop=True), df[empty].reset_index(drop=True)


def cap_per_class(df: pd.DataFrame, cap: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep at most ``cap`` random rows per class (seeded); return (kept, set aside).

    The draw depends on the row order (the adapters' order), not on the folder names the
    collections are stored under.

    Args:
        df: manifest with ``label`` (and ``path``).
        cap: rows kept per class.
        seed: sampling seed.
    """
    if cap < 1:
        raise ValueError(f"max_per_class must be >= 1, got {cap}")
    keep = df.groupby("label", group_keys=False).apply(
        lambda g: g.sample(n=min(cap, len(g)), random_state=seed), include_groups=False).index
    kept = df.loc[sorted(keep)]
    return kept.reset_index(drop=True), df.drop(index=keep).reset_index(drop=True)


def sample_per_class(df: pd.DataFrame, classes, per_class: int = 4, seed: int = 0) -> pd.DataFrame:
    """Up to ``per_class`` random rows of each class, in class order (for image grids).

    Args:
        df: manifest with a ``label`` column.
        classes: class order.
        per_class: rows per class.
        seed: sampling seed.
    """
    parts = [df[df["label"] == c].sample(n=min(per_class, int((df["label"] == c).sum())), random_state=seed)
             for c in classes]
    return pd.concat(parts).reset_index(drop=True) if parts else df.head(0)


def few_patient_classes(df: pd.DataFrame, folds: int, group_col: str = "patient_group",
                        label_col: str = "label") -> dict[str, int]:
    """Classes with fewer patient groups than ``folds`` (some folds will lack them): {class: groups}."""
    if label_col not in df.columns or group_col not in df.columns or not folds:
        return {}
    labelled = df[df[label_col].astype(str) != ""]
    counts = labelled.groupby(label_col)[group_col].nunique()
    return {str(k): int(v) for k, v in counts.items() if v < folds}
