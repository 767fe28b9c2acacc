"""Config-driven experiment runners (what the notebooks and ``cxr run`` call).

API (stable):

- ``run_stage(config, stage_dir, overwrite=False) -> dict`` — one training stage.
- ``run_source_stage(manifest, stage_dir, source_task="nih14", init="imagenet", **config)``
- ``run_target_stage(strategy, manifest, stage_dir, fold=None, source_dir=None,
  keep_neurons=None, **config)``
- ``cross_validate(config, out_dir, k=5, folds=None) -> DataFrame`` (mean ± std per metric)
- ``run_strategies(strategies, target_config, source_config, out_dir, cv=True) -> {name: dir}``
- ``compare_strategies(run_dirs, out_dir) -> dict[str, DataFrame]`` (McNemar, learning curves)
- ``load_stage(stage_dir) -> (model, config, metrics)``
- ``STAGE_DEFAULTS``, ``VARIANTS``, ``StageIncomplete``

Example (paper B on phantoms; each call can run in its own process or notebook)::

    from cxrlib import experiment
    stage = {"backbone": "compact_densenet", "image_size": 64, "train": {"epochs": 5}}
    experiment.run_source_stage("phantoms_source/manifest.csv", "runs/source", source_task="nih14",
                                init="imagenet", **stage)   # scratch when offline, recorded
    experiment.run_target_stage("twice", "phantoms_b/manifest.csv", "runs/twice_onk", task="paper_b",
                                source_dir="runs/source", keep_neurons="default", **stage)
    experiment.cross_validate({**stage, "task": "paper_a", "manifest": "paper_a.csv",
                               "root": "../shared/data"}, "runs/scratch_cv", k=5)
    experiment.compare_strategies({"scratch": "runs/scratch_cv", ...}, "runs/comparison")

A **stage directory** holds (all written atomically; ``metrics.json`` is written last and
marks the stage as complete):

=====================  ===================================================================
``config.json``        resolved config, model init (strategy, ImageNet used or not, kept
                       neurons), freezing summary, data counts, excluded rows with reasons
``model.h5``           the trained model (best weights by ``train.monitor``)
``best.h5``            best checkpoint written during training
``history.csv``        one row per epoch: epoch, phase, lr, seconds, loss, accuracy,
                       val_loss, val_accuracy, val_macro_f1, val_recall_<class> ...
``metrics.json``       val and test metrics (cxrlib.evaluation), bootstrap 95 % CIs on test
``metrics_per_class.csv``  tidy per-class test metrics
``predictions.csv``    test predictions: path, patient_id, label, prob_<class>..., pred
``predictions_val.csv``  the same on the validation split
``tensorboard/``       TensorBoard logs
=====================  ===================================================================

Re-running a stage whose ``metrics.json`` exists with the same config returns the stored
metrics without training (resume); a different config raises unless ``overwrite=True``.

Config keys (``STAGE_DEFAULTS``): ``task`` (``paper_a``, ``paper_b``, ``paper_b_viral``,
``nih14``/``source`` multi-label, or ``normal_disease``: NIH findings grouped into
normal = ``No Finding``/empty vs disease), ``manifest`` (CSV path), ``root`` (data root; default
the manifest's folder), ``strategy``, ``source_dir``, ``keep_neurons`` (dict, ``"default"`` =
``cxrlib.transfer.DEFAULT_KEEP_NEURONS[task]``, or None), ``fold`` (test fold of a k-fold
manifest, None or -1 for a hold-out split; the validation set for early stopping is then carved patient-grouped out of the
other folds, so the test fold is never used for model selection), ``val_fraction``,
``test_fraction`` (hold-out split when the manifest has neither ``split`` nor ``fold``),
``backbone``, ``image_size``, ``channels``, ``batch_size``, ``augment``, ``sampling``
(``"class_weight"``: loss weighted by inverse class frequency when ``train.class_weight``;
``"oversample"``: balanced sampling, training rows of the smaller classes repeated (seeded,
with replacement) up to the largest class, no class weights; ``"none"``), ``cache``,
``resize_mode``, ``max_images`` (class-stratified subsample, for quick low-resolution runs),
``exclude_patients_of`` (a manifest whose (source, patient_id) pairs are removed from this
stage's data: keeps target test patients out of a source stage), ``dropout``, ``positive``,
``bootstrap`` (resamples for CIs, 0 = off), ``imagenet_fallback`` (strategy ``imagenet``
without available weights starts from scratch, recorded in ``init``, instead of failing; set
by :func:`run_source_stage`), ``train`` (dict of
:class:`cxrlib.training.TrainConfig`).

Strategy variants for :func:`run_strategies` (``VARIANTS``): ``scratch``, ``imagenet``,
``domain_extension`` (paper A: source stage on the normal/disease grouping from scratch),
``twice`` (paper B: ImageNet -> 14 NIH findings -> target; scratch first step when ImageNet
weights are absent, recorded), ``twice_onk`` (twice + output neuron keeping).
"""

