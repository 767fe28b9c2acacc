"""Heatmaps that can be trusted: generation, scoring against ground truth, shortcut audit.

Modules (import them directly; nothing heavy is imported here):

- :mod:`cxrlib.explain.gradcam` -- Grad-CAM / Grad-CAM++ through tf-keras-vis, in-process
  (``CamExplainer``, ``gradcam``).
- :mod:`cxrlib.explain.lrp` -- Layer-wise Relevance Propagation through iNNvestigate, run in a
  separate graph-mode worker process that loads the saved ``.h5`` model (``LRPExplainer``,
  ``lrp``, ``fast_graph_layer_creation``).
- :mod:`cxrlib.explain.scoring` -- mass inside mask/box, pointing game, heatmap AUC; tidy tables.
- :mod:`cxrlib.explain.shortcuts` -- border/text relevance audit, masked-region accuracy,
  source classifier.
- :mod:`cxrlib.explain.batch` -- heatmaps over a manifest with a progress bar; ``.npy`` arrays
  and PNG overlays, one folder per model and method.
"""
