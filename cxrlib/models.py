"""Model builders: flat functional Keras models for both papers.

API (stable; called by cxrlib.transfer, cxrlib.experiment, cxrlib.explain, the notebooks):

- ``build_model(backbone, input_shape, n_outputs, activation, weights=None, ...) -> keras.Model``
- ``last_conv_layer_name(model) -> str`` (the layer Grad-CAM hooks into)
- ``feature_layer_name(model) -> str`` (the layer feeding the head; see ``HEAD_LAYERS``)
- ``layer_blocks(model) -> list[(block_name, [layer, ...])]`` (backbone blocks, input to output;
  used by the freezing schedules in cxrlib.transfer)
- ``load_model(path) -> keras.Model`` (``.h5`` files written by cxrlib, compile=False)
- ``BACKBONES``, ``HEAD_LAYERS``, ``ImageNetWeightsUnavailable``, ``imagenet_weights_file(backbone)``

Backbones: ``densenet121`` / ``densenet201`` (paper B), ``vgg16``, ``resnet50`` and ``plain_cnn``
(paper A compared several backbones), and ``compact_densenet`` (keras' DenseNet builder with
``blocks=(2, 2, 2, 2)``: ~0.42 M parameters, the embedded default that trains in minutes on
2 CPU cores; DenseNet121 trains at ~2.6 img/s at 224 px on the same machine).

Every model is **flat**: the backbone is built by ``keras.applications`` with
``input_tensor=...``, so its layers live in the same functional graph as the head instead of
a nested ``Model`` layer. Grad-CAM and LRP need this to reach the last convolutional layer
("Graph disconnected" otherwise). The head is always::

    backbone features [B, h, w, C] -> GlobalAveragePooling2D 'gap' [B, C]
        -> Dropout 'head_dropout' (rate may be 0) -> Dense 'head' [B, n_outputs]

with softmax for the target tasks and sigmoid for the 14-finding NIH source task.

Weights: ``None`` (random init), ``"imagenet"`` (keras.applications' real download, cached as
``~/.keras/models/<file>``; offline it raises :class:`ImageNetWeightsUnavailable` saying which
file to put where), or the path of an ``.h5`` file from an earlier stage (a full model or
weights file): layers are matched by name and layers whose shapes differ (typically the head)
are skipped; use :mod:`cxrlib.transfer` for explicit head replacement and neuron keeping.

Grey-scale input (``input_shape[-1] == 1``) with ImageNet weights: the ImageNet kernels expect
3 channels, so a parameter-free ``Concatenate`` layer ``gray_to_rgb`` repeats the channel
three times in front of the backbone (equivalent to feeding a grey image as RGB, which is what
both papers did). Without ImageNet weights a 1-channel backbone is built directly.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Sequence

from cxrlib import runtime  # noqa: F401  (sets TF env defaults before TF is imported)

import tensorflow as tf
from tensorflow import keras

BACKBONES: tuple[str, ...] = (
    "compact_densenet", "densenet121", "densenet201", "vgg16", "resnet50", "plain_cnn",
)
# Layers after the backbone, in graph order. 'head' is the output layer.
HEAD_LAYERS: tuple[str, ...] = ("gap", "head_dropout", "head")
COMPACT_DENSENET_BLOCKS: tuple[int, ...] = (2, 2, 2, 2)

# keras.applications file names of the ImageNet weights without the top (include_top=False).
_IMAGENET_FILES = {
    "densenet121": ("densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
                    "https://storage.googleapis.com/tensorflow/keras-applications/densenet/"),
    "densenet201": ("densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5",
                    "https://storage.googleapis.com/tensorflow/keras-applications/densenet/"),
    "vgg16": ("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
              "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"),
    "resnet50": ("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"),
}


class ImageNetWeightsUnavailable(RuntimeError):
    """ImageNet weights were requested but cannot be found in the keras cache nor downloaded."""


def keras_cache_dir() -> Path:
    """Folder where keras.applications caches weight files (``$KERAS_HOME/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def imagenet_weights_file(backbone: str) -> Path:
    """Path where keras.applications expects the ImageNet (no-top) weights of ``backbone``.

    Args:
        backbone: one of the ImageNet-capable backbones (densenet121, densenet201, vgg16, resnet50).
    """
    if backbone not in _IMAGENET_FILES:
        raise ImageNetWeightsUnavailable(
            f"backbone {backbone!r} has no ImageNet weights in keras.applications; "
            f"ImageNet-capable backbones: {', '.join(_IMAGENET_FILES)}. Use weights=None "
            "(the 'twice' strategy then records that its first step started from scratch)."
        )
    return keras_cache_dir() / _IMAGENET_FILES[backbone][0]


def _imagenet_help(backbone: str, reason: str) -> str:
    fname, base = _IMAGENET_FILES[backbone]
    return (
        f"ImageNet weights for {backbone} are not available ({reason}). keras.applications "
        f"downloads them once from {base}{fname} and caches them as {keras_cache_dir() / fname}. "
        "On an offline machine, copy that file there (from any machine where "
        f"`keras.applications.{_KERAS_FN[backbone].__name__}(weights='imagenet', include_top=False)` "
        "ran, it is in ~/.keras/models/), or set KERAS_HOME to a folder holding models/"
        f"{fname}; or train with weights=None."
    )


def _check_imagenet_available(backbone: str) -> None:
    """Fail early, with instructions, when the ImageNet file is absent and cannot be fetched."""
    path = imagenet_weights_file(backbone)
    if path.is_file():
        return
    if os.environ.get("CXR_NO_DOWNLOAD", "") not in ("", "0"):
        raise ImageNetWeightsUnavailable(_imagenet_help(backbone, "not in the keras cache and "
                                                        "CXR_NO_DOWNLOAD is set"))
    fname, base = _IMAGENET_FILES[backbone]
    try:
        keras.utils.get_file(fname, base + fname, cache_subdir="models")
    except Exception as exc:  # offline: URL fetch failure, DNS error, proxy, ...
        raise ImageNetWeightsUnavailable(
            _imagenet_help(backbone, f"download failed: {type(exc).__name__}: {exc}")
        ) from exc


def _compact_densenet(blocks: Sequence[int], growth_rate: int = 32, init_features: int = 64):
    from keras.src.applications import densenet  # the generic builder is not re-exported

    def build(include_top, weights, input_tensor, **kw):
        if (growth_rate, init_features, len(blocks)) == (32, 64, 4):  # keras' builder: 4 blocks
            return densenet.DenseNet(list(blocks), include_top=include_top, weights=weights,
                                     input_tensor=input_tensor, **kw)
        return _densenet_any_growth(input_tensor, blocks, growth_rate, init_features)

    return build


def _densenet_any_growth(x: tf.Tensor, blocks: Sequence[int], growth_rate: int,
                         init_features: int) -> keras.Model:
    """keras' DenseNet-BC for any growth rate / stem width, with keras.applications' layer names.

    ``keras.applications``' ``DenseNet(blocks)`` fixes growth rate 32 and a 64-filter stem;
    torchvision-layout checkpoints (:mod:`cxrlib.weights`) may use others (and other block
    counts). This repeats
    keras' stem and reuses its ``conv_block`` / ``transition_block`` unchanged, so every
    layer name (``conv1/conv``, ``conv2_block1_1_conv``, ``pool2_conv``, ``bn``, ``relu``)
    matches ``keras.applications.DenseNet121``. The bottleneck is 4 x growth (bn_size 4).
    """
    from keras.src.applications import densenet
    from keras.src.utils import layer_utils

    y = keras.layers.ZeroPadding2D(padding=((3, 3), (3, 3)))(x)
    y = keras.layers.Conv2D(init_features, 7, strides=2, use_bias=False, name="conv1/conv")(y)
    y = keras.layers.BatchNormalization(axis=3, epsilon=1.001e-5, name="conv1/bn")(y)
    y = keras.layers.Activation("relu", name="conv1/relu")(y)
    y = keras.layers.ZeroPadding2D(padding=((1, 1), (1, 1)))(y)
    y = keras.layers.MaxPooling2D(3, strides=2, name="pool1")(y)  # [B, H/4, W/4, init_features]
    for i, n_layers in enumerate(blocks):
        for j in range(n_layers):  # each unit adds growth_rate channels
            y = densenet.conv_block(y, growth_rate, name=f"conv{i + 2}_block{j + 1}")
        if i < len(blocks) - 1:  # halves channels and resolution
            y = densenet.transition_block(y, 0.5, name=f"pool{i + 2}")
    y = keras.layers.BatchNormalization(axis=3, epsilon=1.001e-5, name="bn")(y)
    y = keras.layers.Activation("relu", name="relu")(y)  # [B, h, w, C]
    return keras.Model(layer_utils.get_source_inputs(x), y, name="densenet")


_KERAS_FN = {
    "densenet121": keras.applications.DenseNet121,
    "densenet201": keras.applications.DenseNet201,
    "vgg16": keras.applications.VGG16,
    "resnet50": keras.applications.ResNet50,
}


def _plain_cnn(x: tf.Tensor, filters: Sequence[int] = (16, 32, 64, 128)) -> tf.Tensor:
    """A small VGG-style CNN: per block Conv3x3-BN-ReLU then MaxPool (last block: no pool)."""
    for i, f in enumerate(filters, start=1):
        x = keras.layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"block{i}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = keras.layers.Activation("relu", name=f"block{i}_relu")(x)
        if i < len(filters):
            x = keras.layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    return x  # [B, H/8, W/8, filters[-1]]


def build_model(
    backbone: str,
    input_shape: Sequence[int] = (64, 64, 3),
    n_outputs: int = 3,
    activation: str = "softmax",
    weights: str | os.PathLike | None = None,
    dropout: float = 0.0,
    compact_blocks: Sequence[int] = COMPACT_DENSENET_BLOCKS,
    name: str | None = None,
    bn_momentum: float | None = 0.9,
    growth_rate: int = 32,
    init_features: int = 64,
    gray_to_rgb: bool | None = None,
) -> keras.Model:
    """Build a flat functional classifier: backbone -> GAP -> Dropout -> Dense 'head'.

    Args:
        backbone: one of ``BACKBONES``.
        input_shape: (height, width, channels); channels 1 or 3. keras.applications
            backbones need height and width >= 32.
        n_outputs: number of output neurons (classes or findings).
        activation: ``"softmax"`` (single-label target tasks) or ``"sigmoid"`` (multi-label
            NIH source task).
        weights: ``None``, ``"imagenet"`` or the path of an earlier stage's ``.h5`` file
            (layers matched by name, shape mismatches such as a different head skipped).
        dropout: dropout rate before the head (0 keeps a no-op Dropout layer so that layer
            names never depend on the rate).
        compact_blocks: dense blocks of ``compact_densenet``.
        name: model name (default ``"<backbone>_<n_outputs><activation[0]>"``).
        bn_momentum: momentum of every BatchNormalization layer's moving mean/variance
            (keras.applications uses 0.99). 0.9 by default: with the few hundred steps of a
            small-data run, 0.99 leaves the moving statistics far from the data's, and the
            model is much worse in inference mode than in training mode (measured on the
            phantoms after 12 epochs of 15 steps: validation macro-F1 0.26 in inference mode
            vs 0.41 with batch statistics). None keeps the backbone's value.
        growth_rate, init_features: DenseNet growth rate and stem width of
            ``compact_densenet`` (keras' 32 and 64 by default; other values come from
            torchvision-layout checkpoints, see :mod:`cxrlib.weights`).
        gray_to_rgb: repeat a 1-channel input to 3 channels in front of the backbone
            (default: only with ImageNet weights).

    Returns:
        An uncompiled ``keras.Model`` whose output layer is named ``head``.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if activation not in ("softmax", "sigmoid"):
        raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != 3 or input_shape[-1] not in (1, 3):
        raise ValueError(f"input_shape must be (height, width, 1 or 3), got {input_shape}")
    if backbone != "plain_cnn" and min(input_shape[:2]) < 32:
        raise ValueError(f"{backbone} needs images of at least 32x32 pixels, got {input_shape}")

    imagenet = isinstance(weights, str) and weights == "imagenet"
    if imagenet:
        _check_imagenet_available(backbone)  # raises with instructions when offline

    inputs = keras.Input(shape=input_shape, name="image")  # [B, H, W, C]
    x = inputs
    if gray_to_rgb is None:
        gray_to_rgb = imagenet
    if gray_to_rgb and input_shape[-1] == 1:
        x = keras.layers.Concatenate(axis=-1, name="gray_to_rgb")([x, x, x])  # [B, H, W, 3]

    if backbone == "plain_cnn":
        features = _plain_cnn(x)
    else:
        fn = (_compact_densenet(compact_blocks, growth_rate, init_features)
              if backbone == "compact_densenet" else _KERAS_FN[backbone])
        base = fn(include_top=False, weights="imagenet" if imagenet else None, input_tensor=x)
        features = base.output  # [B, h, w, C], same graph as `inputs` (flat)

    x = keras.layers.GlobalAveragePooling2D(name="gap")(features)  # [B, C]
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(n_outputs, activation=activation, name="head")(x)  # [B, K]
    model = keras.Model(inputs, outputs, name=name or f"{backbone}_{n_outputs}{activation[0]}")
    if bn_momentum is not None:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = float(bn_momentum)  # read at call time; saved in the .h5 config

    if weights is not None and not imagenet:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {path}")
        model.load_weights(str(path), by_name=True, skip_mismatch=True)
    return model


def load_model(path: str | os.PathLike) -> keras.Model:
    """Load a model saved by cxrlib (``.h5``; compile=False, so any optimizer state is dropped).

    Args:
        path: the ``model.h5`` of a stage directory.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.suffix != ".h5":
        raise ValueError(f"{path}: cxrlib saves and loads models as .h5 (a .keras file loads "
                         "without error but with wrong weights in graph mode on TF 2.14)")
    return keras.models.load_model(str(path), compile=False)


def save_model(model: keras.Model, path: str | os.PathLike) -> Path:
    """Save ``model`` as ``.h5`` atomically (a crash never leaves a truncated file).

    Args:
        model: the model.
        path: destination ending in ``.h5``.
    """
    from cxrlib.io import atomic_path

    path = Path(path)
    with atomic_path(path, suffix=".h5") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "HDF5 is legacy": .h5 is deliberate (see load_model)
        model.save(str(tmp), include_optimizer=False)
    return path


def feature_layer_name(model: keras.Model) -> str:
    """Name of the last backbone layer (the one feeding ``gap``)."""
    gap = model.get_layer("gap")
    return gap.inbound_nodes[0].inbound_layers.name


def last_conv_layer_name(model: keras.Model) -> str:
    """Name of the last layer with a 4-D output before the head (for Grad-CAM).

    For DenseNets this is the final ``relu`` (after the last BatchNorm), for ResNet50
    ``conv5_block3_out``, for VGG16 ``block5_conv3``, for plain_cnn ``block4_relu``.
    Pooling layers are skipped (Grad-CAM wants the last feature map before pooling).

    Args:
        model: a model built by :func:`build_model` (or any functional CNN).
    """
    for layer in reversed(model.layers):
        if layer.name in HEAD_LAYERS or isinstance(
            layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
                    keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)):
            continue
        shape = layer.output_shape
        if isinstance(shape, tuple) and len(shape) == 4:
            return layer.name
    raise ValueError(f"model {model.name!r} has no layer with a 4-D output")


