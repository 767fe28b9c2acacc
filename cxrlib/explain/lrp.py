"""Layer-wise Relevance Propagation through iNNvestigate 2.1.2 (paper B's explanation method).

API (stable, used by the notebooks):

- ``LRPExplainer(model_path, method="lrp.epsilon", fast=True, worker=None, **params)``: an
  :class:`cxrlib.explain.base.Explainer`; starts one graph-mode worker process that loads the
  saved ``.h5`` model (or uses a shared :class:`LRPWorker`); use as a context manager (or call
  ``close()``). ``explainer.explain(images, class_index=None) -> Heatmaps`` (``maps`` = signed
  relevance [N, H, W], ``signed`` True, ``prob``, ``probs``, ``logits``). The older call
  ``explain(images, "lrp.z", class_index=...)`` (method second) still works. ``LRPResult`` is
  the same class as ``Heatmaps``.
- ``LRPWorker(model_path, fast=True, process=None)``: a model in a worker process; one per model
  serves every LRP method (analyzers cached inside). ``LRPProcess(fast=True)``: the spawned
  process, which can hold several models: :class:`cxrlib.explain.factory.ExplainerCache` starts
  one per notebook for all its models (one TensorFlow import and process start instead of one
  per model).
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
only the first call of each method pays the building cost. Each call runs relevance,
probabilities and logits in one session run (one forward pass; see ``_lrp_worker._fused``).
Overhead over bare iNNvestigate (``benchmarks/bench_heatmaps.py --backbone densenet121 --size 224
--images 4 --repeats 3 --methods lrp.epsilon``, load average 3.3 -> 2.6 on 2 cores): 0.242 vs
0.229 s per image (1.06x; before the fused call: 0.30 vs 0.20 s). Under heavy load (12-16) the
same command gave 0.51 vs 0.99 s (0.52x): compare ratios from quiet runs only. On the 64 px
compact DenseNet the worker round trip (~30 ms per call) is what remains: 0.018 vs 0.011 s per
image (load 8-10).

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
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Sequence

import numpy as np

from cxrlib.explain._lrp_worker import fast_graph_layer_creation  # noqa: F401  (re-exported)
from cxrlib.explain.base import LRP_METHODS, Explainer, Heatmaps, check_images, display_map  # noqa: F401

METHODS: tuple[str, ...] = LRP_METHODS
LRPResult = Heatmaps  # older name of the result type


def _check_model_path(model_path) -> Path:
    path = Path(model_path)
    if path.suffix.lower() not in (".h5", ".hdf5"):
        raise ValueError(f"{path}: LRP needs the model saved as .h5 (in graph mode a .keras file loads "
                         "with wrong weights and no error); save with model.save('model.h5')")
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    return path


class LRPProcess:
    """One spawned graph-mode process; it can hold several saved models side by side.

    Args:
        fast: use :func:`fast_graph_layer_creation` in the process (default True).
    """

    def __init__(self, fast: bool = True):
        from cxrlib.explain import _lrp_worker

        self.fast = bool(fast)
        ctx = mp.get_context("spawn")  # a fresh interpreter: eager mode can then be disabled
        self._pool = ProcessPoolExecutor(1, mp_context=ctx, initializer=_lrp_worker.init,
                                         initargs=(None, self.fast))

    def call(self, fn, *args, what: str = "LRP worker process"):
        """Run ``fn(*args)`` in the process and return its result."""
        try:
            return self._pool.submit(fn, *args).result()
        except BrokenProcessPool as exc:
            raise RuntimeError(f"the {what} died (model load failure or out of memory); run "
                               "cxrlib.explain._lrp_worker.init in a shell to see why") from exc

    def close(self) -> None:
        """Stop the process."""
        self._pool.shutdown(wait=True, cancel_futures=True)


class LRPWorker:
    """One saved model in a graph-mode worker process (all LRP methods share it).

    Args:
        model_path: the model's ``.h5`` file.
        fast: use :func:`fast_graph_layer_creation` in the worker (default True).
        process: an :class:`LRPProcess` shared with other models (not stopped by :meth:`close`;
            :class:`cxrlib.explain.factory.ExplainerCache` shares one per notebook); None starts
            a process of its own.
    """

    def __init__(self, model_path, fast: bool = True, process: LRPProcess | None = None):
        from cxrlib.explain import _lrp_worker

        self.model_path = _check_model_path(model_path)
        self._owns = process is None
        self.process = LRPProcess(fast) if process is None else process
        self.fast = self.process.fast
        self.info = self.call(_lrp_worker.load, str(self.model_path))

    def call(self, fn, *args):
        """Run ``fn(*args)`` in the worker process and return its result."""
        return self.process.call(fn, *args, what=f"LRP worker for {self.model_path}")

    def analyze(self, method: str, images: np.ndarray, class_index, params: tuple = ()) -> dict:
        """:func:`cxrlib.explain._lrp_worker.analyze` on this worker's model."""
        from cxrlib.explain import _lrp_worker

        return self.call(_lrp_worker.analyze, str(self.model_path), method, images, class_index, params)

    def close(self) -> None:
        """Stop the worker process (when this worker started it)."""
        if self._owns:
            self.process.close()


