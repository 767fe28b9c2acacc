"""Config-driven experiment runners (what the notebooks and the benchmarks call).

API (stable; ``from cxrlib import experiment; experiment.run_stage(...)``):

- ``run_stage(config, stage_dir, overwrite=False) -> dict`` -- one training stage
  (:mod:`~cxrlib.experiment.stage`: the stage directory and its resume rule)
- ``run_source_stage(manifest, stage_dir, source_task="nih14", init="imagenet", **config)``,
  ``run_target_stage(strategy, manifest, stage_dir, fold=None, source_dir=None,
  keep_neurons=None, **config)`` (:mod:`~cxrlib.experiment.wrappers`)
- ``cross_validate(config, out_dir, k=5, folds=None) -> DataFrame`` (:mod:`~cxrlib.experiment.kfold`)
- ``compare_strategies(run_dirs, out_dir)`` (:mod:`~cxrlib.experiment.strategies`); several
  strategies on the same data run through the plan of ``cxr run`` (:mod:`cxrlib.report.plan`,
  strategies from the registry :mod:`cxrlib.strategies`)
- ``load_stage(stage_dir) -> (model, config, metrics)``
- ``resolve_config``, ``STAGE_DEFAULTS`` (:mod:`~cxrlib.experiment.config`: every key
  documented), ``StageIncomplete``
- row selection and splits (``prepare_frame``, ``split_frame``, ``oversample``) live in
  :mod:`cxrlib.data.selection` and are re-exported here.

Example (paper B on phantoms; each call can run in its own process or notebook)::

    from cxrlib import experiment
    stage = {"backbone": "compact_densenet", "image_size": 64, "train": {"epochs": 5}}
    experiment.run_source_stage("phantoms_source/manifest.csv", "runs/source", source_task="nih14",
                                init="imagenet", imagenet_fallback=True, **stage)
    experiment.run_target_stage("twice", "phantoms_b/manifest.csv", "runs/twice_onk", task="paper_b",
                                source_dir="runs/source", keep_neurons="default", **stage)
    experiment.cross_validate({**stage, "task": "paper_a", "manifest": "paper_a.csv",
                               "root": "../shared/data"}, "runs/scratch_cv", k=5)
    experiment.compare_strategies({"scratch": "runs/scratch_cv", ...}, "runs/comparison")
"""

from cxrlib.data.selection import NORMAL_DISEASE, oversample, prepare_frame, split_frame, stage_classes
from cxrlib.experiment.config import STAGE_DEFAULTS, resolve_config
from cxrlib.experiment.kfold import cross_validate
from cxrlib.experiment.stage import StageIncomplete, load_stage, run_stage
from cxrlib.experiment.strategies import compare_strategies
from cxrlib.experiment.wrappers import run_source_stage, run_target_stage

__all__ = [
    "NORMAL_DISEASE", "STAGE_DEFAULTS", "StageIncomplete", "compare_strategies",
    "cross_validate", "load_stage", "oversample", "prepare_frame", "resolve_config", "run_source_stage",
    "run_stage", "run_target_stage", "split_frame", "stage_classes",
]
