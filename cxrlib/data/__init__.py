"""Data: one manifest format for every dataset, adapters, splits, phantoms and the tf.data pipeline."""

from cxrlib.data.manifest import (  # noqa: F401
    ManifestError,
    Problem,
    read_manifest,
    validate_manifest,
    write_manifest,
)
from cxrlib.data.taxonomy import TASKS, NIH_FINDINGS, task_classes  # noqa: F401
