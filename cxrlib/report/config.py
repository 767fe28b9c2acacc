"""Experiment configs: YAML files that say what a run does.

The shipped ones are in ``cxrlib/notebooks/experiments/``; :mod:`cxrlib.report.locate` finds
them by name.

An experiment config is a nested mapping. The keys the orchestration itself reads are:

``name``         experiment name (``paper_a``); the report folder ``reports/<name>/<run>/``
``title``        one-line title shown in the report
``paper``        the reproduced paper: ``citation``, ``url`` and ``claims`` (published figures
                 that the report compares with this run's; see :mod:`cxrlib.report.results`)
``task``         target task (``paper_a``, ``paper_b``, ... see :mod:`cxrlib.data.taxonomy`)
``data``         ``kind: phantoms`` (generated, the embedded default) or ``kind: real``
                 (adapters over public datasets under ``--data ROOT``)
``split``        ``kind: kfold`` (``k`` folds, one transfer notebook per fold) or ``holdout``
``strategies``   mapping strategy name -> its options; one transfer notebook per strategy
``smoke``        overrides deep-merged over the config by ``--smoke`` (CI-sized run)

Everything else (``model``, ``source``, ``transfer``, ``heatmaps``, ...) is passed unchanged
to the notebooks, which hand it to cxrlib's stage runners.

The config hash (:func:`config_hash`) is a SHA-256 of the resolved config in canonical JSON;
runs and stages are keyed by it so a rerun of the same config resumes instead of repeating.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import yaml

from cxrlib.io import write_text
REQUIRED_KEYS: tuple[str, ...] = ("name", "task", "data", "split", "strategies")

# Applied by --smoke under the experiment's own ``smoke:`` block (the block wins).
DEFAULT_SMOKE: dict[str, Any] = {
    "split": {"k": 2},
    "source": {"train": {"epochs": 1}},
    "transfer": {"train": {"epochs": 1}},
    "heatmaps": {"n_images": 4, "n_scored": 8},
}


class ConfigError(ValueError):
    """An experiment config is missing a key or has a value of the wrong kind."""


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``override`` merged in recursively (override wins; inputs untouched).

    Args:
        base: the mapping to start from.
        override: values to set; nested mappings are merged key by key, anything else replaces.
    """
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_dotted(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``cfg['a']['b'] = value`` for ``dotted == 'a.b'``, creating mappings on the way.

    Args:
        cfg: config mapping, changed in place.
        dotted: key path separated by dots.
        value: the value (strings from the command line are parsed as YAML scalars).
    """
    keys = dotted.split(".")
    node = cfg
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {key!r} is not a mapping")
    node[keys[-1]] = yaml.safe_load(value) if isinstance(value, str) else value


def load_experiment(
    path: str | os.PathLike,
    smoke: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Read and validate an experiment YAML, applying ``--smoke`` and ``--set`` overrides.

    Args:
        path: the experiment YAML file.
        smoke: merge :data:`DEFAULT_SMOKE` and then the file's ``smoke:`` block over the config.
        overrides: dotted keys -> values (``{"transfer.train.epochs": 2}``), applied last, each
            checked first by :func:`cxrlib.report.overrides.check_override`.

    Returns:
        The resolved config, with ``smoke`` (bool) and ``config_file`` (absolute path) set and
        the ``smoke:`` block removed.

    Raises:
        ConfigError: the file is missing, is not YAML, lacks a required key, or an override
            names an unknown key or a value of the wrong kind.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: experiment config not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    smoke_block = raw.pop("smoke", None) or {}
    cfg = raw
    if smoke:
        # the smoke sizes of the heatmaps apply to a config that has heatmaps (a config without
        # that block plans no notebook 5, smoke or not)
        defaults = {k: v for k, v in DEFAULT_SMOKE.items() if k != "heatmaps" or cfg.get("heatmaps")}
        cfg = deep_merge(deep_merge(cfg, defaults), smoke_block)
    from cxrlib.report.overrides import OverrideError, check_override

    for dotted, value in (overrides or {}).items():
        parsed = yaml.safe_load(value) if isinstance(value, str) else value
        try:
            check_override(cfg, dotted, parsed, str(path))  # before anything runs, naming the key
        except OverrideError as exc:
            raise ConfigError(str(exc)) from None
        set_dotted(cfg, dotted, value)  # parses a string once, as checked above
    cfg["smoke"] = bool(smoke)
    cfg["config_file"] = str(path.resolve())
    validate_experiment(cfg, str(path))
    return cfg


def validate_experiment(cfg: Mapping[str, Any], name: str = "config") -> None:
    """Check the keys the orchestration needs, naming the file and key on error.

    Args:
        cfg: resolved config.
        name: file name used in messages.
    """
    missing = [k for k in REQUIRED_KEYS if k not in cfg]
    if missing:
        raise ConfigError(f"{name}: missing required key(s): {', '.join(missing)}")
    from cxrlib.data.taxonomy import normalize_task

    try:
        normalize_task(str(cfg["task"]))
    except ValueError as exc:
        raise ConfigError(f"{name}: task: {exc}") from exc
    kind = cfg["data"].get("kind") if isinstance(cfg["data"], Mapping) else None
    if kind not in ("phantoms", "real"):
        raise ConfigError(f"{name}: data.kind must be 'phantoms' or 'real', got {kind!r}")
    split = cfg["split"]
    if not isinstance(split, Mapping) or split.get("kind") not in ("kfold", "holdout"):
        raise ConfigError(f"{name}: split.kind must be 'kfold' or 'holdout'")
    if split["kind"] == "kfold":
        k = split.get("k")
        if not isinstance(k, int) or k < 2:
            raise ConfigError(f"{name}: split.k must be an integer >= 2, got {k!r}")
    strategies = cfg["strategies"]
    if not isinstance(strategies, Mapping) or not strategies:
        raise ConfigError(f"{name}: strategies must be a non-empty mapping name -> options")
    from cxrlib.strategies import check

    for sname, opts in strategies.items():
        if opts is not None and not isinstance(opts, Mapping):
            raise ConfigError(f"{name}: strategies.{sname} must be a mapping of options")
        try:
            check(str(sname), opts)
        except ValueError as exc:
            raise ConfigError(f"{name}: strategies.{sname}: {exc}") from exc
    if isinstance(cfg.get("heatmaps"), Mapping):
        from cxrlib.report.heatmaps import scored_count

        try:
            scored_count(cfg["heatmaps"])
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from exc
    validate_external(cfg.get("external"), name)


EXTERNAL_KEYS = {"collections", "thresholds", "bootstrap", "enrichment_threshold", "effect_threshold"}
EXTERNAL_ENTRY_KEYS = {"name", "collection", "path", "adapter", "root", "task", "options", "labels", "optional"}


def validate_external(block: Any, name: str = "config") -> None:
    """Check the optional ``external:`` block (see :mod:`cxrlib.validation.stage`), naming the key."""
    if block is None:
        return
    if not isinstance(block, Mapping):
        raise ConfigError(f"{name}: external must be a mapping (collections, thresholds, ...)")
    bad = sorted(set(block) - EXTERNAL_KEYS)
    if bad:
        raise ConfigError(f"{name}: external: unknown key(s) {bad}; known: {sorted(EXTERNAL_KEYS)}")
    entries = block.get("collections") or []
    if not isinstance(entries, list):
        raise ConfigError(f"{name}: external.collections must be a list of {{adapter, root, ...}} entries")
    from cxrlib.data.adapters import ADAPTERS

    for i, e in enumerate(entries):
        where = f"{name}: external.collections[{i}]"
        if not isinstance(e, Mapping) or not ("collection" in e or ("adapter" in e and "root" in e)):
            raise ConfigError(f"{where}: needs 'collection' (found by its published folder names) "
                              "or 'adapter' and 'root'")
        if sorted(set(e) - EXTERNAL_ENTRY_KEYS):
            raise ConfigError(f"{where}: unknown key(s) {sorted(set(e) - EXTERNAL_ENTRY_KEYS)}")
        key = e.get("adapter") or e.get("collection")
        if key not in ADAPTERS:
            raise ConfigError(f"{where}: {key!r} unknown; known: {', '.join(ADAPTERS)}")
    try:
        from cxrlib.validation.metrics import Thresholds

        Thresholds.from_config(block.get("thresholds"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: {exc}") from exc
    for key in ("bootstrap", "enrichment_threshold", "effect_threshold"):
        if key in block and not isinstance(block[key], (int, float)):
            raise ConfigError(f"{name}: external.{key} must be a number, got {block[key]!r}")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, the input of every hash here."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(cfg: Mapping[str, Any], length: int = 12) -> str:
    """SHA-256 (hex, first ``length`` digits) of a config, ignoring where the file lives.

    Args:
        cfg: resolved config (``config_file`` is left out, so a copied file hashes the same).
        length: number of hex digits kept.
    """
    body = {k: v for k, v in cfg.items() if k != "config_file"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()[:length]


def file_hash(path: str | os.PathLike, length: int = 12) -> str:
    """SHA-256 of a file's bytes (hex, first ``length`` digits)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:length]


def save_config(cfg: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML atomically (the copy a run keeps of what it ran)."""
    return write_text(path, yaml.safe_dump(dict(cfg), sort_keys=False))
