"""External collections: manifests of data never used for training, minus any overlap with it.

An external test set is only external if none of its images or patients took part in training,
validation or model selection. Public COVID-19 collections re-publish each other's images
(Cohen et al.'s collection, Figure 1, Actualmed and the Kaggle COVID-19 Radiography Database
overlap, re-encoded or re-cropped), so before evaluation every external row is checked against
the run's training data (its source and target manifests, all folds):

1. same file path as a training image -> removed (``same file as a training image``);
2. exact (SHA-1) or near (perceptual hash verified on pixels) copy of a training image, via the
   public functions of :mod:`cxrlib.data.dedup` -> removed (``duplicates training image X``);
3. the patient (``source``, ``patient_id``) has an image in the training data, directly or
   through a duplicate -> every image of that patient removed;
4. copies inside the external collection itself -> one kept per group;
5. rows without a label for the task, or with a label the model does not output -> set aside.

Every removed row is returned with its reason (nothing is dropped silently).

``load_collection`` reads one ``external:`` entry (``{name, collection, path, task, options,
labels, optional}``, or the older ``{name, adapter, root, ...}``) through the data path's entry
reader (:mod:`cxrlib.data.entries`: folder lookup by published names, adapter, ``labels``
filter, paths under the data root), the same code that reads ``data:`` entries; its set-aside
rows (adapter skips, labels not listed, an absent optional folder) become rows of the removed
table (:func:`removed_rows`). ``labels`` keeps only the listed classes (e.g. a Cohen non-COVID
hold-out). This module's own removals are the training overlap above.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

REMOVED_COLUMNS = ["collection", "path", "source", "patient_id", "label", "reason"]


def removed_rows(aside: pd.DataFrame, collection: str) -> pd.DataFrame:
    """Set-aside rows of :func:`cxrlib.data.entries.read_entry` as rows of the removed table.

    ``path`` is the set-aside file under the data root (adapter skips: the image or metadata
    file; an absent optional folder: empty), ``source_row`` the metadata line when the adapter
    gives one; ``patient_id`` is empty (the data path does not carry it for set-aside rows).
    """
    return pd.DataFrame({"collection": collection, "path": aside["file"], "source": aside["source"],
                         "patient_id": "", "label": aside["label"], "reason": aside["reason"],
                         "source_row": aside["source_row"], "findings": aside["findings"]},
                        index=aside.index, columns=REMOVED_COLUMNS + ["source_row", "findings"]).reset_index(drop=True)


def load_collection(entry: Mapping[str, Any], data_root: str | os.PathLike, task: str,
                    datasets: Mapping[str, str] | Sequence[str] | None = None
                    ) -> tuple[pd.DataFrame | None, pd.DataFrame]:
    """Manifest of one external collection, paths relative to ``data_root``.

    Args:
        entry: ``{collection, path, name, task (default: the experiment's), options, labels,
            optional}``: ``collection`` is found under ``data_root`` by any of its published
            folder names (:mod:`cxrlib.data.adapters.collections`, as in ``data:``), ``path``
            overrides the folder and ``datasets[collection]`` (``cxr run --dataset``) overrides
            both, as for ``data:`` entries. The older form ``{adapter, root}`` names the adapter
            and the folder explicitly.
        data_root: the ``--data`` folder (or the data stage's root, when a collection lies outside).
        task: the experiment's task.
        datasets: ``data.datasets`` of the experiment (collection -> folder, or ``KEY=PATH`` items).

    Returns:
        (manifest or None when an optional folder is missing, set-aside rows as removed rows
        with reasons, :func:`removed_rows`).

    Raises:
        FileNotFoundError: a non-optional folder is missing (every folder name tried is listed).
        ValueError: unknown adapter or key, or a ``labels`` entry that is not a class of the task
            (naming the entry).
    """
    from cxrlib.data.adapters.collections import parse_datasets
    from cxrlib.data.entries import Entry, locate_entries, looked_in, read_entry

    name = entry.get("name") or entry.get("collection") or entry.get("adapter") or entry.get("root")
    where = f"external.{name}"
    e = Entry.from_mapping({k: v for k, v in entry.items() if k != "name"}, where=where)
    root = Path(data_root)
    datasets = parse_datasets(datasets)
    found, _ = locate_entries([e], "external", task, root, datasets, where=where)
    df, aside, _ = read_entry(e, found[e.collection], "external", task, root, where, looked_in(e, datasets))
    return (df.fillna("").reset_index(drop=True) if df is not None else None), removed_rows(aside, name)


def _patient_key(df: pd.DataFrame) -> pd.Series:
    s, p = df["source"].astype(str), df["patient_id"].astype(str)
    return pd.Series([pid if pid.startswith(src + ":") else f"{src}:{pid}" for src, pid in zip(s, p)],
                     index=df.index)


def training_copies(external: pd.DataFrame, training: pd.DataFrame, root: str | os.PathLike,
                    max_distance: int | None = None, min_correlation: float | None = None) -> list[str]:
    """Per external row, the training image it copies ('' if none): same SHA-1, or perceptual
    hash within ``max_distance`` bits AND thumbnail correlation >= ``min_correlation``.

    Only external x training pairs are searched (a BallTree on the training hashes, queried by
    the external ones): the cost grows with the external set, not with the square of the
    112,120-image NIH training data. Both frames need ``sha1``/``phash`` (:func:`dedup.add_hashes`).
    """
    from sklearn.neighbors import BallTree

    from cxrlib.data import dedup

    max_distance = dedup.DEFAULT_MAX_DISTANCE if max_distance is None else max_distance
    min_correlation = dedup.DEFAULT_MIN_CORRELATION if min_correlation is None else min_correlation
    by_sha = dict(zip(training["sha1"], training["path"]))
    out = [by_sha.get(h, "") for h in external["sha1"]]
    todo = [i for i, o in enumerate(out) if not o]
    if not todo or len(training) == 0 or max_distance < 0:
        return out
    tree = BallTree(dedup.hash_bits(training["phash"]), metric="hamming")  # [N_train, 64]
    near = tree.query_radius(dedup.hash_bits(external["phash"].iloc[todo]), r=(max_distance + 0.5) / dedup.HASH_BITS)
    tpaths = training["path"].tolist()
    for i, cand in zip(todo, near):
        if len(cand):
            mine = dedup.thumbnail(Path(root) / external["path"].iat[i])
            for j in sorted(cand):
                if dedup.thumbnail_correlation(mine, dedup.thumbnail(Path(root) / tpaths[j])) >= min_correlation:
                    out[i] = tpaths[j]
                    break
    return out


def remove_training_overlap(external: pd.DataFrame, training: pd.DataFrame, root: str | os.PathLike,
                            classes: Sequence[str], collection: str = "external",
                            max_distance: int | None = None, min_correlation: float | None = None,
                            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """External rows that share nothing with the training data (see the module docstring).

    Args:
        external: the collection's manifest (paths relative to ``root``).
        training: every row used for training, validation or selection (source + target).
        root: data root of both.
        classes: the model's classes (other labels are set aside).
        collection: name written in the removed rows.
        max_distance, min_correlation: near-duplicate settings (default: cxrlib.data.dedup's).

    Returns:
        (kept rows, removed rows with ``reason``; columns include ``duplicate_of``).
    """
    from cxrlib.data import dedup

    kw = {k: v for k, v in (("max_distance", max_distance), ("min_correlation", min_correlation)) if v is not None}
    removed: list[pd.DataFrame] = []

    def drop(mask, reason, dup_of=None):
        nonlocal ext
        part = ext[mask].assign(collection=collection, reason=reason)
        part["duplicate_of"] = dup_of[mask].to_numpy() if dup_of is not None else ""
        removed.append(part)
        ext = ext[~mask].reset_index(drop=True)

    ext = external.reset_index(drop=True).fillna("")
    drop(ext["label"] == "", "no label for the task")
    drop(~ext["label"].isin(list(classes)), f"label is not a model class {list(classes)}")
    train_paths = set(training["path"])
    drop(ext["path"].isin(train_paths), "same file as a training image")
    if len(ext):
        ext = dedup.add_hashes(ext, root)
        of = pd.Series(training_copies(ext, dedup.add_hashes(training.fillna(""), root), root, **kw), index=ext.index)
        leaked_patients = set(_patient_key(ext[of != ""]))
        drop((of != "").to_numpy(), "duplicates a training image", of)
        key = _patient_key(ext)
        drop(key.isin(set(_patient_key(training))).to_numpy(), "patient has images in the training data")
        key = _patient_key(ext)
        drop(key.isin(leaked_patients).to_numpy(), "patient has an image duplicating a training image")
    if len(ext) > 1:
        inner = dedup.find_duplicates(ext, root=root, **kw)
        kept, dups = dedup.drop_duplicates(ext, inner)
        if len(dups):
            removed.append(dups.assign(collection=collection, reason="duplicate of another image of the collection"))
            ext = kept
    rem = pd.concat(removed, ignore_index=True) if removed else pd.DataFrame(columns=REMOVED_COLUMNS)
    return ext, rem
