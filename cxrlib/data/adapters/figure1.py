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
    AdapterResult, Skips, finish, read_table, require_columns, scan_images, unlisted,
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
    skips = Skips()
    on_disk = scan_images(root / "images", root, skips)
    by_stem: dict[str, str] = {}
    for rel in on_disk:
        stem = Path(rel).stem
        if stem in by_stem:
            skips.add(f"second image for patientid {stem} ({by_stem[stem]} is used)", "", rel)
        else:
            by_stem[stem] = rel

    def image_path(rec: dict, line: int) -> str | None:
        return by_stem.get(rec["patientid"].strip())

    rows = metadata_rows(df, SOURCE, "figure1", image_path, skips, views=views, allow_blank_view=True,
                          file_column="patientid")
    listed = {by_stem[p.strip()] for p in df["patientid"] if p.strip() in by_stem}
    unlisted(list(by_stem.values()), listed, "metadata.csv", skips)
    return finish(rows, skips, "figure1", task)
