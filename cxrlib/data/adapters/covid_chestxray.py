"""COVID-19 image data collection (Cohen et al. 2020).

Dataset: https://github.com/ieee8023/covid-chestxray-dataset ("COVID-19 Image Data Collection:
Prospective Predictions Are the Future", arXiv:2006.11988).

Published layout::

    root/metadata.csv     patientid, offset, sex, age, finding, ..., view, modality, date,
                          location, folder, filename, doi, url, license, ...
    root/images/...       image files named by ``folder``/``filename``

Kept: modality X-ray, frontal views (PA, AP, AP Supine; lateral ``L``, ``Axial``,
``Coronal``, ``?`` and blank views are skipped), findings other than ``todo``/``Unknown``.
Findings are published flat (``COVID-19``, ``Streptococcus``, ``COVID-19, ARDS``) or
hierarchical (``Pneumonia/Viral/COVID-19``); ``label_map.csv`` maps both.
Patient ids become ``covid-chestxray:<patientid>``.
"""

from __future__ import annotations

from pathlib import Path

from cxrlib.data.adapters._common import (
    AdapterResult, Skips, finish, inside, read_table, require_columns, scan_images, unlisted,
)
from cxrlib.data.adapters._metadata import FRONTAL_VIEWS, metadata_rows

SOURCE = "covid-chestxray"


def build_manifest(root, task=None, views=FRONTAL_VIEWS, metadata: str = "metadata.csv",
                   encoding: str = "utf-8") -> AdapterResult:
    """Manifest of the Cohen COVID-19 image data collection.

    Args:
        root: clone of the repository (with ``metadata.csv`` and ``images/``).
        task: None (findings only) or a single-label task (``paper_a``, ``paper_b``, ...).
        views: views to keep (case-insensitive).
        metadata: metadata file name.
        encoding: metadata text encoding (``--opt encoding=latin-1`` for a re-saved table).

    Image files under ``images/`` that no row names are skips (``image not listed``).
    """
    root = Path(root)
    path = root / metadata
    df = read_table(path, encoding=encoding)
    require_columns(df, ("patientid", "finding", "view", "modality", "filename"), path)

    def image_path(rec: dict, line: int) -> str | None:
        name = rec["filename"].strip()
        if not name:
            return None
        inside(root, name, path, line, "filename")  # an absolute file name is refused, not re-rooted
        rel = inside(root, f"{rec.get('folder', 'images').strip() or 'images'}/{name}", path, line, "filename")
        return rel if (root / rel).is_file() else None

    skips = Skips()
    rows = metadata_rows(df, SOURCE, "covid-chestxray", image_path, skips, views=views)
    listed = {r["path"] for r in rows} | _listed_files(df, root)
    unlisted(scan_images(root / "images", root, skips), listed, metadata, skips)
    return finish(rows, skips, "covid-chestxray", task)


def _listed_files(df, root: Path) -> set[str]:
    """Paths named by any row (also rows skipped for view/modality: their file is reported there)."""
    folders = df["folder"] if "folder" in df.columns else ["images"] * len(df)
    return {f"{(f.strip() or 'images')}/{n.strip()}" for f, n in zip(folders, df["filename"]) if n.strip()}