class LRPExplainer(Explainer):
    """LRP heatmaps from a saved model, computed in a dedicated graph-mode worker process.

    Args:
        model_path: the model's ``.h5`` file (e.g. ``<stage>/model.h5`` of cxrlib.experiment).
        method: an iNNvestigate LRP analyzer name (see :data:`METHODS`).
        fast: use :func:`fast_graph_layer_creation` in the worker (default True).
        batch_size: images sent to the worker per call.
        worker: a shared :class:`LRPWorker` of the same model (not closed by :meth:`close`);
            None starts a worker owned by this explainer.
        **params: analyzer parameters, e.g. ``epsilon=1e-7`` for ``lrp.epsilon``.
    """

    signed = True

    def __init__(self, model_path, method: str = "lrp.epsilon", fast: bool = True, batch_size: int = 16,
                 worker: LRPWorker | None = None, **params):
        self.method = self._check_method(method)
        self.params = dict(params)
        self.batch_size = int(batch_size)
        self._owns = worker is None
        self.worker = LRPWorker(model_path, fast=fast) if worker is None else worker
        self.model_path, self.fast, self.info = self.worker.model_path, self.worker.fast, self.worker.info

    @staticmethod
    def _check_method(method: str) -> str:
        method = str(method).strip().lower()
        if not method.startswith("lrp"):
            raise ValueError(f"{method!r} is not an LRP method; expected one of {METHODS}")
        return method

    def explain(self, images: np.ndarray, *args, class_index: int | Sequence[int] | None = None,
                method: str | None = None, keep_channels: bool = False, **params) -> Heatmaps:
        """Relevance maps for a batch of preprocessed images: ``explain(images, class_index=None)``.

        Args:
            images: float32 [N, H, W, C] (or one [H, W, C]) preprocessed for the model.
            *args: ``class_index`` positionally (the protocol's call), or the older
                ``explain(images, "lrp.z", class_index=...)`` with the method second.
            class_index: None (predicted class), an int, or one int per image.
            method: another LRP analyzer than the explainer's own for this call.
            keep_channels: also return the per-channel relevance [N, H, W, C].
            **params: analyzer parameters overriding the explainer's.
        """
        if len(args) > 1:
            raise TypeError(f"explain() takes images and one positional argument, got {1 + len(args)}")
        if args and isinstance(args[0], str):  # older call: explain(images, "lrp.z", class_index=...)
            method = args[0]
        elif args:
            class_index = args[0]
        method = self._check_method(method or self.method)
        params = tuple(sorted({**self.params, **params}.items()))
        images = check_images(images, self.info["input_shape"])
        n, k = len(images), int(self.info["n_outputs"])
        cls = None if class_index is None else np.broadcast_to(np.asarray(class_index, int), (n,))
        if cls is not None and ((cls < 0) | (cls >= k)).any():
            raise ValueError(f"class index {class_index!r} outside the model's {k} outputs")
        parts = [self.worker.analyze(method, images[s:s + self.batch_size],
                                     None if cls is None else cls[s:s + self.batch_size].tolist(), params)
                 for s in range(0, n, self.batch_size)]
        chans = np.concatenate([p["relevance"] for p in parts])  # [N, H, W, C]
        idx = np.concatenate([p["class_index"] for p in parts])
        probs = np.concatenate([p["probs"] for p in parts])  # [N, K]
        return Heatmaps(maps=chans.sum(axis=-1), class_index=idx, prob=probs[np.arange(n), idx], signed=True,
                        method=method, probs=probs, logits=np.concatenate([p["logits"] for p in parts]),
                        seconds=float(sum(p["seconds"] for p in parts)),
                        build_seconds=float(sum(p["build_seconds"] for p in parts)),
                        channels=chans if keep_channels else None)

    def close(self) -> None:
        """Stop the worker process (when this explainer started it)."""
        if self._owns:
            self.worker.close()


def lrp(model_path, images: np.ndarray, method: str = "lrp.epsilon",
        class_index: int | Sequence[int] | None = None, fast: bool = True, **params) -> Heatmaps:
    """One-shot LRP: start a worker, explain ``images``, stop the worker.

    Args:
        model_path: saved ``.h5`` model.
        images: float32 [N, H, W, C] preprocessed for the model.
        method: iNNvestigate analyzer name (see :data:`METHODS`).
        class_index: None (predicted class), an int, or one int per image.
        fast: see :func:`fast_graph_layer_creation`.
        **params: analyzer parameters (``epsilon=...``).
    """
    with LRPExplainer(model_path, method=method, fast=fast, **params) as ex:
        return ex.explain(images, class_index)