# Block of a backbone layer, from keras.applications' naming: conv3_block4_* (DenseNet,
# ResNet50), pool3_* (DenseNet transition), block5_* (VGG16, plain_cnn), conv1/bn/relu stems.
_BLOCK_PATTERNS = (
    re.compile(r"^(conv\d+_block\d+)_"),
    re.compile(r"^(pool\d+)_"),
    re.compile(r"^(block\d+)_"),
)


def _block_of(name: str) -> str | None:
    for pat in _BLOCK_PATTERNS:
        m = pat.match(name)
        if m:
            return m.group(1)
    return None


def layer_blocks(model: keras.Model) -> list[tuple[str, list[keras.layers.Layer]]]:
    """Backbone layers grouped into blocks, from input to output (head layers excluded).

    A block is a dense block unit / transition (``conv4_block7``, ``pool3``) for DenseNets, a
    residual unit for ResNet50, a VGG block for VGG16 and plain_cnn. Stem layers
    (``conv1/conv``, ``pool1`` ...) form the first block ``stem``; layers without a block name
    after the last block (DenseNet's final ``bn``/``relu``) join the last block. Layers without
    weights (input, concat) are kept in their block for completeness.

    Args:
        model: a model built by :func:`build_model`.
    """
    blocks: list[tuple[str, list]] = []
    for layer in model.layers:
        if layer.name in HEAD_LAYERS or isinstance(layer, keras.layers.InputLayer):
            continue
        key = _block_of(layer.name)
        if key is None or re.match(r"^(conv1|pool1)\b", key):
            # stem layers before the first block; trailing unnamed layers join the last block
            key = blocks[-1][0] if blocks and blocks[-1][0] != "stem" else "stem"
        if not blocks or blocks[-1][0] != key:
            blocks.append((key, []))
        blocks[-1][1].append(layer)
    return blocks
