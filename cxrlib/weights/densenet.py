"""torchvision-layout DenseNet weights -> the flat Keras DenseNet of :mod:`cxrlib.models`.

Huang et al. 2017 (DenseNet-BC) as implemented by torchvision, which CheXNet reproductions
(Rajpurkar et al. 2017; jrzech/reproduce-chexnet, arnoweng/CheXNet) and torchxrayvision
(Cohen et al. 2022) use. The two implementations compute the same function; the mapping is:

================================================  ============================================
torchvision key                                   Keras layer (``keras.applications`` names)
================================================  ============================================
``features.conv0``  [F, C, 7, 7]                  ``conv1/conv`` kernel [7, 7, C, F]
``features.norm0``                                ``conv1/bn``
``features.denseblock{i}.denselayer{j}.norm1``    ``conv{i+1}_block{j}_0_bn``
``features.denseblock{i}.denselayer{j}.conv1``    ``conv{i+1}_block{j}_1_conv`` [1, 1, c, 4k]
``features.denseblock{i}.denselayer{j}.norm2``    ``conv{i+1}_block{j}_1_bn``
``features.denseblock{i}.denselayer{j}.conv2``    ``conv{i+1}_block{j}_2_conv`` [3, 3, 4k, k]
``features.transition{i}.norm`` / ``.conv``       ``pool{i+1}_bn`` / ``pool{i+1}_conv``
``features.norm5``                                ``bn``
``classifier`` (or ``classifier.0``) [K, C]       ``head`` kernel [C, K]
================================================  ============================================

Convolution kernels are transposed ``[out, in, kh, kw] -> [kh, kw, in, out]``, the linear
layer ``[out, in] -> [in, out]``; BatchNorm maps weight/bias/running_mean/running_var to
gamma/beta/moving_mean/moving_variance and every BatchNorm gets PyTorch's epsilon 1e-5
(keras.applications uses 1.001e-5). Padding agrees: torch pads conv0 by 3 and the 3x3 convs
by 1 with zeros (Keras: ZeroPadding2D / ``same``); torch's max-pool pads with -inf, Keras
with zeros, equal here because the input is a ReLU output (>= 0).

API: ``normalise_keys(sd)``, ``infer_spec(sd) -> DenseNetSpec``, ``check_keys(sd, spec)``,
``build_keras_densenet(spec, image_size, channels, activation)``, ``assign_weights(model, sd, spec)``,
``feature_logits(model, x)``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

TORCH_BN_EPSILON = 1e-5
_BN_PARTS = ("weight", "bias", "running_mean", "running_var")
_IGNORED_SUFFIXES = ("num_batches_tracked",)
# Extra entries some publishers keep beside the weights (torchxrayvision: op_threshs).
_IGNORED_KEYS = ("op_threshs",)


class NotADenseNet(ValueError):
    """The state dict does not hold a torchvision-layout DenseNet (message lists the keys)."""


@dataclass(frozen=True)
class DenseNetSpec:
    """Architecture of a torchvision-layout DenseNet-BC, read from its weights."""

    blocks: tuple[int, ...] = (6, 12, 24, 16)
    growth_rate: int = 32
    init_features: int = 64
    bn_size: int = 4
    in_channels: int = 3
    n_classes: int = 1000
    n_features: int = 1024  # channels entering the classifier

    @property
    def name(self) -> str:
        known = {(6, 12, 24, 16): "densenet121", (6, 12, 32, 32): "densenet169",
                 (6, 12, 48, 32): "densenet201"}
        if (self.growth_rate, self.init_features) == (32, 64) and self.blocks in known:
            return known[self.blocks]
        return f"densenet_k{self.growth_rate}_{'-'.join(map(str, self.blocks))}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["blocks"] = list(self.blocks)
        return d


def normalise_keys(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Canonical torchvision keys: strip ``module.`` (DataParallel) and model prefixes
    (arnoweng/CheXNet's ``densenet121.``), rename pre-0.4 ``norm.1`` / ``conv.2`` to
    ``norm1`` / ``conv2``, ``classifier.0.*`` (``Sequential(Linear, Sigmoid)``) to
    ``classifier.*``; drop ``num_batches_tracked`` and known non-weight buffers."""
    out: dict[str, np.ndarray] = {}
    for key, value in sd.items():
        k = key
        while k.startswith("module."):
            k = k[len("module."):]
        m = re.search(r"(^|\.)(features|classifier)\.", k)
        if m and m.start() > 0:
            k = k[m.start() + 1:]  # "densenet121.features.x" -> "features.x"
        k = re.sub(r"\.(norm|relu|conv)\.([12])\.", r".\1\2.", k)
        k = re.sub(r"^classifier\.0\.", "classifier.", k)
        if k.endswith(_IGNORED_SUFFIXES) or k in _IGNORED_KEYS:
            continue
        out[k] = np.asarray(value)
    return out


