"""Patient-grouped, class-stratified splits and the leakage check.

Groups are (source, patient_id) pairs: all images of one patient go to the same fold or
split. Splits use scikit-learn's ``StratifiedGroupKFold`` (shuffled, seeded). The result
does not depend on the row order of the manifest: groups are ordered by their key before
splitting, so the same manifest (in any order) and seed give the same assignment.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from cxrlib._text import shown_list
from cxrlib.data.manifest import FINDINGS_SEP, Problem, line_of

GROUP_SEP = "\x1f"


class LeakageError(ValueError):
    """Patients or duplicate images cross train/val/test (or folds); lists them."""

    def __init__(self, problems: Sequence[Problem], limit: int = 20):
        self.problems = list(problems)
        super().__init__(f"leakage: {len(self.problems)} problem(s)\n  {shown_list(self.problems, limit)}")


def group_keys(df: pd.DataFrame, group_col: str = "patient_id") -> pd.Series:
    """Group key of each row: ``source`` + ``patient_id`` (ids are unique per source only).

    Any other ``group_col`` (e.g. ``patient_group``, merged across sources) is used as is.
    """
    if group_col == "patient_id" and "source" in df.columns:
        return df["source"].astype(str) + GROUP_SEP + df[group_col].astype(str)
    return df[group_col].astype(str)


def _strata(df: pd.DataFrame, label_col: str) -> np.ndarray:
    """Stratification target: the label, or for multi-label rows (empty label) the rarest finding."""
    labels = df[label_col].astype(str) if label_col in df.columns else pd.Series([""] * len(df), index=df.index)
    if (labels != "").all() or "findings" not in df.columns:
        return labels.to_numpy()
    exploded = df["findings"].astype(str).reset_index(drop=True).str.split(FINDINGS_SEP).explode()  # per finding
    table = pd.DataFrame({"row": exploded.index.to_numpy(), "finding": exploded.to_numpy()})
    table["n"] = table["finding"].map(exploded.value_counts())
    # the rarest finding of each row (ties: alphabetical), vectorised
    first = table.sort_values(["n", "finding"], kind="stable").drop_duplicates("row").set_index("row")["finding"]
    rarest = first.reindex(np.arange(len(df))).fillna("").to_numpy()
    return np.where(labels.to_numpy() != "", labels.to_numpy(), rarest)


def _stratified_group_kfold(k: int, seed: int):
    """scikit-learn's ``StratifiedGroupKFold`` with its per-group fold choice vectorised.

    sklearn places groups one by one (30,805 NIH patients), and for each it recomputes a
    ``np.std`` over the folds k times: ~7 s of CPU for the full NIH table. The subclass
    evaluates the k candidate folds in one NumPy expression (same criterion: mean over
    classes of the per-class std of the fold fractions; same tie rule: ``isclose`` then
    fewer samples), so the split is the same and ~10x faster (``benchmarks/bench_data_prep.py``).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    class _Fast(StratifiedGroupKFold):
        def _find_best_fold(self, y_counts_per_fold, y_cnt, group_y_counts):
            k = y_counts_per_fold.shape[0]
            # candidate i = the fold counts with the group added to fold i: [k, k, C]
            cand = y_counts_per_fold[None, :, :] + np.eye(k, dtype=y_counts_per_fold.dtype)[:, :, None] \
                * group_y_counts[None, None, :]
            x = cand / y_cnt.reshape(1, 1, -1)
            # np.std(x, axis=1) spelled out as numpy computes it (bit-identical, without its wrappers)
            dev = x - np.add.reduce(x, axis=1, keepdims=True) / k
            std = np.sqrt(np.add.reduce(dev * dev, axis=1) / k)               # [k, C]
            evals = (np.add.reduce(std, axis=1) / std.shape[1]).tolist()     # [k] mean over classes
            samples = np.add.reduce(y_counts_per_fold, axis=1).tolist()      # [k]
            best, min_eval, min_samples = None, float("inf"), float("inf")
            for i, (ev, n) in enumerate(zip(evals, samples)):
                close = min_eval != float("inf") and abs(ev - min_eval) <= 1e-8 + 1e-5 * abs(min_eval)  # np.isclose
                if ev < min_eval or (close and n < min_samples):
                    best, min_eval, min_samples = i, ev, n
            return best

    cls = _Fast if hasattr(StratifiedGroupKFold, "_find_best_fold") else StratifiedGroupKFold
    return cls(n_splits=k, shuffle=True, random_state=seed)