from __future__ import annotations

import json
import math
import os
from copy import deepcopy
from itertools import combinations
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from cxrlib import evaluation, models, training, transfer
from cxrlib.data import manifest as mf
from cxrlib.io import read_json, to_jsonable, write_csv, write_json
from cxrlib.data.taxonomy import NIH_FINDINGS, is_multilabel, normalize_task, task_classes

NORMAL_DISEASE = ("normal", "disease")
NO_FINDING = "No Finding"

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
    "train": {},
}

VARIANTS: dict[str, dict[str, Any]] = {
    "scratch": {"strategy": "scratch"},
    "imagenet": {"strategy": "imagenet"},
    "domain_extension": {"strategy": "domain_extension",
                         "source": {"task": "normal_disease", "init": "scratch"}},
    "twice": {"strategy": "twice", "source": {"task": "nih14", "init": "imagenet"}},
    "twice_onk": {"strategy": "twice", "keep_neurons": "default",
                  "source": {"task": "nih14", "init": "imagenet"}},
}


class StageIncomplete(RuntimeError):
    """A stage directory lacks metrics.json / model.h5 (not run or interrupted)."""


# --------------------------------------------------------------------------- config

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
    transfer.check_strategy(cfg["strategy"])
    if cfg["backbone"] not in models.BACKBONES:
        raise ValueError(f"unknown backbone {cfg['backbone']!r}; choose one of {models.BACKBONES}")
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


def stage_classes(task: str) -> tuple[list[str], bool]:
    """(output names, multi_label) of a stage task (incl. the ``normal_disease`` grouping)."""
    if task == "normal_disease":
        return list(NORMAL_DISEASE), False
    return list(task_classes(task)), is_multilabel(task)


# --------------------------------------------------------------------------- data

def _normal_disease(findings: str) -> str:
    f = [x for x in mf.split_findings(findings) if x]
    return "normal" if not f or f == [NO_FINDING] else "disease"


def prepare_frame(cfg: Mapping[str, Any]) -> tuple[pd.DataFrame, list[dict]]:
    """Read and filter the stage's manifest. Returns (rows, excluded-row records with reasons).

    Single-label tasks drop rows with an empty ``label`` (e.g. multi-label NIH rows in a
    merged manifest), counted and reported; labels outside the task's classes are an error
    (raised by the pipeline naming the CSV line).
    """
    df = mf.read_manifest(cfg["manifest"])
    df.attrs["manifest_path"] = cfg["manifest"]
    excluded: list[dict] = []
    task = cfg["task"]
    if task == "normal_disease":
        df = df.assign(label=[_normal_disease(v) for v in df["findings"]])
    elif not is_multilabel(task):
        empty = df["label"] == ""
        if empty.any():
            excluded.append({"reason": f"empty label (not part of task {task})", "n": int(empty.sum())})
            df = df[~empty]
    if cfg["exclude_patients_of"]:
        other = mf.read_manifest(cfg["exclude_patients_of"])
        keys = set(zip(other["source"], other["patient_id"]))
        hit = np.array([k in keys for k in zip(df["source"], df["patient_id"])], dtype=bool)
        if hit.any():
            excluded.append({"reason": f"patient also in {cfg['exclude_patients_of']}",
                             "n": int(hit.sum())})
            df = df[~hit]
    if cfg["max_images"] and len(df) > int(cfg["max_images"]):
        frac = int(cfg["max_images"]) / len(df)
        strata = df["findings"].map(_normal_disease) if stage_classes(task)[1] else df["label"]
        keep = df.groupby(strata, group_keys=False).sample(frac=frac, random_state=cfg["split_seed"])
        excluded.append({"reason": f"subsampled to max_images={cfg['max_images']} (class-stratified)",
                         "n": int(len(df) - len(keep))})
        df = keep.sort_index()
    if len(df) == 0:
        raise ValueError(f"{cfg['manifest']}: no rows left for task {task!r} ({excluded})")
    return df.reset_index(drop=True), excluded