def _shape(sd, key) -> tuple:
    return tuple(sd[key].shape)


def infer_spec(sd: dict[str, np.ndarray]) -> DenseNetSpec:
    """Read growth rate, blocks, stem width, bottleneck, channels and classes from weights.

    Args:
        sd: a state dict with canonical keys (:func:`normalise_keys`).

    Raises:
        NotADenseNet: naming what is missing (e.g. ``features.conv0.weight``).
    """
    for need in ("features.conv0.weight", "features.denseblock1.denselayer1.conv2.weight"):
        if need not in sd:
            sample = ", ".join(sorted(sd)[:8]) or "(none)"
            raise NotADenseNet(f"not a torchvision-layout DenseNet state dict: no {need!r} "
                               f"(first keys: {sample})")
    blocks = []
    i = 1
    while f"features.denseblock{i}.denselayer1.conv1.weight" in sd:
        j = 0
        while f"features.denseblock{i}.denselayer{j + 1}.conv1.weight" in sd:
            j += 1
        blocks.append(j)
        i += 1
    f_init, c_in = _shape(sd, "features.conv0.weight")[:2]
    growth, width = _shape(sd, "features.denseblock1.denselayer1.conv2.weight")[:2]
    if width % growth:
        raise NotADenseNet(f"bottleneck width {width} is not a multiple of the growth rate {growth}")
    cls = "classifier.weight"
    n_classes, n_feat = _shape(sd, cls) if cls in sd else (0, _shape(sd, "features.norm5.weight")[0])
    return DenseNetSpec(tuple(blocks), int(growth), int(f_init), int(width // growth), int(c_in),
                        int(n_classes), int(n_feat))


def expected_shapes(spec: DenseNetSpec) -> dict[str, tuple]:
    """Every canonical key of ``spec`` with its torch shape."""
    shapes: dict[str, tuple] = {"features.conv0.weight": (spec.init_features, spec.in_channels, 7, 7)}

    def bn(prefix, c):
        shapes.update({f"{prefix}.{p}": (c,) for p in _BN_PARTS})

    bn("features.norm0", spec.init_features)
    c, width = spec.init_features, spec.bn_size * spec.growth_rate
    for i, n in enumerate(spec.blocks, start=1):
        for j in range(1, n + 1):
            p = f"features.denseblock{i}.denselayer{j}"
            bn(f"{p}.norm1", c)
            shapes[f"{p}.conv1.weight"] = (width, c, 1, 1)
            bn(f"{p}.norm2", width)
            shapes[f"{p}.conv2.weight"] = (spec.growth_rate, width, 3, 3)
            c += spec.growth_rate
        if i < len(spec.blocks):
            bn(f"features.transition{i}.norm", c)
            shapes[f"features.transition{i}.conv.weight"] = (c // 2, c, 1, 1)
            c //= 2
    bn("features.norm5", c)
    if spec.n_classes:
        shapes["classifier.weight"] = (spec.n_classes, c)
        shapes["classifier.bias"] = (spec.n_classes,)
    return shapes


def check_keys(sd: dict[str, np.ndarray], spec: DenseNetSpec) -> None:
    """Raise :class:`NotADenseNet` listing missing, unexpected and mis-shaped keys."""
    want = expected_shapes(spec)
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    wrong = sorted(f"{k} {tuple(sd[k].shape)} (expected {want[k]})"
                   for k in set(want) & set(sd) if tuple(sd[k].shape) != want[k])
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                more = f" ... and {len(items) - 10} more" if len(items) > 10 else ""
                parts.append(f"{label} ({len(items)}): {', '.join(items[:10])}{more}")
        raise NotADenseNet(f"state dict does not match a torchvision DenseNet {spec.name} "
                           f"({spec.in_channels}-channel stem, {spec.n_classes} outputs): "
                           + "; ".join(parts))


def _keras_name(torch_prefix: str) -> str:
    """``features.denseblock2.denselayer3.norm1`` -> ``conv3_block3_0_bn`` etc."""
    m = re.fullmatch(r"features\.denseblock(\d+)\.denselayer(\d+)\.(norm1|conv1|norm2|conv2)", torch_prefix)
    if m:
        part = {"norm1": "0_bn", "conv1": "1_conv", "norm2": "1_bn", "conv2": "2_conv"}[m.group(3)]
        return f"conv{int(m.group(1)) + 1}_block{m.group(2)}_{part}"
    m = re.fullmatch(r"features\.transition(\d+)\.(norm|conv)", torch_prefix)
    if m:
        return f"pool{int(m.group(1)) + 1}_{'bn' if m.group(2) == 'norm' else 'conv'}"
    fixed = {"features.conv0": "conv1/conv", "features.norm0": "conv1/bn", "features.norm5": "bn",
             "classifier": "head"}
    if torch_prefix in fixed:
        return fixed[torch_prefix]
    raise KeyError(torch_prefix)


def build_keras_densenet(spec: DenseNetSpec, image_size: int | Sequence[int] = 224,
                         channels: int | None = None, activation: str = "sigmoid",
                         name: str | None = None):
    """The flat Keras model (:func:`cxrlib.models.build_model`) for ``spec``, random weights.

    Args:
        spec: architecture read from the checkpoint.
        image_size: int or (height, width), at least 32.
        channels: input channels (default: the checkpoint's). A 1-channel input into a
            3-channel stem gets ``gray_to_rgb`` (grey repeated, as torch users feed grey X-rays).
        activation: ``"sigmoid"`` (multi-label findings) or ``"softmax"``.
    """
    from cxrlib import models
    from tensorflow import keras

    if spec.bn_size != 4:
        raise NotADenseNet(f"bottleneck factor bn_size={spec.bn_size}: Keras' DenseNet blocks "
                           "use 4 (torchvision's default); other values are not supported")
    channels = spec.in_channels if channels is None else int(channels)
    if spec.in_channels == 1 and channels == 3:
        raise ValueError("the checkpoint has a 1-channel stem: use channels=1 (grey input)")
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    n_out = spec.n_classes or 1
    model = models.build_model(
        "compact_densenet", (h, w, channels), n_out, activation, compact_blocks=spec.blocks,
        growth_rate=spec.growth_rate, init_features=spec.init_features,
        gray_to_rgb=(channels == 1 and spec.in_channels == 3), name=name or f"{spec.name}_{n_out}")
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.epsilon = TORCH_BN_EPSILON  # read at call time; saved in the .h5 config
    return model


def assign_weights(model, sd: dict[str, np.ndarray], spec: DenseNetSpec) -> int:
    """Copy every torch tensor into its Keras layer (exact transposes). Returns layers set."""
    check_keys(sd, spec)
    prefixes = sorted({k.rsplit(".", 1)[0] for k in sd})
    for prefix in prefixes:
        layer = model.get_layer(_keras_name(prefix))
        if prefix == "classifier":
            weights = [sd["classifier.weight"].T, sd["classifier.bias"]]  # [C, K], [K]
        elif f"{prefix}.running_mean" in sd:
            weights = [sd[f"{prefix}.{p}"] for p in _BN_PARTS]  # gamma, beta, mean, var
        else:
            weights = [np.transpose(sd[f"{prefix}.weight"], (2, 3, 1, 0))]  # [kh, kw, in, out]
        layer.set_weights([np.asarray(w, dtype=np.float32) for w in weights])
    return len(prefixes)


def feature_logits(model, x: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Pre-activation outputs (logits) ``[B, K]`` of a model's ``head`` for images ``x``."""
    from tensorflow import keras

    gap = keras.Model(model.input, model.get_layer("gap").output)  # [B, C]
    feats = gap.predict(x, batch_size=batch_size, verbose=0)
    kernel, bias = model.get_layer("head").get_weights()
    return feats.astype(np.float64) @ kernel.astype(np.float64) + bias
