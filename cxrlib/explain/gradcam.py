"""Grad-CAM and Grad-CAM++ heatmaps through tf-keras-vis (paper A's explanation method).

API (stable, used by the notebooks):

- ``CamExplainer(model, method="gradcam", layer="auto", min_cam_size=None)``: an
  :class:`cxrlib.explain.base.Explainer`; build once per model, then
  ``explainer.explain(images, class_index=None) -> Heatmaps`` (``maps`` float32 [N, H, W] in
  [0, 1], ``class_index`` int [N], ``prob`` [N] = the model's probability of the explained
  class; ``signed`` False). ``CamResult`` is the same class (older name).
- ``gradcam(model, images, class_index=None, method="gradcam", layer="auto") -> np.ndarray``
  [N, H, W]: one-shot convenience wrapper.
- ``target_layer(model, layer="auto", min_cam_size=None) -> str``: name of the convolutional
  layer the CAM is taken from.

The heavy lifting is tf-keras-vis 0.8.7: ``Gradcam`` / ``GradcamPlusPlus`` with
``ReplaceToLinear`` (the softmax/sigmoid of the last layer is removed so gradients come from the
logit, not the saturated probability). The score callable (:class:`_ClassScore`) picks the
explained neuron (argmax of the logits = argmax of the probabilities, or the given class) and
keeps the logits of that same forward pass, so no second forward pass (``model.predict``) is
needed for the class choice and the probability (that pass was the wrapper's 1.5x overhead).
CAMs are computed by tf-keras-vis at the target layer's resolution, then upsampled to the input
size here (:func:`upsample_cam`: each cell's value on the pixel its receptive field is centred
on, :func:`cxrlib.explain.receptive_field.cell_centres`, bilinear in between; tf-keras-vis'
corner-aligned zoom stretches maps outwards by half a cell) and min-max normalised per image.

Resolution: the CAM cannot be finer than its layer. The compact DenseNet downsamples 32x, so at
64 px its last conv layer is 2x2 and every CAM is one of a few blurred quadrant patterns.
``min_cam_size=8`` takes the last layer whose feature map is at least 8x8 (for DenseNets the
transition conv ``pool3_conv``, 8x8 at 64 px). Measured by ``benchmarks/heatmap_localisation.py``
(paper-B phantoms, scratch compact DenseNet, 48 test images with a lesion, true class explained;
2 shared cores): at 64 px / 12 epochs the 2x2 CAM scores mass inside 0.088 vs chance 0.088 and
pointing game 0.0; finer layers alone do not fix it (0.091-0.125) because that model barely uses
the lesions (filling them with their surroundings: true-class probability 0.79 -> 0.75). At
128 px (12 epochs; filling the lesions drops accuracy 0.75 -> 0.58) Grad-CAM on the 8x8
``pool4_conv`` scores 0.148 (1.7x chance), Grad-CAM++ 0.161 (1.8x), pointing game 0.25. At
128 px with 30 epochs and augmentation (filling the lesions: accuracy 0.79 -> 0.48) Grad-CAM on
the 16x16 ``pool3_conv`` (``min_cam_size=16``) scores 0.194 (2.2x chance), pointing game 0.40,
AUC 0.69; the 4x4 last layer 0.113 (1.3x), 32x32 0.095 (1.1x); Grad-CAM++ at 16x16 0.132.

The quick demo (48 px, issue 11 item 2), measured on the paper-B demo's
data and ``twice`` training (10 source + 4 target epochs), all 53 fold-0 test images with a
lesion, predicted class explained, mass inside / chance and pointing game (2 shared cores,
load 6-15). Default blocks (2, 2, 2, 2), conspicuity 2.5: the 6x6 ``pool3_conv`` CAM 1.03x /
0.08 (LRP-epsilon 1.27x / 0.13). At conspicuity 4: 1.15x / 0.02 with tf-keras-vis' corner-aligned
zoom, 1.24x / 0.08 with :func:`upsample_cam`. Ending the backbone earlier, so that the CAM layer
is the last feature map (``stage.compact_blocks``; conspicuity 4, half-pixel upsampling):
``[2, 2]`` (6x6) 1.45x / 0.36, ``[2, 4]`` (6x6) 1.61x / 0.45, ``[4]`` (12x12) 2.17x / 0.34,
``[6]`` (12x12) 1.93x / 0.55 (LRP alpha_1_beta_0 on the same models: 2.08x / 0.62, 2.36x / 0.68,
2.25x / 0.83, 2.11x / 0.85). Conspicuity 6 with ``[6]``: 1.79x / 0.53. Test accuracy (0.68-0.87
over these settings) does not track the ranking: the gain comes from where the map is read.
Command: ``benchmarks/heatmap_localisation.py`` does the same on a scratch model. In the full
demo runs (``cxr run paper_b --force`` / ``paper_a``, ``[2, 2]``, 16 images) Grad-CAM stays below
the issue's target (paper B twice_onk 1.65x / 0.31, paper A domain_extension 1.34x / 0.06: its
6x6 cells see both lungs and peak between bilateral lesions) while LRP alpha_1_beta_0 lands
(2.56x / 0.88 and 2.65x / 0.50).

Cell geometry (measured 2026-11-30, ``cxr demo --force`` on a quiet machine, paper B
``twice_onk`` fold 0, predicted class): keras' DenseNet stem centres cell ``i`` of the 12x12
map on pixel ``4 i``; until then the map was upsampled with half-pixel centres (``4 i + 1.5``),
which put many peaks on COVID-19 lesions 1-3 px past their edge. Placing cells on their
receptive-field centres moved Grad-CAM from 2.01x / 0.44 to 2.06x / 0.63 on the report's 16
images, and from 2.05x / 0.48 to 2.07x / 0.52 on all 54 fold-0 test images with a lesion
(pointing game on COVID-19 lesions 0.30 -> 0.41, pneumonia 0.67 -> 0.63); paper A's
``domain_extension`` 1.48x / 0.12 -> 1.38x / 0.12. Training is unchanged, so LRP is too.

Training and size, same day (``cxr run paper_b --force --set ...``, fold 0, Grad-CAM on all 54
test images with a lesion, ``twice`` / ``twice_onk``): shipped before (4 epochs, best
val macro-F1) 1.69x / 0.48, 2.07x / 0.52; ``transfer.train.monitor=val_loss`` 1.99x / 0.61,
2.03x / 0.67; + 5 epochs 2.06x / 0.63, 2.03x / 0.67; + 6 epochs (shipped since) 2.06x / 0.63,
2.29x / 0.74; + 8 epochs 2.06x / 0.63, 2.02x / 0.67; + 10 epochs 2.19x / 0.67, 2.02x / 0.67;
6 epochs at 56 px 1.62x / 0.37, 2.35x / 0.59. With best macro-F1: ``transfer.train.lr=0.002``
1.73x / 0.43, 1.84x / 0.57; conspicuity 5 1.73x / 0.37, 1.86x / 0.41; 6 epochs 1.69x / 0.48,
2.29x / 0.74 (``twice`` kept its epoch-2 model). On the report's 16 images: ``stage.augment``
2.29x / 0.56, 2.19x / 0.38; 64 px 2.50x / 0.50, 2.18x / 0.44 (early-advantage claim p = 0.13);
``compact_blocks [2]`` (27-px receptive fields) 1.72x / 0.25, 1.84x / 0.38; ``compact_blocks [3]``
(35 px; 6 epochs, lowest validation loss) 2.21x / 0.44, 2.21x / 0.56 (all 54: 2.26x / 0.44,
2.12x / 0.48; the ONK claim lost its significance, p = 0.18). Grad-CAM's mass
inside the lesion stays near 2x on every well-trained model: the 43-px receptive fields of the
12x12 cells blur the evidence, and which of two equally good models lands is chance.

Scored on every fold-0 test image with a lesion since (``heatmaps.n_scored: all``; the report's
16 images gave a 95 % interval of about +-0.5x chance), same models (``cxr demo --force``, shipped
configs, 2026-11-30): paper B ``twice`` Grad-CAM 2.06x +- 0.25 / 0.63, LRP composite 2.90x +- 0.28 /
0.89; ``twice_onk`` 2.29x +- 0.27 / 0.74 and 3.16x +- 0.25 / 0.96 (54 images); paper A
``domain_extension`` 1.29x +- 0.30 / 0.18 and 2.09x +- 0.37 / 0.49 (45 images).

Models must be *flat* (backbone layers in the same functional graph as the head, see
``cxrlib.models.build_model``); a nested backbone model makes the penultimate layer unreachable
and the error below says so.
"""