def split_frame(df: pd.DataFrame, cfg: Mapping[str, Any]) -> tuple[dict[str, pd.DataFrame], str]:
    """Train/val/test rows of a stage (see module docstring). Returns (splits, description).

    Uses :func:`cxrlib.data.splits.kfold_split` / ``holdout_split`` (patient-grouped,
    class-stratified) for everything it has to split itself.
    """
    from cxrlib.data import splits

    seed = int(cfg["split_seed"])
    if cfg["fold"] is not None:
        if "fold" not in df.columns or (df["fold"] == "").any():
            raise ValueError(f"{cfg['manifest']}: fold={cfg['fold']} needs a complete 'fold' column; "
                             "use cross_validate() (adds folds with cxrlib.data.splits.kfold_split) "
                             "or `cxr data split`")
        f = str(cfg["fold"])
        test = df[df["fold"].astype(str) == f]
        if len(test) == 0:
            raise ValueError(f"{cfg['manifest']}: no row has fold {f}")
        rest = df[df["fold"].astype(str) != f].drop(columns=["fold"])
        k_inner = max(2, int(round(1 / float(cfg["val_fraction"]))))
        inner = splits.kfold_split(rest, k=k_inner, seed=seed)
        val_mask = inner["fold"].astype(str) == "0"
        return ({"train": inner[~val_mask].drop(columns=["fold"]), "val": inner[val_mask].drop(columns=["fold"]),
                 "test": test},
                f"test = fold {f}; val = inner patient-grouped fold 0 of {k_inner} of the other folds")
    if "split" in df.columns and (df["split"] != "").all():
        parts = {s: df[df["split"] == s] for s in mf.SPLITS}
        if len(parts["train"]) == 0 or len(parts["val"]) == 0:
            raise ValueError(f"{cfg['manifest']}: the 'split' column needs train and val rows")
        if len(parts["test"]) == 0:
            parts["test"] = parts["val"]
            return parts, "manifest 'split' column; no test rows: test = val"
        return parts, "manifest 'split' column"
    d = splits.holdout_split(df, test_size=float(cfg["test_fraction"]), val_size=float(cfg["val_fraction"]),
                             seed=seed)
    return {s: d[d["split"] == s] for s in mf.SPLITS}, \
        f"holdout_split(test={cfg['test_fraction']}, val={cfg['val_fraction']}, seed={seed})"


def oversample(df: pd.DataFrame, seed: int = 0, label_col: str = "label") -> pd.DataFrame:
    """Balanced sampling: repeat rows of the smaller classes (with replacement) up to the largest.

    Args:
        df: training rows.
        seed: sampling seed.
        label_col: class column.
    """
    counts = df[label_col].value_counts()
    top = int(counts.max())
    parts = [df]
    for i, (label, n) in enumerate(counts.items()):
        if n < top:
            parts.append(df[df[label_col] == label].sample(top - int(n), replace=True, random_state=seed + i))
    return pd.concat(parts).reset_index(drop=True)


def _datasets(parts: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any], classes, multi_label):
    from cxrlib.data import pipeline

    common = dict(root=cfg["root"], classes=classes, image_size=cfg["image_size"],
                  channels=cfg["channels"], backbone=cfg["backbone"], multi_label=multi_label,
                  batch_size=cfg["batch_size"], resize_mode=cfg["resize_mode"], seed=cfg["split_seed"],
                  cache=cfg["cache"])
    train_rows = parts["train"]
    if cfg["sampling"] == "oversample":
        train_rows = oversample(train_rows, seed=int(cfg["split_seed"]))
    train = pipeline.make_dataset(train_rows, shuffle=True, augment=cfg["augment"], **common)
    val = pipeline.make_dataset(parts["val"], **common)
    test = val if parts["test"] is parts["val"] else pipeline.make_dataset(parts["test"], **common)
    weights = None
    if not multi_label and cfg["train"]["class_weight"] and cfg["sampling"] == "class_weight":
        weights = pipeline.class_weights(parts["train"], classes)
    return train, val, test, weights


