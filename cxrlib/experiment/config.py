"""Stage configs: defaults, validation and resolution (``STAGE_DEFAULTS``, :func:`resolve_config`).

Config keys (``STAGE_DEFAULTS``): ``task`` (``paper_a``, ``paper_b``, ``paper_b_viral``,
``nih14``/``source`` multi-label, or ``normal_disease``: NIH findings grouped into
normal = ``No Finding``/empty vs disease), ``manifest`` (CSV path), ``root`` (data root; default
the manifest's folder), ``strategy`` (a transfer method of :mod:`cxrlib.strategies`),
``source_dir``, ``keep_neurons`` (dict, ``"default"`` =
``cxrlib.transfer.DEFAULT_KEEP_NEURONS[task]``, or None), ``fold`` (test fold of a k-fold
manifest, None or -1 for a hold-out split; the validation set for early stopping is then carved
patient-grouped out of the other folds, so the test fold is never used for model selection),
``val_fraction``, ``test_fraction`` (hold-out split when the manifest has neither ``split`` nor
``fold``), ``backbone``, ``image_size``, ``channels``, ``batch_size``, ``augment``, ``sampling``
(``"class_weight"``: loss weighted by inverse class frequency when ``train.class_weight``;
``"oversample"``: balanced sampling, training rows of the smaller classes repeated (seeded,
with replacement) up to the largest class, no class weights; ``"none"``), ``cache``,
``resize_mode``, ``compact_blocks`` (dense blocks of the ``compact_densenet`` backbone, e.g.
``[2, 2]``; None = ``cxrlib.models.COMPACT_DENSENET_BLOCKS``), ``max_images`` (class-stratified subsample, for quick low-resolution runs),
``exclude_patients_of`` (a manifest whose (source, patient_id) pairs are removed from this
stage's data: keeps target test patients out of a source stage), ``dropout``, ``positive``,
``bootstrap`` (resamples for CIs, 0 = off), ``imagenet_fallback`` (strategy ``imagenet``
without available weights starts from scratch, recorded in ``init``, instead of failing with
the file to place; off unless the config says so), ``train`` (dict of
:class:`cxrlib.training.TrainConfig`).

Row selection and splitting are :mod:`cxrlib.data.selection`.
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path
from typing import Any, Mapping

from cxrlib import models, training, transfer
from cxrlib.data.taxonomy import is_multilabel, normalize_task
from cxrlib.strategies import check_method

STAGE_DEFAULTS: dict[str, Any] = {
    "name": None,
    "task": None,
    "manifest": None,
    "root": None,
    "strategy": "scratch",
    "source_dir": None,
    "keep_neurons": None,
    "fold": None,
    "val_fraction": 0.2,
    "test_fraction": 0.2,
    "split_seed": 0,
    "backbone": "compact_densenet",
    "compact_blocks": None,
    "image_size": 64,
    "channels": 3,
    "batch_size": 16,
    "augment": False,
    "sampling": "class_weight",
    "cache": "memory",
    "resize_mode": "pad",
    "max_images": None,
    "exclude_patients_of": None,
    "dropout": 0.0,
    "positive": "covid19",
    "bootstrap": 1000,
    "imagenet_fallback": False,
    "init_checkpoint": None,
    "train": {},
}


def resolve_config(config: Mapping[str, Any] | None = None, **overrides) -> dict[str, Any]:
    """Defaults + config + overrides; unknown keys raise (typos in YAML fail loudly).

    Args:
        config: stage config dict.
        **overrides: keys overriding ``config``.
    """
    cfg = deepcopy(STAGE_DEFAULTS)
    merged = {**dict(config or {}), **overrides}
    unknown = sorted(set(merged) - set(cfg))
    if unknown:
        raise ValueError(f"unknown stage option(s) {unknown}; known: {sorted(cfg)}")
    cfg.update(deepcopy(merged))
    if cfg["fold"] is not None and int(cfg["fold"]) < 0:
        cfg["fold"] = None  # -1 = hold-out split (cxrlib.report.plan.HOLDOUT)
    if cfg["manifest"] is None:
        raise ValueError("stage config needs 'manifest' (path of a manifest CSV)")
    cfg["manifest"] = str(Path(cfg["manifest"]).resolve())
    cfg["root"] = str(Path(cfg["root"]).resolve()) if cfg["root"] else str(Path(cfg["manifest"]).parent)
    if not cfg["task"]:
        raise ValueError("stage config needs 'task' (paper_a, paper_b, paper_b_viral, nih14 or "
                         "normal_disease): the output classes cannot be guessed from the labels")
    if cfg["task"] != "normal_disease":
        cfg["task"] = normalize_task(cfg["task"])
    check_method(cfg["strategy"])
    if cfg["backbone"] not in models.BACKBONES:
        raise ValueError(f"unknown backbone {cfg['backbone']!r}; choose one of {models.BACKBONES}")
    if cfg["compact_blocks"] is not None:
        blocks = cfg["compact_blocks"]
        if (not isinstance(blocks, (list, tuple)) or not blocks
                or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in blocks)):
            raise ValueError(f"compact_blocks must be a list of positive ints (units per dense block), got {blocks!r}")
        if cfg["backbone"] != "compact_densenet":
            raise ValueError(f"compact_blocks applies to backbone 'compact_densenet', not {cfg['backbone']!r}")
        cfg["compact_blocks"] = [int(b) for b in blocks]
    if cfg["source_dir"]:
        cfg["source_dir"] = str(Path(cfg["source_dir"]).resolve())
    if cfg["exclude_patients_of"]:
        cfg["exclude_patients_of"] = str(Path(cfg["exclude_patients_of"]).resolve())
    if cfg["sampling"] not in ("class_weight", "oversample", "none"):
        raise ValueError(f"sampling must be 'class_weight', 'oversample' or 'none', got {cfg['sampling']!r}")
    if cfg["sampling"] == "oversample" and cfg["task"] != "normal_disease" and is_multilabel(cfg["task"]):
        raise ValueError("sampling='oversample' needs single-label classes, not the multi-label task")
    if cfg["keep_neurons"] == "default":
        if cfg["task"] not in transfer.DEFAULT_KEEP_NEURONS:
            raise ValueError(f"no default keep_neurons map for task {cfg['task']!r}; give a dict")
        cfg["keep_neurons"] = dict(transfer.DEFAULT_KEEP_NEURONS[cfg["task"]])
    train_cfg = training.TrainConfig.from_dict(cfg["train"])
    cfg["train"] = train_cfg.to_dict()
    return cfg
