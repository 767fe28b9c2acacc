"""COVID-19 Radiography Database (Chowdhury et al. 2020; Rahman et al. 2021), Kaggle.

Dataset: https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database
(M.E.H. Chowdhury et al., "Can AI help in screening Viral and COVID-19 pneumonia?",
IEEE Access 2020).

Published layouts (both accepted; the class folders may sit one level down, as in the zip)::

    root/COVID/images/COVID-1.png ...  root/COVID/masks/...   (2021+: masks are ignored)
    root/Normal/images/...  root/Viral Pneumonia/images/...  root/Lung_Opacity/images/...
    root/COVID.metadata.xlsx ...       (FILE NAME, FORMAT, SIZE, URL of the original source)

    root/COVID-19/COVID-19 (1).png ... root/NORMAL/... root/Viral Pneumonia/...   (2020)

No patient ids are published: ``patient_id`` is the file stem, so several images of one
patient may land in different splits (leakage cannot be ruled out; a note says so). The
metadata spreadsheets, read with pandas when ``openpyxl`` is installed, add an
``origin_url`` column (the collection each image was taken from; many COVID images come
from the Cohen collection, so deduplicate when merging).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pandas as pd

from cxrlib.data.adapters._common import AdapterResult, Skips, finish, patient, scan_images

SOURCE = "radiography-db"
CLASS_FOLDERS = ("COVID", "COVID-19", "Normal", "NORMAL", "Viral Pneumonia", "Lung_Opacity")


def _dataset_dir(root: Path) -> Path:
    """``root`` or its single child folder holding the class folders."""
    def has_classes(d: Path) -> bool:
        return any((d / c).is_dir() for c in CLASS_FOLDERS)
    if has_classes(root):
        return root
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        if has_classes(child):
            return child
    raise FileNotFoundError(f"{root}: no class folder ({', '.join(CLASS_FOLDERS)}) found")


def _origin_urls(folder: Path, notes: list[str]) -> dict[str, str]:
    """File stem -> URL from the ``*.m?tadata.xlsx`` spreadsheets (upstream spells one 'matadata')."""
    sheets = sorted(folder.glob("*.m?tadata.xlsx"))
    if not sheets:
        return {}
    if importlib.util.find_spec("openpyxl") is None:
        notes.append(f"openpyxl is not installed: {len(sheets)} metadata spreadsheet(s) not read "
                     "(origin_url left empty); `pip install openpyxl` to read them")
        return {}
    urls: dict[str, str] = {}
    for sheet in sheets:
        try:
            table = pd.read_excel(sheet, dtype=str, engine="openpyxl").fillna("")
        except Exception as exc:  # zip/xml errors of a damaged or non-xlsx file
            raise ValueError(f"{sheet}: cannot read the metadata spreadsheet ({type(exc).__name__}: {exc}); "
                             "re-download it or delete it to build the manifest without origin URLs") from exc
        table.columns = [str(c).strip().upper() for c in table.columns]
        if "FILE NAME" not in table.columns or "URL" not in table.columns:
            notes.append(f"{sheet.name}: no 'FILE NAME'/'URL' columns; not used")
            continue
        for name, url in zip(table["FILE NAME"], table["URL"]):
            urls[Path(str(name).strip()).stem.casefold()] = str(url).strip()
    return urls


def build_manifest(root, task=None) -> AdapterResult:
    """Manifest of the Kaggle COVID-19 Radiography Database.

    ``findings`` is the class folder name (``COVID``, ``Normal``, ``Viral Pneumonia``,
    ``Lung_Opacity``), mapped to tasks by ``label_map.csv``.

    Args:
        root: the unzipped dataset (class folders directly below or one level down).
        task: None (findings only) or a single-label task.
    """
    root = Path(root)
    data = _dataset_dir(root)
    notes = ["radiography-db publishes no patient ids: patient_id = file stem, so images of one "
             "patient may cross splits (leakage cannot be ruled out)"]
    urls = _origin_urls(data, notes)
    skips, rows = Skips(), []
    top = Path(os.path.relpath(data, root)).as_posix()
    for rel in scan_images(root, root, skips):
        parts = (rel[len(top) + 1:] if top != "." and rel.startswith(top + "/") else rel).split("/")
        if top != "." and not rel.startswith(top + "/") or len(parts) < 2:
            skips.add("file outside the class folders", "", rel)
            continue
        if len(parts) > 3 or (len(parts) == 3 and parts[1] != "images"):
            skips.add("lung mask (not used)" if parts[1] == "masks" else "file in a subfolder other than images/",
                      "", rel)
            continue
        stem = Path(parts[-1]).stem
        row = dict(path=rel, patient_id=patient(SOURCE, stem), source=SOURCE, view="",
                   findings=parts[0], _source_row="")
        if urls:
            row["origin_url"] = urls.get(stem.casefold(), "")
        rows.append(row)
    sheets = {Path(os.path.relpath(p, root)).as_posix() for p in data.glob("*.m?tadata.xlsx")}
    skips.rows = [r for r in skips.rows if r["file"] not in sheets]  # metadata read above, not skipped
    return finish(rows, skips, "radiography-db", task, notes)