# --------------------------------------------------------------------------- stages

def load_stage(stage_dir: str | os.PathLike, model: bool = True):
    """(model or None, config.json, metrics.json) of a finished stage.

    Args:
        stage_dir: the stage directory.
        model: also load ``model.h5``.
    """
    d = Path(stage_dir)
    if not (d / "metrics.json").is_file() or not (d / "model.h5").is_file():
        raise StageIncomplete(f"{d}: stage not finished (no metrics.json/model.h5); run it first")
    return (models.load_model(d / "model.h5") if model else None,
            read_json(d / "config.json"), read_json(d / "metrics.json"))


def run_stage(config: Mapping[str, Any], stage_dir: str | os.PathLike, overwrite: bool = False,
              **overrides) -> dict[str, Any]:
    """Train and evaluate one stage; write its artefacts into ``stage_dir``.

    Args:
        config: stage config (see module docstring); ``**overrides`` update it.
        stage_dir: output directory.
        overwrite: retrain even if a finished stage with a different config is there.

    Returns:
        The metrics dict also written to ``metrics.json``.
    """
    cfg = resolve_config(config, **overrides)
    out = Path(stage_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "metrics.json").is_file() and (out / "config.json").is_file() and not overwrite:
        old = read_json(out / "config.json").get("config")
        if old == json.loads(json.dumps(to_jsonable(cfg))):
            print(f"[cxrlib] {out}: finished stage with the same config found, not retraining")
            return read_json(out / "metrics.json")
        raise FileExistsError(f"{out} holds a finished stage with a different config; "
                              "use another directory or overwrite=True")
    for stale in ("metrics.json",):
        (out / stale).unlink(missing_ok=True)

    classes, multi_label = stage_classes(cfg["task"])
    df, excluded = prepare_frame(cfg)
    parts, split_desc = split_frame(df, cfg)
    for name, part in parts.items():
        if len(part) == 0:
            raise ValueError(f"{cfg['manifest']}: the {name} split is empty ({split_desc})")
    train_ds, val_ds, test_ds, cw = _datasets(parts, cfg, classes, multi_label)

    source_classes = None
    if cfg["strategy"] in transfer.SOURCE_STRATEGIES:
        if not cfg["source_dir"]:
            raise ValueError(f"strategy {cfg['strategy']!r} needs source_dir (a finished source stage)")
        _, src_cfg, _ = load_stage(cfg["source_dir"], model=False)
        source_classes = src_cfg["classes"]
    input_shape = (int(cfg["image_size"]), int(cfg["image_size"]), int(cfg["channels"]))
    info: dict[str, Any] = {}

    def model_fn():
        model, init = transfer.init_model(
            cfg["strategy"], cfg["backbone"], input_shape, classes,
            activation="sigmoid" if multi_label else "softmax",
            source_model=str(Path(cfg["source_dir"]) / "model.h5") if cfg["source_dir"] else None,
            source_classes=source_classes, keep_neurons=cfg["keep_neurons"], dropout=cfg["dropout"],
            allow_scratch_fallback=bool(cfg["imagenet_fallback"]))
        info.update(init)
        return model

    counts = {s: int(len(p)) for s, p in parts.items()}
    per_class = {s: p["label"].value_counts().to_dict() for s, p in parts.items()}
    base_record = {"config": cfg, "classes": classes, "multi_label": multi_label, "split": split_desc,
                   "n": counts, "n_per_class": per_class, "excluded": excluded,
                   "class_weight": cw, "versions": _versions()}
    write_json(out / "config.json", {**base_record, "status": "running"})

    result = training.fit(model_fn, train_ds, val_ds, classes, cfg["train"], out_dir=out,
                          class_weight=cw, multi_label=multi_label)
    models.save_model(result.model, out / "model.h5")
    write_json(out / "config.json", {**base_record, "init": info, "phases": result.phases, "status": "done"})

    metrics: dict[str, Any] = {"stage": cfg["name"], "strategy": cfg["strategy"], "task": cfg["task"],
                               "fold": cfg["fold"], "init": info, "best_epoch": result.best_epoch,
                               "monitor": cfg["train"]["monitor"], "best_value": result.best_value,
                               "epochs_run": int(len(result.history)), "train_seconds": round(result.seconds, 1),
                               "n": counts}
    for split, ds in (("val", val_ds), ("test", test_ds)):
        prob = training.predict(result.model, ds)
        y = parts[split]
        y_true = _targets(y, classes, multi_label)
        if multi_label:
            m = evaluation.multilabel_metrics(y_true, prob, classes)
        else:
            m = evaluation.classification_metrics(y_true, prob, classes, positive=cfg["positive"])
        metrics[split] = m
        name = "predictions.csv" if split == "test" else "predictions_val.csv"
        write_csv(out / name, evaluation.predictions_frame(y, prob, classes, multi_label))
        if split == "test":
            write_csv(out / "metrics_per_class.csv", evaluation.per_class_table(m))
            if cfg["bootstrap"] and not multi_label:
                metrics["test_ci"] = {k: evaluation.bootstrap_ci(y_true, prob, k, n_boot=int(cfg["bootstrap"]),
                                                                 seed=int(cfg["split_seed"]))
                                      for k in ("accuracy", "macro_f1")}
    write_json(out / "metrics.json", metrics)  # last: marks the stage complete
    return json.loads(json.dumps(to_jsonable(metrics)))