def _fold_of_rows(df: pd.DataFrame, k: int, seed: int, label_col: str, group_col: str) -> np.ndarray:
    """StratifiedGroupKFold fold index of every row (order-independent)."""
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    groups = group_keys(df, group_col).to_numpy()
    n_groups = len(set(groups))
    if n_groups < k:
        raise ValueError(f"{n_groups} patient group(s) cannot fill {k} folds")
    y = _strata(df, label_col)
    order = np.lexsort((df["path"].astype(str).to_numpy(), groups))  # canonical row order
    folds = np.empty(len(df), dtype=int)
    sgkf = _stratified_group_kfold(k, seed)
    for fold, (_, test) in enumerate(sgkf.split(np.zeros(len(df)), y[order], groups[order])):
        folds[order[test]] = fold
    return folds


def kfold_split(df: pd.DataFrame, k: int, seed: int = 0, label_col: str = "label",
                group_col: str = "patient_id") -> pd.DataFrame:
    """Copy of ``df`` with a ``fold`` column (0..k-1), grouped by patient, stratified by class.

    Args:
        df: manifest.
        k: number of folds.
        seed: shuffling seed.
        label_col: class column (multi-label rows with an empty label are stratified by
            their rarest finding).
        group_col: patient column (combined with ``source``).
    """
    out = df.copy()
    out["fold"] = _fold_of_rows(df, k, seed, label_col, group_col).astype(str)
    return out


def holdout_split(df: pd.DataFrame, test_size: float = 0.2, val_size: float = 0.1, seed: int = 0,
                  label_col: str = "label", group_col: str = "patient_id",
                  keep_existing_test: bool = True) -> pd.DataFrame:
    """Copy of ``df`` with a ``split`` column (train/val/test), grouped and stratified.

    The test part is one fold of ``round(1/test_size)`` StratifiedGroupKFold folds; the
    validation part is carved from the rest the same way, so the fractions are approximate
    (whole patients move). When ``split`` already marks official test rows (NIH
    ``test_list.txt``) and ``keep_existing_test``, they stay the test set and only the
    validation part is drawn.

    Args:
        df: manifest.
        test_size: fraction of images for test (0 for none).
        val_size: fraction of images for validation (of the whole set; 0 for none).
        seed: shuffling seed.
        label_col: class column.
        group_col: patient column (combined with ``source``).
        keep_existing_test: keep rows already marked ``test``.
    """
    if not 0 <= test_size < 1 or not 0 <= val_size < 1 or test_size + val_size >= 1:
        raise ValueError(f"test_size={test_size} and val_size={val_size} must be in [0, 1) and sum below 1")
    out = df.copy()
    split = np.array(["train"] * len(df), dtype=object)
    existing = out["split"].astype(str).to_numpy() if "split" in out.columns else np.array([""] * len(df))
    if keep_existing_test and (existing == "test").any():
        split[existing == "test"] = "test"
        test_size = 0.0
    elif test_size > 0:
        folds = _fold_of_rows(df, max(2, round(1 / test_size)), seed, label_col, group_col)
        split[folds == 0] = "test"
    rest = np.flatnonzero(split == "train")
    if val_size > 0 and len(rest):
        frac = val_size / (1 - test_size) if test_size else val_size / max(len(rest) / len(df), 1e-9)
        sub = df.iloc[rest]
        folds = _fold_of_rows(sub, max(2, round(1 / min(frac, 0.5))), seed + 1, label_col, group_col)
        split[rest[folds == 0]] = "val"
    out["split"] = split.astype(str)
    return out


