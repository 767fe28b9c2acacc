"""Import a torchvision-layout DenseNet checkpoint as cxrlib's flat Keras model.

``import_densenet(ref, classes=None, image_size=None, channels=None)`` reads the checkpoint
(a known weight set name, a URL or a path; :mod:`cxrlib.weights.registry`), infers the
architecture, builds the flat Keras model (:func:`cxrlib.models.build_model`, layer names of
``keras.applications.DenseNet121``), copies every weight and returns an
:class:`ImportedModel`: the model (``head`` = the checkpoint's classifier, sigmoid), the
head's class names (so output neuron keeping finds NIH ``Pneumonia``), the input
normalisation and a JSON-able ``info`` record for ``config.json``.

``source_model_from_spec("checkpoint:REF", image_size, channels, classes="nih14")`` is what a
source stage calls for ``source: {init: "checkpoint:PATH_OR_URL_OR_NAME", classes: nih14}``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cxrlib.weights import registry
from cxrlib.weights.checkpoint import read_checkpoint
from cxrlib.weights.densenet import (DenseNetSpec, assign_weights, build_keras_densenet, infer_spec,
                                     normalise_keys)
from cxrlib.weights.preprocessing import IMAGENET, Preprocessing, get_preprocessing

CHECKPOINT_PREFIX = "checkpoint:"


@dataclass
class ImportedModel:
    """An imported checkpoint; unpacks as ``model, classes, preprocessing``."""

    model: Any  # keras.Model
    classes: list[str]
    preprocessing: Preprocessing
    spec: DenseNetSpec
    info: dict[str, Any] = field(default_factory=dict)

    def __iter__(self):
        return iter((self.model, self.classes, self.preprocessing))


def resolve_checkpoint(ref: str | os.PathLike) -> tuple[Path, registry.WeightSet | None]:
    """(local file, known weight set or None) for a name, URL or path.

    Known names and URLs are downloaded once into the Keras cache
    (:func:`cxrlib.weights.registry.download`); a path must exist.
    """
    ref = str(ref)
    if ref.startswith(CHECKPOINT_PREFIX):
        ref = ref[len(CHECKPOINT_PREFIX):]
    try:
        ws = registry.get_weight_set(ref)
        return registry.fetch(ws.name), ws
    except KeyError:
        pass
    if ref.startswith(("http://", "https://")):
        ws = next((w for w in registry.WEIGHT_SETS.values() if w.url == ref), None)
        return registry.download(ref, ws.file if ws else None), ws
    path = Path(ref).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path} (give a file, a URL, or one of the known weight sets: "
            f"{', '.join(registry.WEIGHT_SETS)})")
    ws = next((w for w in registry.WEIGHT_SETS.values() if w.file == path.name), None)
    return path, ws


def _select_head(sd: dict, names: list[str], wanted: Sequence[str], source: str) -> dict:
    """Reorder/select the classifier's rows to ``wanted`` (by name)."""
    missing = [c for c in wanted if c not in names]
    if missing:
        raise ValueError(f"{source}: the checkpoint's outputs {names} lack {missing}")
    rows = [names.index(c) for c in wanted]
    sd = dict(sd)
    sd["classifier.weight"] = sd["classifier.weight"][rows]
    sd["classifier.bias"] = sd["classifier.bias"][rows]
    return sd


def _head_classes(sd: dict, spec: DenseNetSpec, ws, classes, source: str) -> tuple[dict, list[str], str]:
    """(state dict with the head to build, class names, how the names were decided)."""
    from cxrlib.data.taxonomy import task_classes

    known = list(ws.classes) if ws else None
    n = spec.n_classes
    if classes is None:
        return sd, known or [f"output_{i}" for i in range(n)], "weight set" if known else "unnamed"
    if isinstance(classes, str) and "," not in classes:
        wanted = list(task_classes(classes))  # raises on an unknown task name
        if not n:
            return sd, wanted, f"task {classes} (checkpoint has no classifier: head random)"
        if known:
            return _select_head(sd, known, wanted, source), wanted, f"task {classes}, selected by name"
        if n != len(wanted):
            raise ValueError(f"{source}: the checkpoint has {n} outputs but task {classes!r} has "
                             f"{len(wanted)} classes; name its outputs with --classes A,B,...")
        return sd, wanted, f"task {classes}, assumed in the checkpoint's output order"
    names = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else list(classes)
    if n and len(names) != n:
        raise ValueError(f"{source}: the checkpoint has {n} outputs but {len(names)} class names "
                         f"were given: {names}")
    return sd, names, "given"


