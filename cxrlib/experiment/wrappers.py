"""Source and target stages: :func:`run_stage` with the options each step of a strategy fixes.

- :func:`run_source_stage`: paper A's normal/disease source (Basu et al. 2020) or paper B's 14
  NIH ChestX-ray14 findings (Bassi & Attux 2020), from ImageNet or scratch.
- :func:`run_target_stage`: one strategy on the target task, from a finished source stage
  when the strategy needs one.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from cxrlib.experiment.stage import run_stage


def run_source_stage(manifest: str | os.PathLike, stage_dir: str | os.PathLike,
                     source_task: str = "nih14", init: str = "imagenet", overwrite: bool = False,
                     **config) -> dict[str, Any]:
    """Source stage of domain_extension / twice: train on NIH-style data.

    Args:
        manifest: source manifest (NIH-style ``findings``).
        stage_dir: output directory.
        source_task: ``"nih14"`` (14 sigmoid outputs, paper B) or ``"normal_disease"``
            (paper A's normal/disease grouping, softmax).
        init: ``"imagenet"``, ``"scratch"`` or ``"checkpoint:NAME_URL_OR_PATH"`` (a
            torchvision-layout DenseNet checkpoint such as CheXNet, imported by
            :func:`cxrlib.weights.source_model_from_spec`; ``train.epochs: 0`` uses it as is,
            more epochs fine-tune it on the source data). Without the ImageNet weights file an
            ``imagenet`` source stage fails before reading any data, naming the file to place,
            unless ``imagenet_fallback=True`` is passed: it then starts from scratch and its
            config.json/metrics.json ``init`` records it.
        overwrite: see :func:`run_stage`.
        **config: more stage options (backbone, image_size, train, exclude_patients_of, ...).
    """
    checkpoint = None
    if str(init).startswith("checkpoint:"):
        checkpoint, init = str(init), "scratch"  # the checkpoint replaces the random start
    elif init not in ("imagenet", "scratch"):
        raise ValueError(f"source init must be 'imagenet', 'scratch' or 'checkpoint:NAME_URL_OR_PATH', got {init!r}")
    config = {**config, "manifest": manifest, "task": source_task, "strategy": init, "name": "source",
              "init_checkpoint": checkpoint,
              "keep_neurons": None, "source_dir": None, "positive": None}
    config.pop("fold", None)
    return run_stage(config, stage_dir, overwrite=overwrite)


def run_target_stage(strategy: str, manifest: str | os.PathLike, stage_dir: str | os.PathLike,
                     fold: int | None = None, source_dir: str | os.PathLike | None = None,
                     keep_neurons: Mapping[str, str] | str | None = None, overwrite: bool = False,
                     **config) -> dict[str, Any]:
    """Target stage: train ``strategy`` on the target task.

    Args:
        strategy: ``scratch``, ``imagenet``, ``domain_extension`` or ``twice``.
        manifest: target manifest.
        stage_dir: output directory.
        fold: test fold (needs a ``fold`` column) or None (``split`` column / hold-out).
        source_dir: finished source stage (domain_extension, twice).
        keep_neurons: output neuron keeping map, ``"default"`` or None.
        overwrite: see :func:`run_stage`.
        **config: more stage options.
    """
    config = {**config, "manifest": manifest, "strategy": strategy, "fold": fold,
              "source_dir": source_dir, "keep_neurons": keep_neurons, "name": config.get("name") or "target"}
    return run_stage(config, stage_dir, overwrite=overwrite)
