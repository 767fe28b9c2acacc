"""The folder names each public collection is published under, and how a collection is found.

One table for every command and config (``cxr data build-manifests``, ``cxr run`` with a
real-data YAML, the benchmarks): a collection is named by its key (``nih``,
``covid-chestxray``, ...) and looked up under the data root by each of its published folder
names (case-insensitive, nested names such as ``CellData/chest_xray`` allowed), unless an
explicit folder is given (``--dataset nih=/mnt/nih`` on the command line, ``path:`` in a
YAML ``data:`` block). A missing collection gives one message listing every name tried.

Sources of the names: the download pages cited in each adapter's docstring (NIH Box
``CXR8`` / ``ChestX-ray14``, Kaggle ``nih-chest-xrays``; Kermany Mendeley
``ChestXRay2017.zip`` / ``CellData``; the GitHub clone names of the COVID collections;
the Kaggle COVID-19 Radiography Database zip).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping


@dataclass(frozen=True)
class Collection:
    """A public collection: its adapter and the folder names it is published under."""

    key: str
    adapter: str
    folders: tuple[str, ...]
    title: str


COLLECTIONS: dict[str, Collection] = {c.key: c for c in (
    Collection("nih", "nih", (
        "nih-chestxray14", "ChestX-ray14", "ChestXray-NIHCC", "CXR8", "nih-chest-xrays", "NIH", "nih",
        "nih-chestxray14-sample"),
        "NIH ChestX-ray14 (Data_Entry_2017*.csv + images/ or the official images_001..012/images/)"),
    Collection("covid-chestxray", "covid-chestxray", (
        "covid-chestxray-dataset", "covid-chestxray-dataset-master", "covid-chestxray", "cohen"),
        "Cohen COVID-19 image data collection (metadata.csv + images/)"),
    Collection("figure1", "figure1", (
        "Figure1-COVID-chestxray-dataset", "Figure1-COVID-chestxray-dataset-master", "figure1"),
        "Figure 1 COVID-19 chest X-ray dataset (metadata.csv + images/)"),
    Collection("actualmed", "actualmed", (
        "Actualmed-COVID-chestxray-dataset", "Actualmed-COVID-chestxray-dataset-master", "actualmed"),
        "Actualmed COVID-19 chest X-ray dataset (metadata.csv + images/)"),
    Collection("kermany", "kermany", (
        "chest_xray", "ChestXRay2017/chest_xray", "CellData/chest_xray", "chest-xray-pneumonia/chest_xray",
        "ChestXRay2017", "CellData", "kermany"),
        "Kermany pediatric pneumonia (train|test|val/NORMAL|PNEUMONIA)"),
    Collection("radiography-db", "radiography-db", (
        "COVID-19_Radiography_Dataset", "COVID-19 Radiography Database", "covid19-radiography-database",
        "radiography-db"),
        "Kaggle COVID-19 Radiography Database (class folders)"),
)}


def _child(folder: Path, name: str) -> Path | None:
    """``folder/name`` matched case-insensitively, one path part at a time (None if absent)."""
    current = folder
    for part in Path(name).parts:
        exact = current / part
        if exact.is_dir():
            current = exact
            continue
        try:
            match = [p for p in current.iterdir() if p.is_dir() and p.name.casefold() == part.casefold()]
        except OSError:
            return None
        if not match:
            return None
        current = sorted(match)[0]
    return current


def tried_names(key: str) -> tuple[str, ...]:
    """The folder names looked for (a key that is not in the table is its own folder name)."""
    return COLLECTIONS[key].folders if key in COLLECTIONS else (key,)


def find_collection(root: str | os.PathLike, key: str, path: str | os.PathLike | None = None,
                    required: bool = True) -> Path | None:
    """The folder of collection ``key`` under ``root`` (or the explicit ``path``).

    Args:
        root: the data root.
        key: a key of :data:`COLLECTIONS` (any other name is looked for as a folder name).
        path: explicit folder (absolute, or relative to ``root``); wins over the table.
        required: raise when absent (else return None).

    Raises:
        FileNotFoundError: the folder is absent; the message lists every name tried and the fix.
    """
    root = Path(root)
    if path:
        folder = Path(path) if Path(path).is_absolute() else root / path
        if folder.is_dir():
            return folder
        if not required:
            return None
        raise FileNotFoundError(f"collection {key!r}: folder {folder} not found (given explicitly)")
    for name in tried_names(key):
        folder = _child(root, name)
        if folder is not None:
            return folder
    if not required:
        return None
    names = ", ".join(tried_names(key))
    raise FileNotFoundError(
        f"collection {key!r} not found under {root}: tried the folder names {names}; place it under one "
        f"of them or give its folder with --dataset {key}=PATH (path: in a YAML data block)")


def parse_datasets(items: list[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``--dataset KEY=PATH`` items (or a mapping) as {key: path}.

    Raises:
        ValueError: an item is not ``KEY=PATH``.
    """
    if not items:
        return {}
    if isinstance(items, Mapping):
        return {str(k): str(v) for k, v in items.items()}
    from cxrlib._text import parse_key_values

    out = {k: v.strip() for k, v in parse_key_values([str(i) for i in items], "--dataset", "nih=/mnt/nih",
                                                      form="COLLECTION=PATH").items()}
    empty = [k for k, v in out.items() if not v]
    if empty:
        raise ValueError(f"--dataset {empty[0]}=: give the collection's folder (e.g. --dataset nih=/mnt/nih)")
    return out