def import_densenet(ref: str | os.PathLike, classes: str | Sequence[str] | None = None,
                    image_size: int | Sequence[int] | None = None, channels: int | None = None,
                    activation: str = "sigmoid", preprocessing: str | Preprocessing | None = None) -> ImportedModel:
    """Build the flat Keras DenseNet holding a torchvision-layout checkpoint's weights.

    Args:
        ref: a known weight set (``chexnet``, ``densenet121-res224-nih`` ...), a URL or a path.
        classes: None (the weight set's names, else ``output_<i>``); a cxrlib task name such as
            ``"nih14"`` (the head is reordered/selected to the task's classes by name); or the
            names of the checkpoint's outputs (list or ``"A,B,C"``; count must match).
        image_size: int or (H, W); default the weight set's (224). DenseNets are fully
            convolutional, so any size >= 32 works (accuracy is best at the trained size).
        channels: input channels; default the checkpoint's stem (1 or 3). A 3-channel stem
            accepts channels=1 (grey repeated by a ``gray_to_rgb`` layer).
        activation: head activation (``sigmoid`` for findings).
        preprocessing: ``"imagenet"``, ``"xrv"`` or a :class:`Preprocessing`; default the
            weight set's, else ImageNet (torchvision's convention).
    """
    path, ws = resolve_checkpoint(ref)
    ck = read_checkpoint(path)
    sd = normalise_keys(ck.state_dict)
    spec = infer_spec(sd)
    source = ws.name if ws else str(path)
    sd, names, how = _head_classes(sd, spec, ws, classes, source)
    head_spec = DenseNetSpec(spec.blocks, spec.growth_rate, spec.init_features, spec.bn_size,
                             spec.in_channels, len(names) if spec.n_classes else 0, spec.n_features)
    if channels is not None and spec.in_channels == 1 and int(channels) == 3:
        raise ValueError(f"{source} has a 1-channel stem: use 1 input channel "
                         "(stage.channels: 1, or --channels 1)")
    size = image_size or (ws.image_size if ws else 224)
    model = build_keras_densenet(head_spec, size, channels, activation,
                                 name=f"{head_spec.name}_{len(names)}")
    if not spec.n_classes:  # no classifier in the file: a fresh head with one neuron per class
        from cxrlib.transfer import replace_head

        model = replace_head(model, len(names), activation)
    assign_weights(model, sd, head_spec)
    pre = get_preprocessing(preprocessing) if preprocessing else (ws.preprocessing if ws else IMAGENET)
    info = {
        "init": f"checkpoint:{source}", "file": str(path), "format": ck.format,
        "weights_from": ck.source_key, "weight_set": ws.name if ws else None,
        "url": ws.url if ws else None, "citation": ws.citation if ws else None,
        "architecture": spec.to_dict(), "classes": names, "classes_from": how,
        "preprocessing": pre.to_dict(), "bn_epsilon": 1e-5,
        "image_size": list(imported_size(size)), "trained_image_size": ws.image_size if ws else None,
        "checkpoint_meta": {k: v for k, v in ck.meta.items() if isinstance(v, (int, float, str, bool))},
    }
    return ImportedModel(model, names, pre, head_spec, info)


def imported_size(size: int | Sequence[int]) -> tuple[int, int]:
    """(H, W) of an int or pair."""
    return (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(v) for v in size)


def source_model_from_spec(spec: str, image_size: int | Sequence[int], channels: int,
                           classes: str | Sequence[str] | None = "nih14") -> ImportedModel:
    """The initial source-stage model for ``source: {init: "checkpoint:REF", classes: nih14}``.

    Args:
        spec: ``"checkpoint:"`` followed by a known weight set name, a URL or a path.
        image_size, channels: the stage's (``stage.image_size``, ``stage.channels``).
        classes: the source task (``nih14``: the head becomes the 14 NIH findings in cxrlib's
            order, selected by name from the checkpoint's outputs) or explicit output names.

    Returns:
        :class:`ImportedModel`; ``model, classes, preprocessing = source_model_from_spec(...)``.
        The stage records ``.info`` in its ``config.json`` and feeds images through
        ``preprocessing`` (identical to ``pipeline.preprocess_for("densenet121")`` when
        ``preprocessing.keras_backbone == "densenet121"``).
    """
    if not str(spec).startswith(CHECKPOINT_PREFIX):
        raise ValueError(f"source init {spec!r}: expected 'checkpoint:PATH_OR_URL_OR_NAME' "
                         f"(known names: {', '.join(registry.WEIGHT_SETS)})")
    return import_densenet(spec, classes=classes, image_size=image_size, channels=channels)


def save_imported(imported: ImportedModel, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``model.h5`` and its sidecar ``model.json`` (classes, preprocessing, provenance)."""
    from cxrlib.io import write_json
    from cxrlib.models import save_model

    path = Path(path)
    if path.suffix != ".h5":
        raise ValueError(f"{path}: save as .h5 (a .keras file loads without error but with wrong "
                         "weights in graph mode on TF 2.14)")
    save_model(imported.model, path)
    meta = path.with_suffix(".json")
    write_json(meta, imported.info)
    return path, meta


def logits_of(imported: ImportedModel, x: np.ndarray) -> np.ndarray:
    """Head logits ``[B, K]`` for images already normalised (``imported.preprocessing``)."""
    from cxrlib.weights.densenet import feature_logits

    return feature_logits(imported.model, x)
