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

from cxrlib.data.adapters._common import AdapterResult, Skips, finish, read_table, require_columns
from cxrlib.data.adapters._metadata import FRONTAL_VIEWS, metadata_rows

SOURCE = "covid-chestxray"


def build_manifest(root, task=None, views=FRONTAL_VIEWS, metadata: str = "metadata.csv") -> AdapterResult:
    """Manifest of the Cohen COVID-19 image data collection.

    Args:
        root: clone of the repository (with ``metadata.csv`` and ``images/``).
        task: None (findings only) or a single-label task (``paper_a``, ``paper_b``, ...).
        views: views to keep (case-insensitive).
        metadata: metadata file name.
    """
    root = Path(root)
    path = root / metadata
    df = read_table(path)
    require_columns(df, ("patientid", "finding", "view", "modality", "filename"), path)

    def image_path(rec: dict) -> str | None:
        rel = Path(rec.get("folder", "images").strip() or "images", rec["filename"].strip())
        return rel.as_posix() if (root / rel).is_file() else None

    skips = Skips()
    rows = metadata_rows(df, SOURCE, "covid-chestxray", image_path, skips, views=views)
    return finish(rows, skips, "covid-chestxray", task)
