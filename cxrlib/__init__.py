"""cxrlib: reproduce, teach and stress-test transfer learning on chest X-rays.

Data flow, one subpackage/module per step:
    cxrlib.data (manifests, adapters, splits, phantoms, tf.data pipeline)
    -> cxrlib.models -> cxrlib.transfer -> cxrlib.training -> cxrlib.evaluation
    -> cxrlib.explain (Grad-CAM, LRP, scoring, shortcut audit) -> cxrlib.report
"""

__version__ = "0.1.0"