def _targets(df: pd.DataFrame, classes, multi_label) -> np.ndarray:
    from cxrlib.data import pipeline

    return pipeline.encode_targets(df, classes, multi_label=multi_label)


def _versions() -> dict[str, str]:
    import sklearn
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "numpy": np.__version__, "sklearn": sklearn.__version__,
            "pandas": pd.__version__}


def run_source_stage(manifest: str | os.PathLike, stage_dir: str | os.PathLike,
                     source_task: str = "nih14", init: str = "imagenet", overwrite: bool = False,
                     **config) -> dict[str, Any]:
    """Source stage of domain_extension / twice: train on NIH-style data.

    Args:
        manifest: source manifest (NIH-style ``findings``).
        stage_dir: output directory.
        source_task: ``"nih14"`` (14 sigmoid outputs, paper B) or ``"normal_disease"``
            (paper A's normal/disease grouping, softmax).
        init: ``"imagenet"`` (falls back to scratch when the weights are unavailable; the
            stage's config.json/metrics.json ``init`` records it) or ``"scratch"``.
        overwrite: see :func:`run_stage`.
        **config: more stage options (backbone, image_size, train, exclude_patients_of, ...).
    """
    if init not in ("imagenet", "scratch"):
        raise ValueError(f"source init must be 'imagenet' or 'scratch', got {init!r}")
    config = {**config, "manifest": manifest, "task": source_task, "strategy": init, "name": "source",
              "keep_neurons": None, "source_dir": None, "positive": None, "imagenet_fallback": True}
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


# --------------------------------------------------------------------------- k-fold

def _fold_manifest(cfg: dict, out: Path, k: int) -> str:
    """Manifest with a complete 'fold' column: the input one, or kfold_split's into out/."""
    df = mf.read_manifest(cfg["manifest"])
    if "fold" in df.columns and (df["fold"] != "").all() and df["fold"].nunique() == k:
        return cfg["manifest"]
    from cxrlib.data import splits

    path = out / "folds_manifest.csv"
    if path.is_file():
        return str(path)
    labelled = df
    if cfg["task"] not in ("normal_disease",) and not is_multilabel(cfg["task"]):
        labelled = df[df["label"] != ""]
    folded = splits.kfold_split(labelled.drop(columns=["fold"], errors="ignore"), k=k, seed=int(cfg["split_seed"]))
    folded["fold"] = folded["fold"].astype(str)
    mf.write_manifest(folded, path)
    return str(path)


