"""Layer-wise Relevance Propagation through iNNvestigate 2.1.2 (paper B's explanation method).

API (stable, used by the notebooks):

- ``LRPExplainer(model_path, fast=True)``: starts one graph-mode worker process that loads the
  saved ``.h5`` model; use as a context manager (or call ``close()``).
  ``explainer.explain(images, method="lrp.epsilon", class_index=None, **params) -> LRPResult``.
- ``lrp(model_path, images, method="lrp.epsilon", class_index=None, fast=True, **params)``:
  one-shot wrapper (starts and stops a worker).
- ``METHODS``: the supported analyzers: ``lrp.epsilon``, ``lrp.z``, ``lrp.alpha_1_beta_0``,
  ``lrp.sequential_preset_a``, ``lrp.sequential_preset_b`` (any other iNNvestigate ``lrp.*``
  name is passed through).
- ``fast_graph_layer_creation(enabled)``: the one switch for Keras' fast graph-mode op-layer
  creation (see below); ``LRPExplainer(fast=...)`` calls it inside the worker.

Why a separate process: iNNvestigate needs ``tf.compat.v1.disable_eager_execution()``, which is
process-wide and cannot be undone; the notebook/trainer process stays eager (Grad-CAM, training).
The worker loads the model from its saved file (``.h5`` only: in graph mode a ``.keras`` file
loads with no error but wrong weights), removes the output softmax/sigmoid the way
``innvestigate.model_wo_softmax`` does (``_lrp_worker.logits_model``: same layer, linear
activation, shared weights; innvestigate's own copy is auto-named and collides with layer names
of a model loaded in a fresh process), so relevance explains the logit of the predicted or
chosen class.

Speed: Keras' graph-mode functional layer creation dominates analyzer building on deep models;
``fast_graph_layer_creation(True)`` (the default) sets Keras' private
``_UNSAFE_GRAPH_OP_LAYER_CREATION`` flag before the analyzer is built. Measured elsewhere on
DenseNet121 at 224 px: first ``lrp.epsilon`` heatmap 1,171 s -> 36 s, bit-identical maps.
Verified here on a 4-block compact DenseNet (blocks 1,1,1,1, 64 px, one worker building the five
analyzers in turn, 2 shared CPU cores under heavy load): analyzer build fast vs default path
lrp.epsilon 5.2 vs 24.5 s, lrp.z 4.3 vs 60 s, lrp.alpha_1_beta_0 5.6 vs 116 s,
sequential_preset_a 4.0 vs 651 s, sequential_preset_b 8.5 vs 1,966 s (the default path slows
down as the graph grows); relevance sums identical to 7 digits. ``tests/explain/test_lrp.py``
compares both paths on a small CNN (allclose, rtol 1e-6) and ``benchmarks/bench_heatmaps.py
--slow-path`` times them. Analyzers are cached per (method, parameters) inside the worker, so
only the first call of each method pays the building cost.

Sanity: on a trained bias-free CNN, sum(relevance) / logit = 1.0000 for ``lrp.epsilon``
(epsilon=1e-9), ``lrp.z`` and ``lrp.alpha_1_beta_0`` (tested to 1e-3); with biases the sums
were 0.33-0.95 of the logit (bias absorption), the sequential presets (epsilon 0.1 on dense
layers) 0.28-0.52; on an untrained compact DenseNet (BatchNorm) the presets gave sums of 0.6-1.3
for logits of 0.03: do not read preset sums as logits, and check models are trained.

Relevance maps: ``LRPResult.relevance`` is signed float32 [N, H, W] (summed over input
channels; the sum over pixels approximates the explained logit for ``lrp.epsilon``/``lrp.z``
on models without BatchNorm/bias absorption, see the conservation test). For display use
``display_map`` (positive part / max, like Grad-CAM's [0, 1] maps).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from cxrlib.explain._lrp_worker import fast_graph_layer_creation  # noqa: F401  (re-exported)

METHODS: tuple[str, ...] = (
    "lrp.epsilon", "lrp.z", "lrp.alpha_1_beta_0", "lrp.sequential_preset_a", "lrp.sequential_preset_b",
)


@dataclass
class LRPResult:
    """Output of :meth:`LRPExplainer.explain`."""

    relevance: np.ndarray  # float32 [N, H, W], signed, summed over input channels
    class_index: np.ndarray  # int [N]
    logits: np.ndarray  # float32 [N, K], outputs without the final activation
    probs: np.ndarray  # float32 [N, K]
    seconds: float = 0.0  # analysis time of this call (worker side)
    build_seconds: float = 0.0  # analyzer construction time (0 when it was cached)
    channels: np.ndarray | None = field(default=None, repr=False)  # [N, H, W, C] when keep_channels


def display_map(relevance: np.ndarray) -> np.ndarray:
    """Positive relevance scaled to [0, 1] per image ([N, H, W] or [H, W]); zero maps stay zero."""
    rel = np.clip(np.asarray(relevance, dtype=np.float32), 0.0, None)
    axes = tuple(range(rel.ndim - 2, rel.ndim))
    peak = rel.max(axis=axes, keepdims=True)
    return np.divide(rel, peak, out=np.zeros_like(rel), where=peak > 0)


def _check_model_path(model_path) -> Path:
    path = Path(model_path)
    if path.suffix.lower() not in (".h5", ".hdf5"):
        raise ValueError(f"{path}: LRP needs the model saved as .h5 (in graph mode a .keras file loads "
                         "with wrong weights and no error); save with model.save('model.h5')")
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    return path


class LRPExplainer:
    """LRP heatmaps from a saved model, computed in a dedicated graph-mode worker process.

    Args:
        model_path: the model's ``.h5`` file (e.g. ``<stage>/model.h5`` of cxrlib.experiment).
        fast: use :func:`fast_graph_layer_creation` in the worker (default True).
        batch_size: images sent to the worker per call.
    """

    def __init__(self, model_path, fast: bool = True, batch_size: int = 16):
        from cxrlib.explain import _lrp_worker

        self.model_path = _check_model_path(model_path)
        self.fast = bool(fast)
        self.batch_size = int(batch_size)
        ctx = mp.get_context("spawn")  # a fresh interpreter: eager mode can then be disabled
        self._pool = ProcessPoolExecutor(1, mp_context=ctx, initializer=_lrp_worker.init,
                                         initargs=(str(self.model_path), self.fast))
        self.info = self._call(_lrp_worker.info)

    def _call(self, fn, *args):
        try:
            return self._pool.submit(fn, *args).result()
        except BrokenProcessPool as exc:
            raise RuntimeError(f"the LRP worker for {self.model_path} died (model load failure or out of "
                               "memory); run cxrlib.explain._lrp_worker.init in a shell to see why") from exc

    def explain(self, images: np.ndarray, method: str = "lrp.epsilon",
                class_index: int | Sequence[int] | None = None, keep_channels: bool = False,
                **params) -> LRPResult:
        """Relevance maps for a batch of preprocessed images.

        Args:
            images: float32 [N, H, W, C] (or one [H, W, C]) preprocessed for the model.
            method: an iNNvestigate LRP analyzer name (see :data:`METHODS`).
            class_index: None (predicted class), an int, or one int per image.
            keep_channels: also return the per-channel relevance [N, H, W, C].
            **params: analyzer parameters, e.g. ``epsilon=1e-7`` for ``lrp.epsilon``.
        """
        from cxrlib.explain import _lrp_worker

        if not method.startswith("lrp"):
            raise ValueError(f"{method!r} is not an LRP method; expected one of {METHODS}")
        images = np.asarray(images, dtype=np.float32)
        shape = tuple(self.info["input_shape"])
        if images.ndim == len(shape):
            images = images[None]
        if images.shape[1:] != shape:
            raise ValueError(f"images of shape {images.shape} do not fit model input {shape}")
        if not np.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values")
        n = len(images)
        cls = None if class_index is None else np.broadcast_to(np.asarray(class_index, int), (n,))
        parts = []
        for s in range(0, n, self.batch_size):
            sub = None if cls is None else cls[s:s + self.batch_size].tolist()
            parts.append(self._call(_lrp_worker.analyze, method, images[s:s + self.batch_size], sub,
                                    tuple(sorted(params.items()))))
        chans = np.concatenate([p["relevance"] for p in parts])  # [N, H, W, C]
        return LRPResult(relevance=chans.sum(axis=-1), channels=chans if keep_channels else None,
                         class_index=np.concatenate([p["class_index"] for p in parts]),
                         logits=np.concatenate([p["logits"] for p in parts]),
                         probs=np.concatenate([p["probs"] for p in parts]),
                         seconds=float(sum(p["seconds"] for p in parts)),
                         build_seconds=float(sum(p["build_seconds"] for p in parts)))

    def close(self) -> None:
        """Stop the worker process."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "LRPExplainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def lrp(model_path, images: np.ndarray, method: str = "lrp.epsilon",
        class_index: int | Sequence[int] | None = None, fast: bool = True, **params) -> LRPResult:
    """One-shot LRP: start a worker, explain ``images``, stop the worker.

    Args:
        model_path: saved ``.h5`` model.
        images: float32 [N, H, W, C] preprocessed for the model.
        method: iNNvestigate analyzer name (see :data:`METHODS`).
        class_index: None (predicted class), an int, or one int per image.
        fast: see :func:`fast_graph_layer_creation`.
        **params: analyzer parameters (``epsilon=...``).
    """
    with LRPExplainer(model_path, fast=fast) as ex:
        return ex.explain(images, method=method, class_index=class_index, **params)
