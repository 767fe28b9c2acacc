"""NIH ChestX-ray14 (Wang et al., CVPR 2017).

Dataset: https://nihcc.app.box.com/v/ChestXray-NIHCC (NIH Clinical Center), 112,120 frontal
chest radiographs of 30,805 patients with 14 NLP-mined findings.

Published layout (either image layout works)::

    root/Data_Entry_2017.csv          (or Data_Entry_2017_v2020.csv)
    root/BBox_List_2017.csv           (optional, 984 expert boxes, 1024x1024 frame)
    root/train_val_list.txt           (optional official split, one image name a line)
    root/test_list.txt
    root/images/00000001_000.png ...                   (one folder)
    root/images_001/images/00000001_000.png ...        (official 12-archive layout)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cxrlib.data.adapters._common import (
    AdapterResult, Skips, by_name, finish, read_table, require_columns, scan_images,
)

SOURCE = "nih"
DATA_ENTRY_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
BBOX_FILE = "BBox_List_2017.csv"
FRAME = 1024  # the boxes are given in the original 1024x1024 image frame
#: BBox_List_2017.csv spells one finding differently from Data_Entry_2017.csv
BOX_FINDING_ALIASES = {"Infiltrate": "Infiltration"}


def find_data_entry(root: Path) -> Path:
    """The Data_Entry CSV in ``root`` (the v2020 file wins when both are present)."""
    for name in DATA_ENTRY_FILES:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"{root}: none of {', '.join(DATA_ENTRY_FILES)} found (NIH ChestX-ray14 root expected)")


def image_index(root: Path, skips: Skips | None = None) -> dict[str, str]:
    """Image name -> path relative to ``root`` over ``images/`` and ``images_*/images/``.

    The official download unpacks to ``images_001/images/`` ... ``images_012/images/``;
    a second file with the same name and every non-image file are skips.
    """
    skips = Skips() if skips is None else skips
    files = scan_images(root / "images", root, skips)
    for sub in sorted(p for p in root.glob("images_*") if p.is_dir()):
        files += scan_images(sub, root, skips)
    return by_name(files, skips)


def _official_split(root: Path) -> dict[str, str]:
    split: dict[str, str] = {}
    for name, value in (("train_val_list.txt", "train"), ("test_list.txt", "test")):
        path = root / name
        if path.is_file():
            for line in path.read_text().split():
                split[line.strip()] = value
    return split


def build_manifest(root, task=None, data_entry: str | None = None, official_split: bool = True,
                   encoding: str = "utf-8") -> AdapterResult:
    """Manifest of NIH ChestX-ray14 from its published files.

    ``findings`` is the published ``Finding Labels`` cell; with a single-label task the
    label comes from ``label_map.csv`` (No Finding -> normal, any Pneumonia -> pneumonia,
    other findings -> other_disease in paper A and not used in paper B). The official
    split lists, when present, fill ``split`` with ``train`` (train_val_list) and ``test``;
    the validation part must be carved out of ``train`` by patient (see
    :func:`cxrlib.data.splits.holdout_split`).

    Args:
        root: folder with the Data_Entry CSV and the images.
        task: None (multi-label findings only, ``label`` empty), ``nih14``/``source``
            (same), or a single-label task such as ``paper_a``.
        data_entry: CSV file name to use instead of the default lookup.
        official_split: fill ``split`` from train_val_list.txt/test_list.txt if present.
        encoding: text encoding of the Data_Entry CSV.
    """
    root = Path(root)
    csv_path = root / data_entry if data_entry else find_data_entry(root)
    df = read_table(csv_path, encoding=encoding)
    require_columns(df, ("Image Index", "Finding Labels", "Patient ID", "View Position"), csv_path)
    sex_col = "Patient Gender" if "Patient Gender" in df.columns else "Patient Sex"
    skips = Skips()
    images = image_index(root, skips)
    split = _official_split(root) if official_split else {}
    # vectorised over the 112,120 rows: each check sets aside the rows that fail it, by CSV line
    name = df["Image Index"].str.strip()
    findings = df["Finding Labels"].str.strip()
    line = pd.Series(range(2, len(df) + 2), index=df.index)  # header = line 1
    path = name.map(images)
    steps = [("image file not found", path.isna(), name),
             ("duplicate metadata row", name.duplicated() & path.notna(), path),
             ("patient id not given", df["Patient ID"].str.strip() == "", path)]
    keep = pd.Series(True, index=df.index)
    for reason, bad, shown in steps:
        bad = bad & keep
        skips.add_frame(reason, line[bad], shown[bad], findings[bad])
        keep &= ~bad
    rows = pd.DataFrame({
        "path": path[keep], "patient_id": SOURCE + ":" + df.loc[keep, "Patient ID"].str.strip(), "source": SOURCE,
        "view": df.loc[keep, "View Position"].str.strip(), "findings": findings[keep],
        "age": df.loc[keep, "Patient Age"].str.strip() if "Patient Age" in df.columns else "",
        "sex": df.loc[keep, sex_col].str.strip() if sex_col in df.columns else "",
        "_source_row": line[keep]})
    if split:
        rows["split"] = name[keep].map(split).fillna("")
    for unlisted_name in sorted(set(images) - set(name)):
        skips.add(f"image not listed in {csv_path.name}", "", images[unlisted_name], "")
    return finish(rows, skips, "nih", task)


def load_boxes(root, images_only: bool = True) -> pd.DataFrame:
    """Expert bounding boxes of BBox_List_2017.csv.

    The published header is ``Image Index,Finding Label,Bbox [x,y,w,h],,,`` (the four box
    numbers sit under one header cell and three empty ones), so columns are taken by position.

    Args:
        root: NIH root with ``BBox_List_2017.csv``.
        images_only: keep only boxes whose image is present under ``root``.

    Returns:
        DataFrame with ``path`` (relative to ``root``, as in the manifest), ``finding`` (NIH
        spelling; the file's ``Infiltrate`` becomes ``Infiltration``), ``x, y, w, h`` (float,
        pixels of the original 1024x1024 frame), ``frame_width``, ``frame_height`` (1024).
    """
    root = Path(root)
    path = root / BBOX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: bounding-box file not found")
    raw = pd.read_csv(path, header=0, dtype=str, keep_default_na=False)
    if raw.shape[1] < 6:
        raise ValueError(f"{path}: expected 6 columns (image, finding, x, y, w, h), found {raw.shape[1]}")
    raw = raw.iloc[:, :6]
    raw.columns = ["image", "finding", "x", "y", "w", "h"]
    images = image_index(root)
    out = pd.DataFrame({
        "path": [images.get(n, f"images/{n}") for n in raw["image"]],
        "finding": raw["finding"].str.strip().replace(BOX_FINDING_ALIASES),
    })
    for c in ("x", "y", "w", "h"):
        out[c] = pd.to_numeric(raw[c], errors="raise").astype(float)
    out["frame_width"] = FRAME
    out["frame_height"] = FRAME
    if images_only:
        out = out[raw["image"].isin(images).to_numpy()]
    return out.reset_index(drop=True)
