"""Dataset adapters: published layouts of public chest X-ray datasets -> manifests.

One module per dataset (torchxrayvision style), each with a docstring citing the dataset
and its URL and a ``build_manifest(root, task=None, **opts) -> AdapterResult``.
"""

from __future__ import annotations

from cxrlib.data.adapters import actualmed, covid_chestxray, figure1, nih  # noqa: F401
from cxrlib.data.adapters._common import AdapterResult  # noqa: F401

ADAPTERS: dict = {
    "nih": nih.build_manifest,
    "covid-chestxray": covid_chestxray.build_manifest,
    "figure1": figure1.build_manifest,
    "actualmed": actualmed.build_manifest,
}