def cross_validate(config: Mapping[str, Any], out_dir: str | os.PathLike, k: int = 5,
                   folds: Sequence[int] | None = None, overwrite: bool = False) -> pd.DataFrame:
    """Patient-grouped k-fold cross-validation of one stage config; each fold is a stage.

    Writes ``out_dir/fold<i>/`` (stage dirs), ``cv_metrics.csv`` (one row per fold),
    ``cv_summary.csv`` / ``cv_summary.json`` (mean ± std, ddof=1), ``predictions_all.csv``
    (every image's out-of-fold prediction, with its fold) and ``history_all.csv``.
    Finished folds are not retrained (resume).

    Args:
        config: stage config (its ``fold`` is ignored).
        out_dir: output directory.
        k: number of folds (when the manifest has no complete fold column, folds are made
            with :func:`cxrlib.data.splits.kfold_split` and saved as ``folds_manifest.csv``).
        folds: subset of folds to run (default all k).
        overwrite: retrain folds.

    Returns:
        The summary table (metric, mean, std, n, min, max, text).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = resolve_config(config, fold=None)
    manifest = _fold_manifest(cfg, out, k)
    rows, preds, hists = [], [], []
    for f in (folds if folds is not None else range(k)):
        fold_dir = out / f"fold{f}"
        m = run_stage({**dict(config), "manifest": manifest, "root": cfg["root"], "fold": int(f)}, fold_dir,
                      overwrite=overwrite)
        rows.append({"fold": int(f), **evaluation.scalar_metrics(m["test"]), "best_epoch": m["best_epoch"]})
        p = pd.read_csv(fold_dir / "predictions.csv", keep_default_na=False)
        preds.append(p.assign(fold=int(f)))
        hists.append(pd.read_csv(fold_dir / "history.csv").assign(fold=int(f)))
    wide = pd.DataFrame(rows)
    write_csv(out / "cv_metrics.csv", wide)
    summary = evaluation.aggregate_folds(wide.drop(columns=["best_epoch"]))
    write_csv(out / "cv_summary.csv", summary)
    write_csv(out / "predictions_all.csv", pd.concat(preds, ignore_index=True))
    write_csv(out / "history_all.csv", pd.concat(hists, ignore_index=True))
    write_json(out / "cv_summary.json",
               {"k": k, "folds": [int(r["fold"]) for r in rows], "strategy": cfg["strategy"],
                "task": cfg["task"], "manifest": manifest,
                "summary": summary.set_index("metric")[["mean", "std", "n"]].to_dict("index")})
    return summary


# --------------------------------------------------------------------------- strategies

def run_strategies(strategies: Sequence[str], target_config: Mapping[str, Any],
                   source_config: Mapping[str, Any] | None, out_dir: str | os.PathLike,
                   cv: bool = True, k: int = 5, folds: Sequence[int] | None = None,
                   overwrite: bool = False) -> dict[str, Path]:
    """Run several strategy variants on the same target data (same folds / split).

    Source stages are shared: ``out_dir/source_<task>_<init>/`` is trained once and reused by
    every variant needing it. Each variant writes ``out_dir/<variant>/`` (a k-fold directory
    when ``cv``, else a stage directory).

    Args:
        strategies: names from ``VARIANTS``.
        target_config: stage config of the target task (manifest, task, backbone, train ...).
        source_config: stage config of the source stage (manifest of NIH-style data; may
            hold its own ``train``); needed for domain_extension / twice variants.
        out_dir: output directory.
        cv: k-fold cross-validation (``cross_validate``) instead of one split.
        k: folds.
        folds: subset of folds.
        overwrite: retrain.

    Returns:
        {variant: its output directory}.
    """
    out = Path(out_dir)
    dirs: dict[str, Path] = {}
    for name in strategies:
        if name not in VARIANTS:
            raise ValueError(f"unknown strategy variant {name!r}; choose from {', '.join(VARIANTS)}")
        v = VARIANTS[name]
        cfg = {**dict(target_config), "strategy": v["strategy"], "keep_neurons": v.get("keep_neurons"),
               "name": name}
        if "source" in v:
            if not source_config:
                raise ValueError(f"variant {name!r} needs source_config (NIH-style source manifest)")
            s = v["source"]
            src_dir = out / f"source_{s['task']}_{s['init']}"
            scfg = {key: val for key, val in dict(source_config).items() if key not in ("task", "strategy")}
            for key in ("backbone", "image_size", "channels"):
                scfg.setdefault(key, target_config.get(key, STAGE_DEFAULTS[key]))
            run_source_stage(scfg.pop("manifest"), src_dir, source_task=s["task"], init=s["init"],
                             overwrite=overwrite, **scfg)
            cfg["source_dir"] = str(src_dir)
        d = out / name
        if cv:
            cross_validate(cfg, d, k=k, folds=folds, overwrite=overwrite)
        else:
            run_stage(cfg, d, overwrite=overwrite)
        dirs[name] = d
    return dirs


def _run_tables(d: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(predictions, history, per-fold metrics) of a stage dir or a k-fold dir."""
    if (d / "predictions_all.csv").is_file():
        return (pd.read_csv(d / "predictions_all.csv", keep_default_na=False),
                pd.read_csv(d / "history_all.csv"), pd.read_csv(d / "cv_metrics.csv"))
    if not (d / "metrics.json").is_file():
        raise StageIncomplete(f"{d}: neither a finished stage nor a finished cross-validation")
    m = read_json(d / "metrics.json")
    wide = pd.DataFrame([{"fold": m.get("fold") or 0, **evaluation.scalar_metrics(m["test"])}])
    return (pd.read_csv(d / "predictions.csv", keep_default_na=False),
            pd.read_csv(d / "history.csv").assign(fold=0), wide)