def _patient_name(key: str) -> str:
    source, _, pid = key.partition(GROUP_SEP)
    return f"patient {pid} (source {source})" if pid else f"patient {source}"


def _crossing_groups(keys: pd.Series, part: pd.Series, kind: str, col: str, subject=_patient_name) -> list[Problem]:
    """One Problem per key found in more than one part, naming the parts and CSV lines."""
    problems = []
    used = part != ""
    table = pd.DataFrame({"key": keys[used], "part": part[used]})
    n_parts = table.groupby("key")["part"].nunique()
    for key in n_parts.index[n_parts > 1]:
        members = table[table["key"] == key]
        where = "; ".join(f"{p} (line{'s' if len(ix) > 1 else ''} {', '.join(str(line_of(i)) for i in ix[:5])}"
                          f"{', ...' if len(ix) > 5 else ''})"
                          for p, ix in sorted(members.groupby("part").groups.items()))
        problems.append(Problem(line_of(members.index[0]), col, f"{subject(key)} is in several {kind}s: {where}"))
    return problems


def check_leakage(df: pd.DataFrame, pairs: pd.DataFrame | None = None,
                  group_col: str = "patient_id") -> list[Problem]:
    """Patients and duplicate images that cross splits or folds (empty list = no leakage).

    Checks the ``split`` column and the ``fold`` column (each when present): one image
    file (``path``) in two parts, a patient (source, patient_id) in two parts, an exact
    copy (same ``sha1``) in two parts, and each duplicate pair of ``pairs`` (from
    :func:`cxrlib.data.dedup.find_duplicates`) whose images are in two parts.

    Args:
        df: manifest with ``split`` and/or ``fold``.
        pairs: duplicate pairs (path_a, path_b, ...), optional.
        group_col: patient column.
    """
    df = df.reset_index(drop=True)
    problems: list[Problem] = []
    keys = group_keys(df, group_col)
    line = {p: line_of(i) for i, p in enumerate(df["path"])} if pairs is not None and len(pairs) else {}
    for col, kind in (("split", "split"), ("fold", "fold")):
        if col not in df.columns:
            continue
        part = df[col].astype(str)
        problems += _crossing_groups(df["path"].astype(str), part, kind, "path",
                                     subject=lambda key: f"image file {key}")
        problems += _crossing_groups(keys, part, kind, group_col)
        if "sha1" in df.columns:
            sha = df["sha1"].astype(str)
            problems += _crossing_groups(sha, part.where(sha != "", ""), kind, "sha1",
                                         subject=lambda key: f"identical image file (sha1 {key[:12]})")
        if pairs is not None and len(pairs):
            where = dict(zip(df["path"], part))
            for a, b, kind_ in zip(pairs["path_a"], pairs["path_b"], pairs.get("kind", ["dup"] * len(pairs))):
                pa, pb = where.get(a, ""), where.get(b, "")
                if pa and pb and pa != pb:
                    problems.append(Problem(line.get(a), "path", f"{kind_} duplicate images cross {kind}s: "
                                            f"{a} ({pa}, line {line.get(a)}) and {b} ({pb}, line {line.get(b)})"))
    return problems


def assert_no_leakage(df: pd.DataFrame, pairs: pd.DataFrame | None = None, group_col: str = "patient_id") -> None:
    """Raise :class:`LeakageError` naming every crossing patient/duplicate (see :func:`check_leakage`)."""
    problems = check_leakage(df, pairs, group_col)
    if problems:
        raise LeakageError(problems)


def split_summary(df: pd.DataFrame, part_col: str = "split", label_col: str = "label") -> pd.DataFrame:
    """Images per part and class plus patients per part (for printing)."""
    keys = group_keys(df)
    labels = df[label_col].where(df[label_col] != "", "(none)") if label_col in df.columns else "(none)"
    table = pd.crosstab(df[part_col], labels)
    table["images"] = table.sum(axis=1)
    table["patients"] = keys.groupby(df[part_col]).nunique()
    return table
