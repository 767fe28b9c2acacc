"""Transfer strategies of both papers, head replacement, output neuron keeping, freezing.

Transfer methods (``STRATEGIES`` = :data:`cxrlib.strategies.TRANSFER_METHODS`; the named
strategies experiments use, e.g. ``twice_onk``, are the registry :mod:`cxrlib.strategies`),
each a chain of stages; every stage is a directory with
``model.h5``, ``config.json``, ``history.csv``, ``metrics.json``, ``predictions.csv``
(written by :mod:`cxrlib.experiment`), and a later stage loads the earlier stage's
``model.h5``, so stages can run in separate processes and be resumed:

- ``scratch``: random initialisation, trained on the target task.
- ``imagenet``: ImageNet weights (keras.applications), fine-tuned on the target task
  (paper B's "common transfer learning").
- ``domain_extension`` (paper A, Basu et al. 2020, "DETL"): a source stage trains the
  backbone on a large related chest X-ray set (NIH-style: 14-finding multi-label, or a
  normal/disease grouping); the target stage replaces the head and fine-tunes.
- ``twice`` (paper B, Bassi & Attux 2020): ImageNet -> NIH ChestX-ray14 (14 sigmoid outputs)
  -> target. When ImageNet weights are unavailable (offline) the first step starts from
  scratch; the source stage records this in ``config.json`` (``init``) and ``metrics.json``.
- ``output_neuron_keeping`` (paper B) is an *option* of the source -> target step
  (``keep_neurons={'Pneumonia': 'pneumonia'}``): the new head is created for the target
  classes and, for each mapped pair, the kernel column and bias of the source neuron are
  copied bit for bit into the target neuron; the other target neurons keep their fresh
  (glorot-uniform kernel, zero bias) initialisation. See :func:`keep_output_neurons`.

Freezing (:func:`set_trainable`, :class:`Phase`): a stage trains in phases, e.g. a head-only
warm-up at lr 1e-3 and then the top N backbone blocks (or all layers) at a lower rate.
"Blocks" are :func:`cxrlib.models.layer_blocks` (dense-block units/transitions, residual
units, VGG blocks).

BatchNorm (``bn=``): ``"frozen"`` (the Keras transfer-learning recommendation for partial
fine-tuning) keeps every BatchNormalization layer non-trainable; in Keras 2 a non-trainable
BN layer also runs in inference mode, so its moving mean/variance are not updated by the
small target batches. ``"train"`` makes BN layers of the unfrozen blocks trainable (their
statistics adapt to the target data; needed when training from scratch, useful when the
target domain is far from the source, e.g. ImageNet -> X-ray). ``"auto"`` (default) is
``"train"`` when every layer is trainable (scratch training, full fine-tuning) and
``"frozen"`` for head-only / top-N phases. Measured on the phantoms: a scratch compact
DenseNet with all BN layers frozen (inference mode with initial statistics) did not lower its
training loss in 15 epochs (1.41 -> 1.38), with BN training it fell 1.48 -> 0.84 in 10.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from tensorflow import keras

from cxrlib import models
from cxrlib.strategies import SOURCE_METHODS, TRANSFER_METHODS, check_method

# The transfer methods init_model knows (the registry of named strategies is cxrlib.strategies).
STRATEGIES = TRANSFER_METHODS
SOURCE_STRATEGIES = SOURCE_METHODS

# Default output-neuron-keeping maps (source NIH finding -> target class), per target task.
DEFAULT_KEEP_NEURONS: dict[str, dict[str, str]] = {
    "paper_a": {"Pneumonia": "pneumonia"},
    "paper_b": {"Pneumonia": "pneumonia"},
    "paper_b_viral": {"Pneumonia": "viral_pneumonia"},
}


def check_strategy(strategy: str) -> str:
    """Return ``strategy`` (a transfer method of :mod:`cxrlib.strategies`) or raise a ValueError."""
    return check_method(strategy)


def replace_head(model: keras.Model, n_outputs: int, activation: str = "softmax",
                 name: str | None = None) -> keras.Model:
    """A new flat model: ``model``'s layers up to the head input + a fresh Dense ``head``.

    The backbone layers (and their weights) are shared with ``model``; the old head is not
    part of the new graph. The new head is glorot-uniform initialised with zero bias.

    Args:
        model: a model built by :func:`cxrlib.models.build_model` (or loaded from its .h5).
        n_outputs: number of target classes.
        activation: ``"softmax"`` or ``"sigmoid"``.
        name: name of the new model (default: the old name + ``_target``).
    """
    features = model.get_layer("head").input  # [B, C] (after gap and head_dropout)
    outputs = keras.layers.Dense(n_outputs, activation=activation, name="head")(features)
    return keras.Model(model.input, outputs, name=name or f"{model.name}_target")


def _normalise_mapping(keep_neurons: Mapping[str, str] | Sequence[Sequence[str]]) -> list[tuple[str, str]]:
    pairs = list(keep_neurons.items()) if isinstance(keep_neurons, Mapping) else [tuple(p) for p in keep_neurons]
    for p in pairs:
        if len(p) != 2:
            raise ValueError(f"keep_neurons entries must be (source_class, target_class), got {p!r}")
    return [(str(s), str(t)) for s, t in pairs]


def keep_output_neurons(
    source_head: keras.layers.Layer | Sequence[np.ndarray],
    target_model: keras.Model,
    source_classes: Sequence[str],
    target_classes: Sequence[str],
    keep_neurons: Mapping[str, str] | Sequence[Sequence[str]],
) -> list[dict[str, Any]]:
    """Output neuron keeping (Bassi & Attux 2020): copy mapped source neurons into the new head.

    For every pair ``(source_class, target_class)`` the source head's kernel column
    ``kernel[:, i_source]`` and bias ``bias[i_source]`` are copied into
    ``kernel[:, j_target]`` / ``bias[j_target]`` of ``target_model``'s ``head``; the other
    target neurons are left as initialised. The activation may differ (paper B copies a
    sigmoid NIH ``Pneumonia`` neuron into a softmax target head).

    Args:
        source_head: the source model's ``head`` layer, or its ``[kernel, bias]`` arrays.
        target_model: model whose ``head`` receives the neurons (modified in place).
        source_classes: class/finding names of the source head, in neuron order.
        target_classes: class names of the target head, in neuron order.
        keep_neurons: ``{source_class: target_class}`` or a list of pairs.

    Returns:
        One record per kept neuron: source, target, source_index, target_index.
    """
    kernel, bias = (source_head.get_weights() if hasattr(source_head, "get_weights")
                    else [np.asarray(a) for a in source_head])
    head = target_model.get_layer("head")
    t_kernel, t_bias = head.get_weights()
    if kernel.shape[0] != t_kernel.shape[0]:
        raise ValueError(f"source head has {kernel.shape[0]} inputs, target head "
                         f"{t_kernel.shape[0]}: the backbones differ")
    source_classes, target_classes = list(source_classes), list(target_classes)
    if kernel.shape[1] != len(source_classes):
        raise ValueError(f"source head has {kernel.shape[1]} neurons but {len(source_classes)} "
                         f"source classes were given: {source_classes}")
    if t_kernel.shape[1] != len(target_classes):
        raise ValueError(f"target head has {t_kernel.shape[1]} neurons but "
                         f"{len(target_classes)} target classes were given: {target_classes}")
    kept, used_targets = [], set()
    for src, tgt in _normalise_mapping(keep_neurons):
        if src not in source_classes:
            raise ValueError(f"keep_neurons: source class {src!r} is not a source output; "
                             f"source outputs: {source_classes}")
        if tgt not in target_classes:
            raise ValueError(f"keep_neurons: target class {tgt!r} is not a target class; "
                             f"target classes: {target_classes}")
        if tgt in used_targets:
            raise ValueError(f"keep_neurons: target class {tgt!r} is mapped twice")
        used_targets.add(tgt)
        i, j = source_classes.index(src), target_classes.index(tgt)
        t_kernel[:, j] = kernel[:, i]
        t_bias[j] = bias[i]
        kept.append({"source": src, "target": tgt, "source_index": i, "target_index": j})
    head.set_weights([t_kernel, t_bias])
    return kept


# --------------------------------------------------------------------------- freezing

BN_MODES: tuple[str, ...] = ("auto", "frozen", "train")

@dataclass
class Phase:
    """One training phase of a stage.

    Attributes:
        epochs: epochs in this phase.
        trainable: ``"all"``, ``"head"`` (backbone frozen) or an int N (top N backbone blocks
            + head trainable).
        lr: learning rate of the phase (None: the stage's base rate).
        bn: BatchNorm mode, ``"auto"``, ``"frozen"`` or ``"train"`` (see module docstring).
    """

    epochs: int
    trainable: str | int = "all"
    lr: float | None = None
    bn: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)


def parse_phases(phases: Sequence[Phase | Mapping] | None, epochs: int, lr: float,
                 bn: str = "auto") -> list[Phase]:
    """Normalise a schedule: None -> one phase of ``epochs`` with everything trainable.

    Args:
        phases: list of :class:`Phase` or dicts with the same keys.
        epochs: epochs of the default single phase.
        lr: base learning rate (used when a phase has ``lr=None``).
        bn: BatchNorm mode of the default phase.
    """
    if not phases:
        return [Phase(epochs=int(epochs), trainable="all", lr=lr, bn=bn)]
    out = []
    for p in phases:
        p = p if isinstance(p, Phase) else Phase(**dict(p))
        if p.lr is None:
            p = Phase(p.epochs, p.trainable, lr, p.bn)
        if p.bn not in BN_MODES:
            raise ValueError(f"phase bn must be one of {BN_MODES}, got {p.bn!r}")
        if not (p.trainable in ("all", "head", "none") or isinstance(p.trainable, int)):
            raise ValueError(f"phase trainable must be 'all', 'head', 'none' or an int, got {p.trainable!r}")
        out.append(p)
    return out


def warmup_then_finetune(warmup_epochs: int, finetune_epochs: int, lr: float = 1e-3,
                         finetune_lr: float = 1e-4, top_blocks: int | str = "all",
                         bn: str = "auto") -> list[Phase]:
    """The usual schedule: head-only warm-up, then unfreeze top N blocks (or all) at a lower lr.

    Args:
        warmup_epochs: epochs with the backbone frozen.
        finetune_epochs: epochs with ``top_blocks`` unfrozen.
        lr: warm-up learning rate.
        finetune_lr: fine-tuning learning rate.
        top_blocks: int N or ``"all"``.
        bn: BatchNorm mode during fine-tuning.
    """
    phases = []
    if warmup_epochs > 0:
        phases.append(Phase(warmup_epochs, "head", lr, "frozen"))
    if finetune_epochs > 0:
        phases.append(Phase(finetune_epochs, top_blocks, finetune_lr, bn))
    return phases


def set_trainable(model: keras.Model, trainable: str | int = "all", bn: str = "auto") -> dict[str, Any]:
    """Freeze/unfreeze backbone blocks; the head (``HEAD_LAYERS``) is always trainable.

    Args:
        model: a model built by :func:`cxrlib.models.build_model`.
        trainable: ``"all"``, ``"head"`` (= 0 blocks), ``"none"`` (nothing, for evaluation)
            or int N: the top N blocks of :func:`cxrlib.models.layer_blocks`.
        bn: ``"frozen"`` keeps all BatchNormalization layers non-trainable (inference
            mode); ``"train"`` lets BN layers of unfrozen blocks train; ``"auto"``: ``"train"``
            when ``trainable == "all"``, else ``"frozen"``.

    Returns:
        Summary: trainable blocks, number of trainable weights/parameters.

    Note: recompile the model after calling this (keras reads ``trainable`` at compile time).
    """
    blocks = models.layer_blocks(model)
    if trainable == "all":
        n_top = len(blocks)
    elif trainable in ("head", "none"):
        n_top = 0
    elif isinstance(trainable, (int, np.integer)) and trainable >= 0:
        n_top = int(trainable)
    else:
        raise ValueError(f"trainable must be 'all', 'head', 'none' or an int >= 0, got {trainable!r}")
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
    if bn == "auto":
        bn = "train" if trainable == "all" else "frozen"
    unfrozen = {id(layer) for _, layers in blocks[len(blocks) - n_top:] for layer in layers} if n_top else set()
    model.trainable = True
    for layer in model.layers:
        if layer.name in models.HEAD_LAYERS:
            layer.trainable = trainable != "none"
        elif isinstance(layer, keras.layers.BatchNormalization) and bn == "frozen":
            layer.trainable = False
        else:
            layer.trainable = id(layer) in unfrozen
    return {
        "trainable": trainable,
        "bn": bn,
        "trainable_blocks": [name for name, _ in blocks[len(blocks) - n_top:]] if n_top else [],
        "n_blocks": len(blocks),
        "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "total_params": int(model.count_params()),
    }


# --------------------------------------------------------------------------- stage init

def init_model(
    strategy: str,
    backbone: str,
    input_shape: Sequence[int],
    classes: Sequence[str],
    activation: str = "softmax",
    source_model: str | keras.Model | None = None,
    source_classes: Sequence[str] | None = None,
    keep_neurons: Mapping[str, str] | Sequence[Sequence[str]] | None = None,
    dropout: float = 0.0,
    allow_scratch_fallback: bool = False,
    compact_blocks: Sequence[int] | None = None,
) -> tuple[keras.Model, dict[str, Any]]:
    """Initial model of a target (or source) stage under ``strategy``.

    Args:
        strategy: one of ``STRATEGIES``.
        backbone: backbone name (ignored when ``source_model`` is given: its layers are used).
        input_shape: (H, W, C).
        classes: output classes/findings of this stage.
        activation: ``"softmax"`` or ``"sigmoid"``.
        source_model: for domain_extension / twice: the source stage's ``model.h5`` path or model.
        source_classes: names of the source head's neurons (needed for ``keep_neurons``).
        keep_neurons: output neuron keeping map ``{source_class: target_class}`` (or None).
        dropout: dropout before the head (fresh models only).
        allow_scratch_fallback: for ``imagenet``: when the weights are unavailable, start
            from scratch instead of raising (recorded in the returned info).
        compact_blocks: dense blocks of a fresh ``compact_densenet`` (None: the default).

    Returns:
        (model, info) where info records how the model was initialised (``init``,
        ``imagenet_weights``, ``kept_neurons`` ...), for the stage's config/metrics.
    """
    check_strategy(strategy)
    info: dict[str, Any] = {"strategy": strategy}
    if strategy in SOURCE_STRATEGIES:
        if source_model is None:
            raise ValueError(f"strategy {strategy!r} needs source_model (the source stage's model.h5)")
        src = models.load_model(source_model) if not isinstance(source_model, keras.Model) else source_model
        info["init"] = f"source:{source_model}" if not isinstance(source_model, keras.Model) else "source:<model>"
        if tuple(src.input_shape[1:]) != tuple(input_shape):
            raise ValueError(f"source model input {src.input_shape[1:]} differs from this stage's "
                             f"input {tuple(input_shape)}: use the same image_size/channels")
        model = replace_head(src, len(classes), activation)
        info["kept_neurons"] = []
        if keep_neurons:
            if source_classes is None:
                raise ValueError("keep_neurons needs source_classes (the source stage's classes)")
            info["kept_neurons"] = keep_output_neurons(src.get_layer("head"), model, source_classes,
                                                       classes, keep_neurons)
        return model, info
    if keep_neurons:
        raise ValueError(f"keep_neurons only applies to a source -> target step "
                         f"({', '.join(SOURCE_STRATEGIES)}), not to {strategy!r}")
    weights = None
    arch = {"compact_blocks": tuple(compact_blocks)} if compact_blocks and backbone == "compact_densenet" else {}
    if strategy == "imagenet":
        try:
            model = models.build_model(backbone, input_shape, len(classes), activation,
                                       weights="imagenet", dropout=dropout, **arch)
            info.update(init="imagenet", imagenet_weights="loaded")
            return model, info
        except models.ImageNetWeightsUnavailable as exc:
            if not allow_scratch_fallback:
                raise
            info.update(imagenet_weights=f"unavailable, started from scratch: {exc}")
    model = models.build_model(backbone, input_shape, len(classes), activation, weights=weights,
                               dropout=dropout, **arch)
    info.setdefault("init", "scratch")
    if strategy == "imagenet" and "imagenet_weights" in info:
        info["init"] = "scratch (imagenet unavailable)"
    return model, info
