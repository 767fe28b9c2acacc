"""Training loop: optimizers, schedules, early stopping on val loss or macro-F1, tf.distribute.

API (stable):

- ``TrainConfig`` (dataclass; ``TrainConfig.from_dict``) — every knob of a training run.
- ``fit(model_fn, train_data, val_data, classes, config, out_dir=None, class_weight=None)
  -> TrainResult`` — seeds, builds the model inside the distribution strategy's scope,
  compiles and trains phase by phase (freezing schedule, see :mod:`cxrlib.transfer`),
  computes validation metrics every epoch, restores the best weights at the end.
- ``get_strategy(name)`` — ``"default"``, ``"mirrored"``, ``"multiworker"``.
- ``ValidationMetrics``, ``BestWeights``, ``HistoryCSV`` — the Keras callbacks used by fit.
- ``predict(model, data) -> np.ndarray [N, K]``.
- ``TrainConfig.loss`` / ``fit(..., bce_weights=...)``: CheXNet's weighted binary
  cross-entropy for multi-label (NIH 14-finding) stages, see :mod:`cxrlib.losses`;
  ``TrainResult.loss`` holds the per-finding weights used (record it in ``config.json``).

Validation each epoch (:class:`ValidationMetrics`): one ``model.predict`` pass over the
validation data gives ``val_loss`` (same cross-entropy as training, no class weights, like
Keras), ``val_accuracy``, ``val_macro_f1`` (scikit-learn, argmax for softmax heads,
threshold 0.5 per finding for sigmoid heads), ``val_recall_<class>`` per class, and for
sigmoid heads ``val_macro_auroc``. These keys are written into the epoch logs *before* the
other callbacks run, so ReduceLROnPlateau, EarlyStopping, :class:`BestWeights`,
TensorBoard and the history CSV all see them.

Determinism: ``fit`` calls ``cxrlib.runtime.set_seed(config.seed, config.deterministic)``
(Python/NumPy/TF seeds + ``tf.config.experimental.enable_op_determinism``) *before* the model
is built, so the same config gives the same numbers on CPU. Pass ``model_fn`` (a function
building the model) rather than a built model to get this; a built model is accepted too.

Distribution: ``config.distribute`` picks a ``tf.distribute`` strategy; the model is built and
compiled inside its scope. ``"mirrored"`` uses all GPUs, or all logical CPU devices when no
GPU exists (tests split the CPU into two logical devices, which must be configured before
TensorFlow initialises, i.e. in a fresh process). ``"multiworker"`` reads ``TF_CONFIG``
(without it, it runs as a single worker). The batch size of the datasets is the global batch.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from cxrlib import evaluation, losses, runtime
from cxrlib import transfer
from cxrlib.io import write_csv

import tensorflow as tf
from tensorflow import keras


@dataclass
class TrainConfig:
    """Training hyper-parameters (all JSON-serialisable; stored in each stage's config.json).

    Attributes:
        epochs: epochs of the default single phase (ignored when ``phases`` is given).
        lr: base learning rate.
        optimizer: ``"adam"`` or ``"sgd"`` (SGD with ``momentum``, Nesterov off).
        momentum: SGD momentum.
        weight_decay: L2-style decoupled weight decay of the optimizer (0 = off).
        lr_schedule: ``None``, ``"plateau"`` (ReduceLROnPlateau on ``monitor``, factor 0.5,
            patience ``plateau_patience``) or ``"cosine"`` (per phase, from the phase lr to 0).
        plateau_patience: epochs without improvement before the lr is halved.
        monitor: ``"val_loss"`` or ``"val_macro_f1"`` (early stopping, best checkpoint, plateau).
        early_stopping: patience in epochs (0 = off).
        class_weight: weight the loss by inverse class frequency of the training set
            (single-label tasks only).
        loss: ``"auto"`` (``weighted_bce`` for multi-label heads, categorical cross-entropy
            for single-label), ``"weighted_bce"`` (CheXNet, Rajpurkar et al. 2017: per finding,
            positives weighted by N_neg/N and negatives by N_pos/N of the training split; see
            :func:`cxrlib.losses.bce_class_weights`), ``"bce"`` (unweighted) or
            ``"categorical_crossentropy"``.
        seed: global seed.
        deterministic: enable TF op determinism.
        distribute: ``"default"``, ``"mirrored"`` or ``"multiworker"``.
        phases: freezing schedule, list of :class:`cxrlib.transfer.Phase` dicts
            (``{"epochs": 2, "trainable": "head", "lr": 1e-3}``); None = one phase, all trainable.
        bn: BatchNorm mode of the default phase (``"auto"``, ``"frozen"`` or ``"train"``;
            see :mod:`cxrlib.transfer`).
        tensorboard: write TensorBoard logs under ``out_dir/tensorboard``.
        verbose: Keras verbosity (1 = progress bar, 2 = one line per epoch, 0 = silent).
    """

    epochs: int = 5
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str | None = "plateau"
    plateau_patience: int = 2
    monitor: str = "val_loss"
    early_stopping: int = 5
    class_weight: bool = True
    loss: str = "auto"
    seed: int = 0
    deterministic: bool = True
    distribute: str = "default"
    phases: list | None = None
    bn: str = "auto"
    tensorboard: bool = True
    verbose: int = 1

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "TrainConfig":
        """Build from a dict, refusing unknown keys (typos in YAML configs fail loudly)."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; known: {sorted(known)}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.lr_schedule not in (None, "none", "plateau", "cosine"):
            raise ValueError(f"lr_schedule must be None, 'plateau' or 'cosine', got {self.lr_schedule!r}")
        if self.monitor not in ("val_loss", "val_macro_f1"):
            raise ValueError(f"monitor must be 'val_loss' or 'val_macro_f1', got {self.monitor!r}")
        if self.loss not in losses.LOSSES:
            raise ValueError(f"loss must be one of {', '.join(losses.LOSSES)}, got {self.loss!r}")
        if self.distribute not in ("default", "mirrored", "multiworker"):
            raise ValueError(f"distribute must be 'default', 'mirrored' or 'multiworker', got {self.distribute!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["phases"] = [p.to_dict() if hasattr(p, "to_dict") else dict(p) for p in (self.phases or [])] or None
        return d

    @property
    def mode(self) -> str:
        return "min" if self.monitor == "val_loss" else "max"


@dataclass
class TrainResult:
    """What :func:`fit` returns."""

    model: keras.Model
    history: pd.DataFrame  # one row per epoch (see ValidationMetrics for the columns)
    best_epoch: int  # 1-based epoch whose weights were restored
    best_value: float  # value of config.monitor at best_epoch
    phases: list[dict] = field(default_factory=list)  # set_trainable summaries per phase
    seconds: float = 0.0
    loss: dict = field(default_factory=dict)  # name (+ per-finding weights): record in config.json


def get_strategy(name: str = "default") -> tf.distribute.Strategy:
    """A ``tf.distribute`` strategy by name.

    Args:
        name: ``"default"`` (no distribution), ``"mirrored"`` (all GPUs; all logical CPU
            devices when there is no GPU) or ``"multiworker"`` (MultiWorkerMirroredStrategy,
            cluster from ``TF_CONFIG``).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown distribution strategy {name!r}; use default, mirrored or multiworker")


def make_optimizer(name: str, lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
    """Adam or SGD with momentum.

    Without weight decay the ``keras.optimizers.legacy`` classes (the same update rules): the
    Keras 2.11+ optimizers trace one update per variable, which on CPU doubled the CPU cost of a
    quick-demo fold's first epoch (compact DenseNet, 48 px, 192 images: 4.4 vs 2.1 CPU-s,
    ``benchmarks/bench_optimizer_trace.py``). Weight decay needs the new classes (decoupled
    decay, AdamW-style), so it keeps them.
    """
    if name not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}")
    if weight_decay:
        if name == "adam":
            return keras.optimizers.Adam(learning_rate=lr, weight_decay=weight_decay)
        return keras.optimizers.SGD(learning_rate=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return keras.optimizers.legacy.Adam(learning_rate=lr)
    return keras.optimizers.legacy.SGD(learning_rate=lr, momentum=momentum)


def _split_xy(data) -> tuple[Any, np.ndarray]:
    """(inputs, targets [N, K]) of an ``(x, y)`` tuple or an unshuffled (x, y) tf.data.Dataset."""
    if isinstance(data, tf.data.Dataset):
        ys = [y.numpy() for _, y in data]
        return data.map(lambda x, y: x), np.concatenate(ys, axis=0)
    x, y = data
    return x, np.asarray(y)


def predict(model: keras.Model, x, batch_size: int = 32) -> np.ndarray:
    """Model outputs [N, K] for an array or an (x, y)/x tf.data.Dataset (order preserved)."""
    if isinstance(x, tf.data.Dataset) and isinstance(x.element_spec, tuple):
        x = x.map(lambda a, b: a)
    return np.asarray(model.predict(x, batch_size=None if isinstance(x, tf.data.Dataset) else batch_size,
                                    verbose=0))


class ValidationMetrics(keras.callbacks.Callback):
    """Adds val_loss, val_accuracy, val_macro_f1, val_recall_<class> (+ val_macro_auroc) to logs.

    Args:
        val_data: ``(x, y)`` arrays or an unshuffled ``(x, y)`` tf.data.Dataset.
        classes: class (or finding) names in output order.
        multi_label: sigmoid head (threshold 0.5 per finding) instead of softmax (argmax).
    """

    def __init__(self, val_data, classes: Sequence[str], multi_label: bool = False):
        super().__init__()
        self.x, self.y = _split_xy(val_data)
        self.classes = list(classes)
        self.multi_label = multi_label
        self.last_prob: np.ndarray | None = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        prob = predict(self.model, self.x)
        self.last_prob = prob
        logs.update(evaluation.epoch_metrics(self.y, prob, self.classes, self.multi_label, prefix="val_"))


class BestWeights(keras.callbacks.Callback):
    """Keep the best weights (by ``monitor``) in memory, optionally save them, restore at the end.

    The best value persists across several ``fit`` calls (phases) of the same instance.

    Args:
        monitor: log key, e.g. ``"val_loss"`` or ``"val_macro_f1"``.
        mode: ``"min"`` or ``"max"``.
        path: optional ``.h5`` path to save the best model to (atomically) on improvement.
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "min", path: str | os.PathLike | None = None):
        super().__init__()
        self.monitor, self.mode, self.path = monitor, mode, path
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = 0
        self.best_weights = None

    def _better(self, v: float) -> bool:
        return v < self.best if self.mode == "min" else v > self.best

    def on_epoch_end(self, epoch, logs=None):
        v = (logs or {}).get(self.monitor)
        if v is None:
            raise KeyError(f"BestWeights: {self.monitor!r} not in epoch logs {sorted(logs or {})}")
        v = float(v)
        if not math.isnan(v) and (self.best_weights is None or self._better(v)):
            self.best, self.best_epoch = v, epoch + 1
            self.best_weights = self.model.get_weights()
            if self.path:
                from cxrlib.models import save_model
                save_model(self.model, self.path)

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class HistoryCSV(keras.callbacks.Callback):
    """Write the per-epoch history (all logs + lr, phase, seconds) to CSV after every epoch.

    Rewritten atomically each epoch, so a crash leaves the finished epochs readable.

    Args:
        path: CSV path (or None to only keep rows in memory).
        phase: phase index, updated by :func:`fit`.
    """

    def __init__(self, path: str | os.PathLike | None):
        super().__init__()
        self.path = Path(path) if path else None
        self.rows: list[dict] = []
        self.phase = 0
        self._t0 = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.time()
        # the rate used during this epoch (schedulers change it at epoch begin, plateau at end)
        self._lr = float(keras.backend.get_value(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, "phase": self.phase, "lr": self._lr,
               "seconds": round(time.time() - self._t0, 3)}
        row.update({k: float(v) for k, v in (logs or {}).items() if k != "lr"})
        self.rows.append(row)
        if self.path:
            write_csv(self.path, pd.DataFrame(self.rows))


def class_weights_from_targets(y: np.ndarray) -> dict[int, float]:
    """Inverse-frequency weights n / (K * n_k) from one-hot targets [N, K] (absent classes: 1)."""
    counts = np.asarray(y).sum(axis=0)
    n, k = counts.sum(), len(counts)
    return {i: float(n / (k * c)) if c > 0 else 1.0 for i, c in enumerate(counts)}


def _cosine(lr0: float, n_epochs: int, start_epoch: int):
    def schedule(epoch, lr):  # epoch is global (initial_epoch-based)
        t = (epoch - start_epoch) / max(n_epochs, 1)
        return float(lr0 * 0.5 * (1 + math.cos(math.pi * t)))
    return schedule


def fit(
    model_fn: Callable[[], keras.Model] | keras.Model,
    train_data,
    val_data,
    classes: Sequence[str],
    config: TrainConfig | Mapping | None = None,
    out_dir: str | os.PathLike | None = None,
    class_weight: Mapping[int, float] | None = None,
    multi_label: bool | None = None,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    bce_weights: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train a model phase by phase and restore its best weights.

    Args:
        model_fn: function building the (uncompiled) model, called after seeding and inside
            the distribution scope; or an already built model (then seeding happened earlier
            and only ``distribute="default"`` is allowed).
        train_data: a (shuffled, batched) ``(x, y)`` tf.data.Dataset or an ``(x, y)`` tuple
            of arrays.
        val_data: unshuffled ``(x, y)`` tf.data.Dataset or ``(x, y)`` arrays.
        classes: output names (for per-class recall columns).
        config: :class:`TrainConfig` or a dict of its fields.
        out_dir: if given: ``history.csv``, ``best.h5`` (best checkpoint) and
            ``tensorboard/`` are written there.
        class_weight: explicit ``{class index: weight}``; by default (``config.class_weight``)
            inverse frequencies of the training targets (single-label only).
        multi_label: sigmoid head; default: inferred from the model's head activation.
        extra_callbacks: more Keras callbacks (after the built-in ones).
        bce_weights: for ``loss`` ``weighted_bce``: :func:`cxrlib.losses.bce_class_weights` of
            the training split (e.g. from the manifest's findings); default: computed from
            ``train_data``'s targets (one pass over the training data).

    Returns:
        :class:`TrainResult` with the model (best weights restored) and the history table.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    cfg.validate()
    t_start = time.time()
    if callable(model_fn) and not isinstance(model_fn, keras.Model):
        runtime.set_seed(cfg.seed, cfg.deterministic)
        strategy = get_strategy(cfg.distribute)
        with strategy.scope():
            model = model_fn()
    else:
        if cfg.distribute != "default":
            raise ValueError("pass a model-building function (not a built model) to use "
                             f"distribute={cfg.distribute!r}: the model must be built in the strategy scope")
        model, strategy = model_fn, tf.distribute.get_strategy()
    if multi_label is None:
        multi_label = model.get_layer("head").activation is keras.activations.sigmoid

    if isinstance(train_data, tuple):
        x_tr, y_tr = train_data
        train_ds = tf.data.Dataset.from_tensor_slices((x_tr, y_tr)).shuffle(
            len(y_tr), seed=cfg.seed).batch(16)
    else:
        train_ds = train_data
    if class_weight is None and cfg.class_weight and not multi_label:
        _, y_all = _split_xy(train_ds)
        class_weight = class_weights_from_targets(y_all)
    if multi_label:
        class_weight = None  # keras class_weight is single-label only

    out = Path(out_dir) if out_dir else None
    val_cb = ValidationMetrics(val_data, classes, multi_label)
    best_cb = BestWeights(cfg.monitor, cfg.mode, out / "best.h5" if out else None)
    hist_cb = HistoryCSV(out / "history.csv" if out else None)
    phases = transfer.parse_phases(cfg.phases, cfg.epochs, cfg.lr, cfg.bn)

    y_train = None
    if losses.resolve_loss(cfg.loss, multi_label) == "weighted_bce" and bce_weights is None:
        y_train = _split_xy(train_ds)[1]
    loss, loss_info = losses.make_loss(cfg.loss, multi_label, y_train, classes, bce_weights)
    metrics = [keras.metrics.BinaryAccuracy(name="accuracy")] if multi_label else ["accuracy"]
    epoch0, summaries = 0, []
    for i, phase in enumerate(phases):
        if phase.epochs <= 0:
            continue
        hist_cb.phase = i
        summary = transfer.set_trainable(model, phase.trainable, phase.bn)
        summary.update(phase=i, epochs=phase.epochs, lr=phase.lr)
        summaries.append(summary)
        with strategy.scope():
            model.compile(optimizer=make_optimizer(cfg.optimizer, phase.lr, cfg.momentum, cfg.weight_decay),
                          loss=loss, metrics=metrics)
        callbacks: list = [val_cb]
        if cfg.lr_schedule == "plateau":
            callbacks.append(keras.callbacks.ReduceLROnPlateau(
                monitor=cfg.monitor, mode=cfg.mode, factor=0.5, patience=cfg.plateau_patience,
                min_lr=1e-7, verbose=0))
        elif cfg.lr_schedule == "cosine":
            callbacks.append(keras.callbacks.LearningRateScheduler(_cosine(phase.lr, phase.epochs, epoch0)))
        if cfg.early_stopping:
            callbacks.append(keras.callbacks.EarlyStopping(monitor=cfg.monitor, mode=cfg.mode,
                                                           patience=cfg.early_stopping))
        callbacks += [best_cb, hist_cb]
        if cfg.tensorboard and out:
            callbacks.append(keras.callbacks.TensorBoard(str(out / "tensorboard"), write_graph=False,
                                                         profile_batch=0))
        callbacks += list(extra_callbacks)
        model.fit(train_ds, epochs=epoch0 + phase.epochs, initial_epoch=epoch0,
                  class_weight=class_weight, callbacks=callbacks, verbose=cfg.verbose)
        epoch0 = len(hist_cb.rows)
        if cfg.verbose and hist_cb.rows:
            last = hist_cb.rows[-1]
            print(f"phase {i} done: epoch {last['epoch']} val_loss={last.get('val_loss', float('nan')):.4f} "
                  f"val_macro_f1={last.get('val_macro_f1', float('nan')):.4f}")
    return TrainResult(model=model, history=pd.DataFrame(hist_cb.rows), best_epoch=best_cb.best_epoch,
                       best_value=float(best_cb.best), phases=summaries, seconds=time.time() - t_start,
                       loss=loss_info)
