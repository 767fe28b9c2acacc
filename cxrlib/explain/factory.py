"""One factory for every heatmap method, and a cache keyed by (model, method).

API (stable):

- ``make_explainer(method, model, **options) -> Explainer``: ``method`` is a config name
  (``gradcam``, ``gradcam_plus_plus``, ``lrp.epsilon``, ...; see
  :func:`cxrlib.explain.base.canonical_method`); ``model`` is a keras model, a saved ``.h5``
  file or a stage folder holding ``model.h5`` (``cxrlib.experiment``). Grad-CAM methods give a
  :class:`~cxrlib.explain.gradcam.CamExplainer` (options ``layer``, ``min_cam_size``,
  ``batch_size``), LRP methods an :class:`~cxrlib.explain.lrp.LRPExplainer` (options ``fast``,
  ``batch_size``, analyzer parameters such as ``epsilon``).
- ``ExplainerCache(**options)``: ``cache.get(model, method)`` builds each explainer once, keyed
  by the tuple ``(model key, method)`` (model key: the resolved ``.h5`` path, or the keras model
  object itself); all LRP methods of one model share one worker process; ``close()`` (or
  ``with``) stops the workers it started.

Every explainer answers ``explain(images, class_index=None) -> Heatmaps`` (see
:mod:`cxrlib.explain.base`), so callers never branch on the method.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

from cxrlib.explain.base import CAM_METHODS, Explainer, canonical_method

_CAM_OPTIONS = ("layer", "min_cam_size", "batch_size")
_LRP_OPTIONS = ("fast", "batch_size")


def model_file(model) -> Path | None:
    """The ``.h5`` behind ``model``: the file itself, ``<stage>/model.h5``, or None for a keras model.

    Raises:
        FileNotFoundError: a path that is neither a model file nor a stage folder with one.
    """
    if not isinstance(model, (str, os.PathLike)):
        return None
    path = Path(model)
    if path.is_dir():
        path = path / "model.h5"
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path} (give a .h5 file or a stage folder with model.h5)")
    return path.resolve()


def _keras_model(model, path: Path | None):
    if path is None:
        return model
    from cxrlib.models import load_model

    return load_model(path)


def _split(options: dict[str, Any], cam: bool) -> dict[str, Any]:
    """Options meant for this family (CAM layout options are ignored by LRP and vice versa)."""
    if cam:
        return {k: v for k, v in options.items() if k in _CAM_OPTIONS}
    return {k: v for k, v in options.items() if k not in _CAM_OPTIONS or k == "batch_size"}


def make_explainer(method: str, model, **options) -> Explainer:
    """The explainer of ``method`` for ``model`` (keras model, ``.h5`` file or stage folder).

    Args:
        method: heatmap method name (config spellings accepted).
        model: keras model (Grad-CAM in this process; LRP saves it to a temporary ``.h5`` for its
            worker), a ``.h5`` file, or a stage folder with ``model.h5``.
        **options: ``layer``, ``min_cam_size``, ``batch_size`` (Grad-CAM); ``fast``,
            ``batch_size``, ``worker`` and analyzer parameters (LRP). Options of the other
            family are ignored, so one options dict can serve a list of mixed methods.
    """
    method = canonical_method(method)
    path = model_file(model)
    if method in CAM_METHODS:
        from cxrlib.explain.gradcam import CamExplainer

        return CamExplainer(_keras_model(model, path), method=method, **_split(options, cam=True))
    from cxrlib.explain.lrp import LRPExplainer

    if path is None:  # an in-memory model: the worker process needs a file (removed with the explainer)
        from cxrlib.models import save_model

        tmp = Path(tempfile.mkdtemp(prefix="cxr_lrp_"))
        explainer = LRPExplainer(save_model(model, tmp / "model.h5"), method=method, **_split(options, cam=False))
        weakref.finalize(explainer, shutil.rmtree, tmp, True)
        return explainer
    return LRPExplainer(path, method=method, **_split(options, cam=False))


class ExplainerCache:
    """Explainers built once per ``(model, method)``; one LRP worker process for all model files.

    Args:
        **options: passed to :func:`make_explainer` for every explainer built.
    """

    def __init__(self, **options):
        self.options = options
        self._explainers: dict[tuple[Any, str], Explainer] = {}
        self._workers: dict[Path, Any] = {}
        self._process: Any = None  # the LRPProcess shared by every model's LRPWorker
        self._models: dict[Path, Any] = {}  # one in-process keras model per file (Grad-CAM)

    @staticmethod
    def key(model, method: str) -> tuple[Any, str]:
        """Cache key: (resolved .h5 path or the keras model object, canonical method)."""
        path = model_file(model)
        return (path if path is not None else model, canonical_method(method))

    def get(self, model, method: str) -> Explainer:
        """The explainer of ``method`` for ``model``, built on first use."""
        key = self.key(model, method)
        if key not in self._explainers:
            ref, method = key
            if method in CAM_METHODS:
                if isinstance(ref, Path) and ref not in self._models:
                    self._models[ref] = _keras_model(None, ref)
                target = self._models.get(ref, ref) if isinstance(ref, Path) else ref
                self._explainers[key] = make_explainer(method, target, **self.options)
            else:
                from cxrlib.explain.lrp import LRPProcess, LRPWorker

                if not isinstance(ref, Path):
                    raise TypeError("ExplainerCache runs LRP from saved models: give a .h5 file or stage folder")
                if self._process is None:  # one graph-mode process for every model of the cache
                    self._process = LRPProcess(fast=self.options.get("fast", True))
                if ref not in self._workers:
                    self._workers[ref] = LRPWorker(ref, process=self._process)
                self._explainers[key] = make_explainer(method, ref, worker=self._workers[ref], **self.options)
        return self._explainers[key]

    def close(self) -> None:
        """Close every explainer and stop the LRP workers."""
        for ex in self._explainers.values():
            ex.close()
        for worker in self._workers.values():
            worker.close()
        if self._process is not None:
            self._process.close()
            self._process = None
        self._explainers.clear()
        self._workers.clear()
        self._models.clear()

    def __enter__(self) -> "ExplainerCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
