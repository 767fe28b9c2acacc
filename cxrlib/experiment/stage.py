"""One training stage: train, evaluate and write a stage directory (:func:`run_stage`).

A **stage directory** holds (all written atomically with :mod:`cxrlib.io`; ``metrics.json``
is written last and marks the stage as complete):

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

Resume rule (the *training stage*'s; the report stage around it has its own, see
:mod:`cxrlib.report.layout`): re-running a stage whose ``metrics.json`` exists with the same
resolved config in ``config.json`` returns the stored metrics without training; a different
config raises unless ``overwrite=True``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from cxrlib import evaluation, losses, models, training, transfer
from cxrlib.data.selection import oversample, prepare_frame, split_frame, stage_classes
from cxrlib.experiment.config import resolve_config
from cxrlib.strategies import SOURCE_METHODS
from cxrlib.io import read_json, to_jsonable, write_csv, write_json


class StageIncomplete(RuntimeError):
    """A stage directory lacks metrics.json / model.h5 (not run or interrupted)."""


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


def check_initialisation(cfg: Mapping[str, Any]) -> None:
    """Fail before any data is read when a stage asks for ImageNet weights it cannot get.

    Honest initialisation: strategy ``imagenet`` (also the first step of ``twice``) without the
    keras.applications weights file raises :class:`cxrlib.models.ImageNetWeightsUnavailable`
    naming the file to place, unless the config says ``imagenet_fallback: true`` (then the
    stage starts from scratch and records it in ``init``).
    """
    if cfg["strategy"] == "imagenet" and not cfg["imagenet_fallback"]:
        models._check_imagenet_available(cfg["backbone"])  # the error names the file and the fix


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

    check_initialisation(cfg)
    classes, multi_label = stage_classes(cfg["task"])
    df, excluded = prepare_frame(cfg)
    parts, split_desc = split_frame(df, cfg)
    for name, part in parts.items():
        if len(part) == 0:
            raise ValueError(f"{cfg['manifest']}: the {name} split is empty ({split_desc})")
    train_ds, val_ds, test_ds, cw = _datasets(parts, cfg, classes, multi_label)

    source_classes = None
    if cfg["strategy"] in SOURCE_METHODS:
        if not cfg["source_dir"]:
            raise ValueError(f"strategy {cfg['strategy']!r} needs source_dir (a finished source stage)")
        _, src_cfg, _ = load_stage(cfg["source_dir"], model=False)
        source_classes = src_cfg["classes"]
    input_shape = (int(cfg["image_size"]), int(cfg["image_size"]), int(cfg["channels"]))
    info: dict[str, Any] = {}

    def model_fn():
        if cfg["init_checkpoint"]:
            return _checkpoint_model(cfg, classes, info)
        model, init = transfer.init_model(
            cfg["strategy"], cfg["backbone"], input_shape, classes,
            activation="sigmoid" if multi_label else "softmax",
            source_model=str(Path(cfg["source_dir"]) / "model.h5") if cfg["source_dir"] else None,
            source_classes=source_classes, keep_neurons=cfg["keep_neurons"], dropout=cfg["dropout"],
            allow_scratch_fallback=bool(cfg["imagenet_fallback"]), compact_blocks=cfg["compact_blocks"])
        info.update(init)
        return model

    counts = {s: int(len(p)) for s, p in parts.items()}
    per_class = {s: p["label"].value_counts().to_dict() for s, p in parts.items()}
    base_record = {"config": cfg, "classes": classes, "multi_label": multi_label, "split": split_desc,
                   "n": counts, "n_per_class": per_class, "excluded": excluded,
                   "class_weight": cw, "versions": _versions()}
    write_json(out / "config.json", {**base_record, "status": "running"})

    bce_weights = None  # CheXNet's weighted BCE: per-finding weights from the training rows' findings
    if multi_label and losses.resolve_loss(cfg["train"].get("loss", "auto"), True) == "weighted_bce":
        bce_weights = losses.bce_class_weights_from_manifest(parts["train"], classes)
    result = training.fit(model_fn, train_ds, val_ds, classes, cfg["train"], out_dir=out,
                          class_weight=cw, multi_label=multi_label, bce_weights=bce_weights)
    models.save_model(result.model, out / "model.h5")
    write_json(out / "config.json", {**base_record, "init": info, "phases": result.phases,
                                     "loss": result.loss, "status": "done"})

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


def _checkpoint_model(cfg: Mapping[str, Any], classes, info: dict[str, Any]):
    """The source model imported from ``cfg['init_checkpoint']`` (see :mod:`cxrlib.weights`).

    Only checkpoints whose input normalisation is the pipeline's own (ImageNet statistics, as
    keras' DenseNet121 preprocessing: the CheXNet reproductions) are accepted here, because the
    stage's tf.data pipeline applies ``stage.backbone``'s preprocessing; others are refused
    with the reason rather than trained on wrongly scaled pixels.
    """
    from cxrlib.weights import source_model_from_spec

    imported = source_model_from_spec(cfg["init_checkpoint"], int(cfg["image_size"]), int(cfg["channels"]),
                                      classes=list(classes))
    model, _, preprocessing = imported
    if getattr(preprocessing, "keras_backbone", None) != cfg["backbone"]:
        raise ValueError(
            f"{cfg['init_checkpoint']}: its input normalisation ({preprocessing}) is not the one of "
            f"stage.backbone {cfg['backbone']!r}; set stage.backbone: densenet121 for CheXNet-style "
            "checkpoints (torchxrayvision's [-1024, 1024] scaling is not supported by the stage pipeline yet)")
    info.update(strategy="checkpoint", init=cfg["init_checkpoint"], checkpoint=imported.info)
    return model


def _targets(df: pd.DataFrame, classes, multi_label) -> np.ndarray:
    from cxrlib.data import pipeline

    return pipeline.encode_targets(df, classes, multi_label=multi_label)


def _versions() -> dict[str, str]:
    import sklearn
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "numpy": np.__version__, "sklearn": sklearn.__version__,
            "pandas": pd.__version__}
