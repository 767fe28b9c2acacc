"""Training losses: CheXNet's weighted binary cross-entropy for the NIH 14-finding source stage.

NIH ChestX-ray14 (Wang et al. 2017) is very imbalanced: in the official label file
(``Data_Entry_2017_v2020.csv``, 112,120 images) Hernia is positive in 227 images (0.20 %),
Pneumonia in 1,431 (1.28 %, the second rarest), Infiltration in 19,894 (17.74 %).
With a plain binary cross-entropy a network lowers its loss most by predicting "absent" for the
rare findings. CheXNet (Rajpurkar et al. 2017, arXiv 1711.05225) weights, per finding k, the
positive term by ``w_pos = N_neg / N`` and the negative term by ``w_neg = N_pos / N`` (counts
of the training split)::

    L(y, p) = -1/K sum_k [ w_pos_k y_k log p_k + w_neg_k (1 - y_k) log(1 - p_k) ]

so positives and negatives of every finding contribute equally in expectation. Paper B's twice
transfer (Bassi & Attux 2020) keeps the NIH ``Pneumonia`` neuron (output neuron keeping); with
this loss that neuron is trained on its positives instead of collapsing to "absent".

API: ``bce_class_weights(y, classes) -> dict`` (JSON-able, for ``config.json``),
``bce_class_weights_from_manifest(train_df, classes)``,
``WeightedBinaryCrossentropy(pos_weights, neg_weights)``, ``make_loss(name, multi_label, ...)``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import tensorflow as tf
from tensorflow import keras

LOSSES: tuple[str, ...] = ("auto", "weighted_bce", "bce", "categorical_crossentropy")


def bce_class_weights(y: np.ndarray, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """CheXNet's per-finding weights from multi-hot training targets.

    Args:
        y: ``[N, K]`` multi-hot targets of the *training* split (0/1).
        classes: finding names in output order (default ``output_<k>``).

    Returns:
        ``{"n": N, "classes": [...], "positives": [N_pos], "prevalence": [N_pos/N],
        "pos_weight": [N_neg/N], "neg_weight": [N_pos/N], "no_positives": [names]}``.
        A finding without any positive gets ``neg_weight`` 0 (its neuron is then not trained;
        listed in ``no_positives`` so the stage can report it).
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or len(y) == 0:
        raise ValueError(f"targets must be a non-empty [N, K] matrix, got shape {y.shape}")
    n, k = y.shape
    names = list(classes) if classes is not None else [f"output_{i}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for {k} target columns")
    pos = y.sum(axis=0)
    return {
        "n": int(n), "classes": names, "positives": [int(v) for v in pos],
        "prevalence": [float(v) for v in pos / n],
        "pos_weight": [float(v) for v in (n - pos) / n],
        "neg_weight": [float(v) for v in pos / n],
        "no_positives": [c for c, v in zip(names, pos) if v == 0],
    }


def bce_class_weights_from_manifest(df, classes: Sequence[str]) -> dict[str, Any]:
    """:func:`bce_class_weights` of a manifest's ``findings`` (the training split's rows),
    without reading any image (what a source stage passes to ``training.fit(bce_weights=...)``).

    Args:
        df: manifest rows of the training split (``findings``: ``|``-separated NIH findings).
        classes: the head's findings in output order (e.g. ``NIH_FINDINGS``).
    """
    from cxrlib.data.pipeline import encode_targets

    return bce_class_weights(encode_targets(df, classes, multi_label=True, unknown="ignore"), classes)


class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy with a positive and a negative weight per output (sigmoid heads).

    Probabilities are clipped to [1e-7, 1 - 1e-7] as Keras' ``BinaryCrossentropy`` does, and
    the per-output terms are averaged over outputs (``[B, K] -> [B]``).

    Args:
        pos_weights, neg_weights: ``[K]`` (e.g. ``bce_class_weights(y)["pos_weight"]``).
    """

    def __init__(self, pos_weights: Sequence[float], neg_weights: Sequence[float],
                 name: str = "weighted_bce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.pos_weights = [float(v) for v in pos_weights]
        self.neg_weights = [float(v) for v in neg_weights]
        if len(self.pos_weights) != len(self.neg_weights):
            raise ValueError("pos_weights and neg_weights differ in length")

    def call(self, y_true, y_pred):
        y = tf.cast(y_true, y_pred.dtype)  # [B, K]
        eps = keras.backend.epsilon()
        p = tf.clip_by_value(y_pred, eps, 1.0 - eps)
        w_pos = tf.constant(self.pos_weights, dtype=y_pred.dtype)  # [K]
        w_neg = tf.constant(self.neg_weights, dtype=y_pred.dtype)
        terms = w_pos * y * tf.math.log(p) + w_neg * (1.0 - y) * tf.math.log(1.0 - p)  # [B, K]
        return -tf.reduce_mean(terms, axis=-1)  # [B]

    def get_config(self):
        return {**super().get_config(), "pos_weights": self.pos_weights, "neg_weights": self.neg_weights}


def resolve_loss(name: str, multi_label: bool) -> str:
    """The concrete loss for ``name`` (``auto`` -> ``weighted_bce`` / ``categorical_crossentropy``)."""
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {name!r}")
    if name == "auto":
        return "weighted_bce" if multi_label else "categorical_crossentropy"
    if multi_label and name == "categorical_crossentropy":
        raise ValueError("a sigmoid (multi-label) head needs loss 'weighted_bce' or 'bce'")
    if not multi_label and name in ("weighted_bce", "bce"):
        raise ValueError(f"loss {name!r} is for multi-label (sigmoid) heads; single-label stages "
                         "use 'categorical_crossentropy' (class imbalance: train.class_weight)")
    return name


def make_loss(name: str, multi_label: bool, y_train: np.ndarray | None = None,
              classes: Sequence[str] | None = None,
              weights: dict[str, Any] | None = None) -> tuple[keras.losses.Loss, dict[str, Any]]:
    """(Keras loss, record for ``config.json``) for a stage.

    Args:
        name: one of :data:`LOSSES`.
        multi_label: sigmoid head.
        y_train: training targets ``[N, K]`` (for ``weighted_bce`` when ``weights`` is None).
        classes: output names.
        weights: precomputed :func:`bce_class_weights` (e.g. from the manifest, which avoids
            reading the images to get the targets).
    """
    concrete = resolve_loss(name, multi_label)
    if concrete == "categorical_crossentropy":
        return keras.losses.CategoricalCrossentropy(), {"name": concrete}
    if concrete == "bce":
        return keras.losses.BinaryCrossentropy(), {"name": concrete}
    if weights is None:
        if y_train is None:
            raise ValueError("weighted_bce needs the training targets or precomputed weights")
        weights = bce_class_weights(y_train, classes)
    return (WeightedBinaryCrossentropy(weights["pos_weight"], weights["neg_weight"]),
            {"name": concrete, **weights})
