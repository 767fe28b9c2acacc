"""Actualmed COVID-19 chest X-ray dataset initiative.

Dataset: https://github.com/agchung/Actualmed-COVID-chestxray-dataset (Actualmed and
Jose Antonio Ruiz / COVID-Net team; used by COVID-Net / COVIDx).

Published layout::

    root/metadata.csv     patientid, offset, sex, age, finding, ..., view, modality, ..., imagename
    root/images/<imagename>

Findings are ``COVID-19`` or ``No finding`` (blank findings are skipped with a reason).
"""

from __future__ import annotations

from pathlib import Path

from cxrlib.data.adapters._common import (
    AdapterResult, Skips, finish, inside, read_table, require_columns, scan_images, unlisted,
)
from cxrlib.data.adapters._metadata import FRONTAL_VIEWS, metadata_rows

SOURCE = "actualmed"


def build_manifest(root, task=None, views=FRONTAL_VIEWS, encoding: str = "utf-8") -> AdapterResult:
    """Manifest of the Actualmed COVID-19 collection.

    Args:
        root: clone of the repository (``metadata.csv`` + ``images/``).
        task: None (findings only) or a single-label task.
        views: non-blank views to keep; blank views are kept (the collection is frontal).
        encoding: metadata encoding.
    """
    root = Path(root)
    path = root / "metadata.csv"
    df = read_table(path, encoding=encoding)
    require_columns(df, ("patientid", "finding", "imagename"), path)

    def image_path(rec: dict, line: int) -> str | None:
        name = rec["imagename"].strip()
        rel = inside(root, f"images/{name}", path, line, "imagename") if name else ""
        return rel if rel and (root / rel).is_file() else None

    skips = Skips()
    rows = metadata_rows(df, SOURCE, "actualmed", image_path, skips, views=views, allow_blank_view=True,
                          file_column="imagename")
    listed = {f"images/{n.strip()}" for n in df["imagename"] if n.strip()}
    unlisted(scan_images(root / "images", root, skips), listed, "metadata.csv", skips)
    return finish(rows, skips, "actualmed", task)