from __future__ import annotations

import time
import warnings
from typing import Sequence

import numpy as np

from cxrlib.explain.base import CAM_METHODS, Explainer, Heatmaps, canonical_method, check_images
from cxrlib.explain.base import resolve_classes  # noqa: F401  (re-exported, older import path)
from cxrlib.explain.receptive_field import cell_centres, half_pixel, spatial_shape

METHODS: tuple[str, ...] = CAM_METHODS
CamResult = Heatmaps  # older name of the result type

_POOLING = ("MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D")


def target_layer(model, layer: str | None = "auto", min_cam_size: int | None = None) -> str:
    """Name of the convolutional layer whose activations and gradients build the CAM.

    Args:
        model: a flat keras functional model.
        layer: a layer name (checked: it must exist and output a 4-D feature map);
            ``"auto"`` or None: ``cxrlib.models.last_conv_layer_name`` (the last feature map
            before the head), or with ``min_cam_size`` the last non-pooling layer whose map is
            at least ``min_cam_size`` pixels on its shorter side.
        min_cam_size: smallest acceptable CAM side in feature-map pixels (None: no minimum).

    Raises:
        ValueError: unknown layer, a layer without a spatial output, no layer that large, or a
            nested backbone.
    """
    from tensorflow import keras

    if layer not in (None, "auto"):
        try:
            found = model.get_layer(layer)
        except ValueError as exc:
            raise ValueError(f"layer {layer!r} is not in model {model.name!r}") from exc
        if spatial_shape(found) is None:
            raise ValueError(f"layer {layer!r} outputs {found.output.shape}, "
                             "Grad-CAM needs a 4-D [batch, height, width, channels] feature map")
        return layer
    nested = [l.name for l in model.layers if isinstance(l, keras.Model)]
    if nested:
        raise ValueError(f"model {model.name!r} nests sub-models {nested}: build it flat "
                         "(cxrlib.models.build_model) so Grad-CAM can reach the last conv layer")
    if min_cam_size:
        for found in reversed(model.layers[1:]):
            hw = spatial_shape(found)
            if hw is None or type(found).__name__ in _POOLING or None in hw:
                continue
            if min(hw) >= int(min_cam_size):
                return found.name
        raise ValueError(f"model {model.name!r} has no feature map of at least {min_cam_size}x{min_cam_size}")
    from cxrlib.models import last_conv_layer_name

    return last_conv_layer_name(model)


