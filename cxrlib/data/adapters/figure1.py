"""Figure 1 COVID-19 chest X-ray dataset initiative.

Dataset: https://github.com/agchung/Figure1-COVID-chestxray-dataset (Chung et al., images
contributed through the Figure 1 app; used by COVID-Net).

Published layout::

    root/metadata.csv     latin-1 encoded: patientid, offset, sex, age, finding, survival,
                          temperature, pO2 saturation, view, modality, artifacts/distortion, notes
    root/images/<patientid>.jpg|.png   (image stem == patientid; extension found on disk)

Most rows leave ``view`` blank (the images are frontal radiographs), so blank views are kept
and only explicitly lateral views are skipped; a blank ``finding`` is skipped with a reason.
"""

from __future__ import annotations

from pathlib import Path

from cxrlib.data.adapters._common import (
    AdapterResult, Skips, finish, index_images, read_table, require_columns,
)
from cxrlib.data.adapters._metadata import FRONTAL_VIEWS, metadata_rows

SOURCE = "figure1"


def build_manifest(root, task=None, views=FRONTAL_VIEWS, encoding: str = "latin-1") -> AdapterResult:
    """Manifest of the Figure 1 COVID-19 collection.

    Args:
        root: clone of the repository (``metadata.csv`` + ``images/``).
        task: None (findings only) or a single-label task.
        views: non-blank views to keep (case-insensitive); ``AP erect`` is frontal.
        encoding: metadata encoding (published as latin-1).
    """
    root = Path(root)
    path = root / "metadata.csv"
    df = read_table(path, encoding=encoding)
    require_columns(df, ("patientid", "finding"), path)
    by_stem = {Path(name).stem: rel for name, rel in index_images(root / "images", root).items()}

    def image_path(rec: dict) -> str | None:
        return by_stem.get(rec["patientid"].strip())

    skips = Skips()
    rows = metadata_rows(df, SOURCE, "figure1", image_path, skips, views=views, allow_blank_view=True,
                          file_column="patientid")
    return finish(rows, skips, "figure1", task)