def compare_strategies(run_dirs: Mapping[str, str | os.PathLike], out_dir: str | os.PathLike,
                       metric: str = "val_macro_f1") -> dict[str, pd.DataFrame]:
    """Compare strategies run on the same images: summary, paired McNemar tests, learning curves.

    Writes into ``out_dir``: ``comparison.csv`` (strategy, metric, mean, std, n),
    ``mcnemar.csv`` (every pair, exact binomial McNemar on the images both predicted,
    matched by path), ``learning_curves.csv`` (tidy: strategy, fold, epoch, metrics) and
    ``learning_curves.png`` (``metric`` per epoch, one line per strategy, mean and 95 % band
    over folds).

    Args:
        run_dirs: {strategy name: stage dir or k-fold dir}.
        out_dir: output directory.
        metric: history column for the learning-curve plot.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    preds, hists, summaries = {}, [], []
    for name, d in run_dirs.items():
        p, h, wide = _run_tables(Path(d))
        preds[name] = p
        hists.append(h.assign(strategy=name))
        summaries.append(evaluation.aggregate_folds(wide).assign(strategy=name))
    comparison = pd.concat(summaries, ignore_index=True)[["strategy", "metric", "mean", "std", "n", "text"]]
    tests = []
    for a, b in combinations(preds, 2):
        pa, pb = preds[a], preds[b]
        classes = [c[len("prob_"):] for c in pa.columns if c.startswith("prob_")]
        if "label" not in pa.columns:
            continue  # multi-label runs: no single-label McNemar
        j = pa.merge(pb, on="path", suffixes=("_a", "_b"))
        if len(j) == 0:
            tests.append({"a": a, "b": b, "n": 0, "p_value": math.nan, "note": "no common test images"})
            continue
        idx = {c: i for i, c in enumerate(classes)}
        r = evaluation.mcnemar(j["label_a"].map(idx).to_numpy(), j["pred_a"].map(idx).to_numpy(),
                               j["pred_b"].map(idx).to_numpy())
        tests.append({"a": a, "b": b, **r, "note": f"{len(j)} common images (of {len(pa)}, {len(pb)})"})
    mcn = pd.DataFrame(tests)
    curves = pd.concat(hists, ignore_index=True)
    write_csv(out / "comparison.csv", comparison)
    write_csv(out / "mcnemar.csv", mcn)
    write_csv(out / "learning_curves.csv", curves)
    if metric in curves.columns:
        import matplotlib.pyplot as plt

        fig = evaluation.plot_learning_curves(curves, metric, out / "learning_curves.png")
        plt.close(fig)
    return {"comparison": comparison, "mcnemar": mcn, "learning_curves": curves}