def upsample_cam(cam: np.ndarray, size: tuple[int, int],
                 grid: tuple[tuple[float, float], tuple[float, float]] | None = None) -> np.ndarray:
    """CAMs [N, h, w] -> [N, H, W], bilinear between cell centres, min-max scaled per map.

    Each cell's value is put on the input pixel its receptive field is centred on, ``grid``
    (:func:`cxrlib.explain.receptive_field.cell_centres`: per axis ``(offset, stride)``, cell
    ``i`` at ``offset + stride * i``), and pixels between centres are interpolated linearly
    (pixels beyond the outer centres take the outer cell's value). Without ``grid``, the
    half-pixel assumption (``tf.image.resize`` / OpenCV, as pytorch-grad-cam): cell ``i`` at the
    middle of pixels ``[i * H / h, (i + 1) * H / h)``. tf-keras-vis' own expansion
    (``scipy.ndimage.zoom``, corner-aligned) puts the first and last cells on the image's edge
    pixels instead, stretching every map outwards by up to half a cell. Maps with no positive
    value stay all-zero (never NaN).
    """
    cam = np.maximum(np.nan_to_num(cam.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    (h, w), (H, W) = cam.shape[1:3], (int(size[0]), int(size[1]))
    rows, cols = grid if grid is not None else (half_pixel(h, H), half_pixel(w, W))
    up = np.einsum("yh,nhw,xw->nyx", _lerp_matrix(H, h, *rows), cam, _lerp_matrix(W, w, *cols))  # [N, H, W]
    lo = up.min(axis=(1, 2), keepdims=True)
    span = up.max(axis=(1, 2), keepdims=True) - lo  # [N, 1, 1]
    return np.where(span > 0, (up - lo) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)


def _lerp_matrix(n_pixels: int, n_cells: int, offset: float, stride: float) -> np.ndarray:
    """[n_pixels, n_cells] linear-interpolation weights from cells centred on ``offset + stride * i``."""
    u = np.clip((np.arange(n_pixels) - offset) / stride, 0, n_cells - 1)  # each pixel in cell units
    i0 = np.floor(u).astype(int)
    i1 = np.minimum(i0 + 1, n_cells - 1)
    frac = (u - i0).astype(np.float32)
    out = np.zeros((n_pixels, n_cells), np.float32)
    np.add.at(out, (np.arange(n_pixels), i0), 1.0 - frac)
    np.add.at(out, (np.arange(n_pixels), i1), frac)
    return out


class _ClassScore:
    """tf-keras-vis score: the logit of the chosen (or arg-max) class; keeps the logits [b, K]."""

    def __init__(self, class_index: np.ndarray | None):
        self.class_index = class_index
        self.logits = None

    def __call__(self, output):  # output: [b, K] logits (ReplaceToLinear)
        import tensorflow as tf

        self.logits = output
        idx = tf.argmax(output, axis=1) if self.class_index is None else tf.constant(self.class_index)
        return tf.gather(output, tf.cast(idx, tf.int32), axis=1, batch_dims=1)  # [b]


def _import_vis():
    """tf-keras-vis classes; its ``scipy.ndimage.interpolation`` import warns (kept out of reports)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from tf_keras_vis.gradcam import Gradcam
        from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
        from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    return Gradcam, GradcamPlusPlus, ReplaceToLinear


class CamExplainer(Explainer):
    """Grad-CAM / Grad-CAM++ for one model (the tf-keras-vis visualiser is built once).

    Args:
        model: a flat keras model (softmax or sigmoid head).
        method: ``"gradcam"`` or ``"gradcam++"`` (config spellings such as
            ``gradcam_plus_plus`` accepted).
        layer: conv layer name, or ``"auto"`` (see :func:`target_layer`).
        min_cam_size: with ``layer="auto"``, the smallest CAM side (see :func:`target_layer`).
        batch_size: images per gradient call (memory bound).
    """

    signed = False

    def __init__(self, model, method: str = "gradcam", layer: str | None = "auto",
                 min_cam_size: int | None = None, batch_size: int = 16):
        from tensorflow import keras

        Gradcam, GradcamPlusPlus, ReplaceToLinear = _import_vis()
        method = canonical_method(method)
        if method not in METHODS:
            raise ValueError(f"{method!r} is not a CAM method; expected one of {METHODS}")
        self.model = model
        self.method = method
        self.layer = target_layer(model, layer, min_cam_size)
        self._hw = spatial_shape(model.get_layer(self.layer))  # (h, w) of the CAM before upsampling
        # where each cell looks on the input (None: unknown layers, half-pixel assumption)
        self.grid = cell_centres(model, self.layer)
        self.batch_size = int(batch_size)
        last = model.layers[-1]
        act = getattr(last, "activation", None)
        self._activation = act if act is not None else keras.activations.linear  # logits -> probs
        cls = Gradcam if method == "gradcam" else GradcamPlusPlus
        # ReplaceToLinear works on a clone, so the caller's model keeps its softmax.
        self._vis = cls(model, model_modifier=ReplaceToLinear(), clone=True)

    def explain(self, images: np.ndarray, class_index: int | Sequence[int] | None = None) -> Heatmaps:
        """Heatmaps for a batch of preprocessed images.

        Args:
            images: float32 [N, H, W, C] (or one [H, W, C] image), preprocessed for the model.
            class_index: None for the predicted class, else an int or one int per image.

        Returns:
            Heatmaps with maps [N, H, W] in [0, 1] (all-zero when the class has no positive
            evidence, never NaN), the explained class and its probability.
        """
        import tensorflow as tf

        images = check_images(images, self.model.input_shape[1:])
        n, k = len(images), int(self.model.output_shape[-1])
        cls = None if class_index is None else resolve_classes(np.zeros((n, k)), class_index)
        t0 = time.perf_counter()
        maps, logits = [], []
        for start in range(0, n, self.batch_size):
            sl = slice(start, start + self.batch_size)
            score = _ClassScore(None if cls is None else cls[sl])
            cam = self._vis(score, images[sl], penultimate_layer=self.layer, seek_penultimate_conv_layer=False,
                            expand_cam=False, normalize_cam=False)  # [b, h, w] at the layer's resolution
            maps.append(upsample_cam(np.asarray(cam, dtype=np.float32).reshape(len(images[sl]), *self._hw),
                                     images.shape[1:3], self.grid))  # [b, H, W] in [0, 1]
            logits.append(np.asarray(score.logits, dtype=np.float32))  # [b, K]
        logits = np.concatenate(logits)
        probs = np.asarray(self._activation(tf.constant(logits)), dtype=np.float32)  # [N, K]
        idx = resolve_classes(logits, cls)  # argmax of logits = argmax of probs
        maps = np.clip(np.nan_to_num(np.concatenate(maps), nan=0.0, posinf=0.0, neginf=0.0), 0.0, 1.0)
        return Heatmaps(maps=maps, class_index=idx, prob=probs[np.arange(n), idx], signed=False,
                        method=self.method, probs=probs, logits=logits, seconds=time.perf_counter() - t0)


def gradcam(model, images: np.ndarray, class_index: int | Sequence[int] | None = None,
            method: str = "gradcam", layer: str | None = "auto", min_cam_size: int | None = None) -> np.ndarray:
    """Grad-CAM (or Grad-CAM++) maps [N, H, W] in [0, 1] for the predicted or chosen class.

    Args:
        model: a flat keras model.
        images: float32 [N, H, W, C], preprocessed for the model.
        class_index: None (predicted class), an int, or one int per image.
        method: ``"gradcam"`` or ``"gradcam++"``.
        layer: conv layer name or ``"auto"``.
        min_cam_size: see :func:`target_layer`.
    """
    return CamExplainer(model, method=method, layer=layer, min_cam_size=min_cam_size).explain(images, class_index).maps
