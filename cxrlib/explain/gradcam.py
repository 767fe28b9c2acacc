"""Grad-CAM and Grad-CAM++ heatmaps through tf-keras-vis (paper A's explanation method).

API (stable, used by the notebooks):

- ``CamExplainer(model, method="gradcam", layer="auto")``: build once per model, then
  ``explainer.explain(images, class_index=None) -> CamResult`` (``maps`` float32 [N, H, W] in
  [0, 1], ``class_index`` int [N], ``scores`` [N] = the model output of the explained class).
- ``gradcam(model, images, class_index=None, method="gradcam", layer="auto") -> np.ndarray``
  [N, H, W]: one-shot convenience wrapper.
- ``target_layer(model, layer="auto") -> str``: name of the convolutional layer the CAM is taken
  from.

The heavy lifting is tf-keras-vis 0.8.7: ``Gradcam`` / ``GradcamPlusPlus`` with
``ReplaceToLinear`` (the softmax/sigmoid of the last layer is removed so gradients come from the
logit, not the saturated probability) and ``CategoricalScore`` (the class neuron to explain).
CAMs are computed at the penultimate conv layer's resolution and zoomed (bilinear, by
tf-keras-vis) to the input size, then min-max normalised per image by tf-keras-vis.

Models must be *flat* (backbone layers in the same functional graph as the head, see
``cxrlib.models.build_model``); a nested backbone model makes the penultimate layer unreachable
and the error below says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

METHODS: tuple[str, ...] = ("gradcam", "gradcam++")


@dataclass
class CamResult:
    """Output of :meth:`CamExplainer.explain`."""

    maps: np.ndarray  # float32 [N, H, W], each map in [0, 1]
    class_index: np.ndarray  # int [N], the explained output neuron per image
    scores: np.ndarray  # float32 [N], model output (probability) of that neuron


def _is_conv_output(layer) -> bool:
    """True when the layer outputs a 4-D [B, h, w, C] feature map."""
    try:
        shape = layer.output.shape
    except AttributeError:  # layer never called (should not happen in a built functional model)
        return False
    return len(shape) == 4


def target_layer(model, layer: str | None = "auto") -> str:
    """Name of the convolutional layer whose activations and gradients build the CAM.

    Args:
        model: a flat keras functional model.
        layer: a layer name (checked: it must exist and output a 4-D feature map);
            ``"auto"`` or None: ``cxrlib.models.last_conv_layer_name`` when it is available,
            otherwise tf-keras-vis' own search (the last ``Conv`` layer of the model).

    Raises:
        ValueError: unknown layer, a layer without a spatial output, or a nested backbone.
    """
    from tensorflow import keras

    if layer not in (None, "auto"):
        try:
            found = model.get_layer(layer)
        except ValueError as exc:
            raise ValueError(f"layer {layer!r} is not in model {model.name!r}") from exc
        if not _is_conv_output(found):
            raise ValueError(f"layer {layer!r} outputs {found.output.shape}, "
                             "Grad-CAM needs a 4-D [batch, height, width, channels] feature map")
        return layer
    nested = [l.name for l in model.layers if isinstance(l, keras.Model)]
    if nested:
        raise ValueError(f"model {model.name!r} nests sub-models {nested}: build it flat "
                         "(cxrlib.models.build_model) so Grad-CAM can reach the last conv layer")
    try:
        from cxrlib.models import last_conv_layer_name
    except ImportError:  # models module not available: fall back to tf-keras-vis' search
        last_conv_layer_name = None
    if last_conv_layer_name is not None:
        return last_conv_layer_name(model)
    from tf_keras_vis.utils import find_layer
    from keras.src.layers.convolutional.base_conv import Conv

    found = find_layer(model, lambda l: isinstance(l, Conv))
    if found is None:
        raise ValueError(f"model {model.name!r} has no convolutional layer for Grad-CAM")
    return found.name


def _check_images(model, images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    expected = tuple(model.input_shape[1:])
    if images.ndim == len(expected):  # a single image -> batch of one
        images = images[None]
    if images.ndim != len(expected) + 1 or any(
        e is not None and e != s for e, s in zip(expected, images.shape[1:])
    ):
        raise ValueError(f"images of shape {images.shape} do not fit model input {model.input_shape}")
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


class CamExplainer:
    """Grad-CAM / Grad-CAM++ for one model (the tf-keras-vis visualiser is built once).

    Args:
        model: a flat keras model (softmax or sigmoid head).
        method: ``"gradcam"`` or ``"gradcam++"``.
        layer: conv layer name, or ``"auto"`` (see :func:`target_layer`).
        batch_size: images per gradient call (memory bound).
    """

    def __init__(self, model, method: str = "gradcam", layer: str | None = "auto", batch_size: int = 16):
        from tf_keras_vis.gradcam import Gradcam
        from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
        from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

        method = method.lower().replace("_", "").replace("plusplus", "++").replace("pp", "++")
        if method not in METHODS:
            raise ValueError(f"unknown CAM method {method!r}; expected one of {METHODS}")
        self.model = model
        self.method = method
        self.layer = target_layer(model, layer)
        self.batch_size = int(batch_size)
        cls = Gradcam if method == "gradcam" else GradcamPlusPlus
        # ReplaceToLinear works on a clone, so the caller's model keeps its softmax.
        self._vis = cls(model, model_modifier=ReplaceToLinear(), clone=True)

    def explain(self, images: np.ndarray, class_index: int | Sequence[int] | None = None) -> CamResult:
        """Heatmaps for a batch of preprocessed images.

        Args:
            images: float32 [N, H, W, C] (or one [H, W, C] image), preprocessed for the model.
            class_index: None for the predicted class, else an int or one int per image.

        Returns:
            CamResult with maps [N, H, W] in [0, 1] (all-zero when the class has no positive
            evidence, never NaN).
        """
        from tf_keras_vis.utils.scores import CategoricalScore

        images = _check_images(self.model, images)
        probs = self.model.predict(images, batch_size=self.batch_size, verbose=0)  # [N, K]
        idx = resolve_classes(probs, class_index)
        maps = []
        for start in range(0, len(images), self.batch_size):
            sl = slice(start, start + self.batch_size)
            cam = self._vis(CategoricalScore(list(idx[sl])), images[sl],
                            penultimate_layer=self.layer, seek_penultimate_conv_layer=False,
                            expand_cam=True, normalize_cam=True)  # [b, H, W]
            maps.append(np.asarray(cam, dtype=np.float32).reshape(-1, *images.shape[1:3]))
        maps = np.nan_to_num(np.concatenate(maps), nan=0.0, posinf=0.0, neginf=0.0)
        scores = probs[np.arange(len(idx)), idx].astype(np.float32)
        return CamResult(maps=np.clip(maps, 0.0, 1.0), class_index=idx, scores=scores)


def gradcam(model, images: np.ndarray, class_index: int | Sequence[int] | None = None,
            method: str = "gradcam", layer: str | None = "auto") -> np.ndarray:
    """Grad-CAM (or Grad-CAM++) maps [N, H, W] in [0, 1] for the predicted or chosen class.

    Args:
        model: a flat keras model.
        images: float32 [N, H, W, C], preprocessed for the model.
        class_index: None (predicted class), an int, or one int per image.
        method: ``"gradcam"`` or ``"gradcam++"``.
        layer: conv layer name or ``"auto"``.
    """
    return CamExplainer(model, method=method, layer=layer).explain(images, class_index).maps
