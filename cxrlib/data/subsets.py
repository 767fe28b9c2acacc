"""Row selection before splitting: rows without a label for the task, class caps, samples.

Each function returns what it keeps and what it sets aside, so the caller records every
set-aside row with its reason (nothing is dropped silently). Used by the one preparation
path (:mod:`cxrlib.data.prepare`) and by the report notebooks (image grids).
"""

from __future__ import annotations

import pandas as pd


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
