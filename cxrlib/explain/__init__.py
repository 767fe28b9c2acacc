"""Heatmaps that can be trusted: generation, scoring against ground truth, shortcut audit.

Modules (import them directly; nothing heavy is imported here). Typical use::

    from cxrlib.explain.factory import ExplainerCache, make_explainer
    from cxrlib.explain.scoring import load_masks, score_heatmaps, summarize_scores
    from cxrlib.explain.shortcuts import shortcut_audit, audit_summary, masked_accuracy

    with ExplainerCache(min_cam_size=8) as cache:                # keyed by (model, method)
        cam = cache.get(stage_dir, "gradcam").explain(x)        # Heatmaps: .maps [N,H,W] in [0,1]
        rel = cache.get(stage_dir, "lrp.epsilon").explain(x)    # signed maps, graph-mode worker
    scores = score_heatmaps(cam.maps, load_masks(df, root, 64), df["path"], "gradcam")
    audit = audit_summary(shortcut_audit(rel, df, root, 64, method="lrp.epsilon"))

- :mod:`cxrlib.explain.base` -- the protocol: ``Heatmaps`` (maps, class_index, prob, signed),
  ``Explainer.explain(images, class_index=None)``, ``canonical_method``, ``display_map``.
- :mod:`cxrlib.explain.factory` -- ``make_explainer(method, model)`` (keras model, ``.h5`` or
  stage folder) and ``ExplainerCache`` (one explainer per (model, method), one LRP worker
  process for all its models).
- :mod:`cxrlib.explain.gradcam` -- Grad-CAM / Grad-CAM++ through tf-keras-vis, in-process
  (``CamExplainer``, ``gradcam``, ``target_layer`` with ``min_cam_size``).
- :mod:`cxrlib.explain.lrp` -- Layer-wise Relevance Propagation through iNNvestigate, run in a
  separate graph-mode worker process that loads the saved ``.h5`` model (``LRPExplainer``,
  ``LRPWorker``, ``lrp``, ``display_map``, ``fast_graph_layer_creation``; measurements in its docstring).
- :mod:`cxrlib.explain.scoring` -- mass inside mask/box, pointing game, heatmap AUC against
  phantom masks (``load_masks``) and NIH expert boxes (``score_against_boxes``); tidy tables.
- :mod:`cxrlib.explain.shortcuts` -- border/text relevance audit, source classifier (measured
  on the shared sample: NIH vs Cohen told apart with accuracy 0.93 vs a 0.75 majority baseline
  at 32 px), the shortcut verdict.
- :mod:`cxrlib.explain.ablation` -- masking ablation: accuracy and flips with a region masked,
  against a same-size control region (``control_masks``, ``with_controls``, ``region_effects``).
- :mod:`cxrlib.explain.batch` -- heatmaps over a manifest with a progress bar; ``.npy`` arrays
  and PNG overlays, one folder per model and method (``explain_manifest``, ``read_heatmaps``).

Speed: ``benchmarks/bench_heatmaps.py`` (seconds per image per method, cxrlib vs bare library).
"""
