"""The one explainer protocol shared by every heatmap method (Grad-CAM, Grad-CAM++, LRP).

API (stable):

- ``Heatmaps``: what every explainer returns: ``maps`` float32 [N, H, W], ``class_index`` int
  [N] (the explained output neuron), ``prob`` float32 [N] (the model's probability of that
  neuron), ``signed`` (True for LRP relevance, False for [0, 1] CAMs), ``method``; optional
  ``probs``/``logits`` [N, K], timings, per-channel relevance. ``display()`` gives [0, 1] maps.
- ``Explainer``: base class: ``explain(images, class_index=None) -> Heatmaps``, ``close()``,
  context manager. One subclass per method family, one file each (``gradcam.py``, ``lrp.py``),
  like tf-keras-vis' one-module-per-method layout; :mod:`cxrlib.explain.factory` picks.
- ``canonical_method(name) -> str``: ``gradcam_plus_plus``/``gradcampp``/``Grad-CAM++`` ->
  ``gradcam++``; ``lrp.*`` names are iNNvestigate's and kept as they are.
- ``check_images(images, input_shape)``, ``resolve_classes(probs, class_index)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

CAM_METHODS: tuple[str, ...] = ("gradcam", "gradcam++")
LRP_METHODS: tuple[str, ...] = (
    "lrp.epsilon", "lrp.z", "lrp.alpha_1_beta_0", "lrp.sequential_preset_a", "lrp.sequential_preset_b",
)


def canonical_method(name: str) -> str:
    """Normalise a method name (config spellings) to ``gradcam``, ``gradcam++`` or ``lrp.*``.

    Raises:
        ValueError: naming the method and the known ones.
    """
    raw = str(name).strip()
    low = raw.lower()
    if low.startswith("lrp"):
        return low
    key = low.replace("-", "").replace("_", "").replace(" ", "")
    key = key.replace("plusplus", "++").replace("pp", "++")
    if key in CAM_METHODS:
        return key
    raise ValueError(f"unknown heatmap method {raw!r}; expected one of {CAM_METHODS + LRP_METHODS}")


def display_map(relevance: np.ndarray) -> np.ndarray:
    """Positive relevance scaled to [0, 1] per image ([N, H, W] or [H, W]); zero maps stay zero."""
    rel = np.clip(np.asarray(relevance, dtype=np.float32), 0.0, None)
    axes = tuple(range(rel.ndim - 2, rel.ndim))
    peak = rel.max(axis=axes, keepdims=True)
    return np.divide(rel, peak, out=np.zeros_like(rel), where=peak > 0)


@dataclass
class Heatmaps:
    """Heatmaps of one explainer call (the same type for every method)."""

    maps: np.ndarray  # float32 [N, H, W]: CAM in [0, 1], or signed LRP relevance (summed over channels)
    class_index: np.ndarray  # int [N], explained output neuron per image
    prob: np.ndarray  # float32 [N], model probability of that neuron
    signed: bool = False  # True: maps are signed relevance (LRP); False: [0, 1] (Grad-CAM)
    method: str = ""
    probs: np.ndarray | None = field(default=None, repr=False)  # [N, K] model outputs
    logits: np.ndarray | None = field(default=None, repr=False)  # [N, K] before the output activation
    seconds: float = 0.0  # analysis time of this call
    build_seconds: float = 0.0  # analyzer construction time paid by this call (0 when cached)
    channels: np.ndarray | None = field(default=None, repr=False)  # [N, H, W, C] (LRP, keep_channels)

    @property
    def relevance(self) -> np.ndarray:
        """The maps (name used by LRP code: signed relevance [N, H, W])."""
        return self.maps

    @property
    def scores(self) -> np.ndarray:
        """The explained neuron's probability [N] (name used by earlier Grad-CAM code)."""
        return self.prob

    def display(self) -> np.ndarray:
        """[N, H, W] maps in [0, 1] for display: positive relevance / max for signed maps."""
        return display_map(self.maps) if self.signed else self.maps

    def __len__(self) -> int:
        return len(self.maps)


def check_images(images: np.ndarray, input_shape: Sequence[int | None]) -> np.ndarray:
    """float32 batch [N, H, W, C] matching the model input (one [H, W, C] image is batched).

    Raises:
        ValueError: wrong shape, or NaN / infinite values.
    """
    images = np.asarray(images, dtype=np.float32)
    expected = tuple(input_shape)
    if images.ndim == len(expected):  # a single image -> batch of one
        images = images[None]
    if images.ndim != len(expected) + 1 or any(
        e is not None and e != s for e, s in zip(expected, images.shape[1:])
    ):
        raise ValueError(f"images of shape {images.shape} do not fit model input {(None, *expected)}")
    if not np.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values")
    return images


def resolve_classes(probs: np.ndarray, class_index: int | Sequence[int] | None) -> np.ndarray:
    """Per-image output neuron to explain: the predicted class (argmax) or the chosen one(s).

    Args:
        probs: model outputs [N, K].
        class_index: None (predicted class), one int for every image, or one int per image.
    """
    n, k = probs.shape
    if class_index is None:
        idx = probs.argmax(axis=1)
    else:
        idx = np.broadcast_to(np.asarray(class_index, dtype=int), (n,)).copy()
    if ((idx < 0) | (idx >= k)).any():
        raise ValueError(f"class index {class_index!r} outside the model's {k} outputs")
    return idx.astype(int)


class Explainer:
    """Base of every heatmap method: ``explain(images, class_index=None) -> Heatmaps``.

    Subclasses set ``method`` and implement :meth:`explain`; ``close`` releases resources
    (the LRP worker process). Use as a context manager, or through
    :class:`cxrlib.explain.factory.ExplainerCache`, which closes what it built.
    """

    method: str = ""
    signed: bool = False

    def explain(self, images: np.ndarray, class_index: int | Sequence[int] | None = None) -> Heatmaps:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (nothing by default)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
