"""Dataset adapters: published layouts of public chest X-ray datasets -> manifests.

One module per dataset (torchxrayvision style), each with a docstring citing the dataset
and its URL and a ``build_manifest(root, task=None, **opts) -> AdapterResult``.
"""

from __future__ import annotations

from cxrlib.data.adapters import (  # noqa: F401
    actualmed, covid_chestxray, figure1, folders, generic_csv, kermany, nih, radiography_db,
)
from cxrlib.data.adapters._common import AdapterResult  # noqa: F401

ADAPTERS: dict = {
    "nih": nih.build_manifest,
    "covid-chestxray": covid_chestxray.build_manifest,
    "figure1": figure1.build_manifest,
    "actualmed": actualmed.build_manifest,
    "radiography-db": radiography_db.build_manifest,
    "kermany": kermany.build_manifest,
    "folders": folders.build_manifest,
    "csv": generic_csv.build_manifest,
}


def build_manifest(source: str, root, task=None, **opts) -> AdapterResult:
    """Run the adapter of ``source`` (a key of :data:`ADAPTERS`).

    Args:
        source: dataset name, e.g. ``nih`` or ``covid-chestxray``.
        root: the dataset folder in its published layout.
        task: None or a task name.
        **opts: adapter options.
    """
    if source not in ADAPTERS:
        raise ValueError(f"unknown source {source!r}; known: {', '.join(ADAPTERS)}")
    return ADAPTERS[source](root, task=task, **opts)
