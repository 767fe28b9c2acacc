"""Check ``--set KEY=VALUE`` overrides against the experiment schema before anything runs.

A key is accepted when

- it already exists in the config (after ``--smoke``): the new value must have the same kind
  (integer, number, true/false, text, list, mapping; anything replaces ``null``), or
- it is one of :data:`OPTIONAL_KEYS` (``heatmaps.min_cam_size`` ...) with that key's kind, or
- it is a stage option under a training section (``stage``, ``source``, ``transfer``,
  ``strategies.<name>``): a key of :data:`cxrlib.experiment.STAGE_DEFAULTS` or, under
  ``train``, a field of :class:`cxrlib.training.TrainConfig`, with that option's type.

Counts and sizes must be positive (``image_size``, ``epochs``, ``k`` ...) and other integers
non-negative. Every rejection raises :class:`OverrideError` (``cxr run`` reports it as a
:class:`~cxrlib.report.config.ConfigError`) naming the key,
the value and what was expected, e.g. ``--set stage.image_size=-5: must be > 0``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping



class OverrideError(ValueError):
    """An override names an unknown key or a value of the wrong kind (the message says which)."""

STAGE_SECTIONS = ("stage", "source", "transfer")
# Options of the sections above that the orchestration itself reads (not stage options).
SECTION_KEYS = {"task", "init", "strategy", "exclude_target_patients"}
# Mappings whose keys are names chosen by the user (``data.datasets.<collection>: PATH``, set by
# ``cxr run --dataset``): any key is accepted there; the collection name is checked where it is used.
OPEN_MAPPINGS = {("data", "datasets")}
# Optional keys outside the stage sections that a config may leave out, with their kinds
# (read by cxrlib.report.heatmaps.explainer_options and notebook 05).
OPTIONAL_KEYS: dict[tuple[str, ...], set[str | None]] = {
    ("heatmaps", "min_cam_size"): {"integer", None},
    ("heatmaps", "lrp"): {"mapping", None},
    ("heatmaps", "n_images"): {"integer", None},
    ("heatmaps", "n_scored"): {"integer", "text", None},   # "all" or a count (report.heatmaps.scored_count)
    ("heatmaps", "fold"): {"integer", None},
    ("heatmaps", "methods"): {"list", None},
    ("heatmaps", "strategies"): {"list", None},
}
POSITIVE = {"image_size", "batch_size", "channels", "epochs", "k", "n", "n_images", "n_scored", "max_images",
            "max_per_class"}


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def _kind_of_annotation(annotation: str) -> set[str | None]:
    """Kinds a TrainConfig field accepts, from its annotation string (``int``, ``str | None``)."""
    names = {a.strip() for a in str(annotation).split("|")}
    table = {"int": "integer", "float": "number", "bool": "true/false", "str": "text", "list": "list",
             "dict": "mapping", "None": None}
    return {table.get(n, n) for n in names}


def _accepts(expected: set[str | None], value: Any) -> bool:
    kind = _kind(value)
    if kind is None or expected == {None}:  # null is always allowed; a null default takes anything
        return True
    if kind == "integer" and "number" in expected:
        return True
    return kind in expected


def _stage_option_kinds(parts: list[str]) -> set[str | None] | None:
    """Accepted kinds of a stage option path (``image_size`` or ``train.epochs``), None if unknown."""
    from cxrlib.experiment.config import STAGE_DEFAULTS
    from cxrlib.training import TrainConfig

    if len(parts) == 2 and parts[0] == "train":
        fields = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
        return _kind_of_annotation(fields[parts[1]]) if parts[1] in fields else None
    if len(parts) == 1 and (parts[0] in STAGE_DEFAULTS or parts[0] in SECTION_KEYS):
        default = STAGE_DEFAULTS.get(parts[0])
        return {None} if default is None else {_kind(default), None}
    return None


def _stage_prefix(keys: list[str]) -> int:
    """Length of the stage-section prefix of a key path (0 when it is not under one)."""
    if keys[0] in STAGE_SECTIONS:
        return 1
    if keys[0] == "strategies" and len(keys) > 2:
        return 2
    return 0


def check_override(cfg: Mapping[str, Any], dotted: str, value: Any, name: str = "config") -> None:
    """Raise OverrideError unless ``dotted = value`` fits the config and the schema (see module doc).

    Args:
        cfg: the config the override applies to (before it is applied).
        dotted: the key path (``transfer.train.epochs``).
        value: the parsed value.
        name: the config file, for messages.
    """
    keys = dotted.split(".")
    where = f"--set {dotted}={value!r}"
    if not all(keys):
        raise OverrideError(f"{where}: empty key part")
    node: Any = cfg
    for i, key in enumerate(keys):
        if isinstance(node, Mapping) and key in node:
            node = node[key]
            continue
        if not isinstance(node, Mapping) and node is not None:
            raise OverrideError(f"{where}: {'.'.join(keys[:i])} is a {_kind(node)}, not a mapping")
        if any(tuple(keys[:len(m)]) == m and len(keys) == len(m) + 1 for m in OPEN_MAPPINGS):
            return
        start = _stage_prefix(keys)
        expected = _stage_option_kinds(keys[start:]) if start and i >= start - 1 else OPTIONAL_KEYS.get(tuple(keys))
        if expected is None:
            here = ".".join(keys[:i]) or "the top level"
            known = ", ".join(sorted(node)) if isinstance(node, Mapping) else "none"
            raise OverrideError(f"{where}: no key {key!r} under {here} of {name} (keys there: {known})")
        break
    else:
        kind = _kind(node)
        expected = {kind, None} if kind is not None else {None}
        if kind == "number":
            expected.add("integer")
        expected = OPTIONAL_KEYS.get(tuple(keys), expected)  # a key of several kinds ("all" or a count)
    if not _accepts(expected, value):
        want = " or ".join(sorted(k for k in expected if k)) or "any value"
        raise OverrideError(f"{where}: expected {want}, got {_kind(value)}")
    leaf = keys[-1]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if leaf in POSITIVE and value <= 0:
            raise OverrideError(f"{where}: must be > 0")
        if value < 0 and _kind(value) == "integer":
            raise OverrideError(f"{where}: must be >= 0")
