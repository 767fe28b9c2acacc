"""External validation: trained models on collections never used for training.

- :mod:`cxrlib.validation.collections`: external manifests (adapters) minus every image and
  patient that overlaps the training data (removed rows reported with reasons).
- :mod:`cxrlib.validation.metrics`: accuracy, per-class recall / specificity with bootstrap
  CIs, what the model calls each class, internal-vs-external gaps, warning thresholds.
- :mod:`cxrlib.validation.run`: predict every (model, collection) pair and write the tables.

Why: DeGrave et al. (2021, Nat. Mach. Intell. 3:610) showed that COVID-19 radiograph
classifiers trained on merged public collections learn the collection, and lose most of their
accuracy on external hospitals; internal test sets cannot reveal it.
"""

from cxrlib.validation.metrics import Thresholds  # noqa: F401
