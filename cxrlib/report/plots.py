"""Figures of the notebooks (seaborn / matplotlib); each function returns a Figure.

Kept here, not in the notebooks, so tests reach them and the notebooks stay thin.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns


def class_balance(df: pd.DataFrame, classes: Sequence[str], by: str | None = None, title: str = ""):
    """Images per class, one bar group per value of ``by`` (``fold`` or ``split``) if given.

    Args:
        df: manifest.
        classes: class order.
        by: a column to split bars by, or None.
        title: axes title.
    """
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    data = df.assign(label=pd.Categorical(df["label"], categories=list(classes)))
    if by and by in df.columns:
        data = data.assign(**{by: data[by].astype(str)})
        sns.countplot(data=data, x="label", hue=by, ax=ax, palette="crest")
        ax.legend(title=by, fontsize=8, ncol=2)
    else:
        sns.countplot(data=data, x="label", ax=ax, color="#4c72b0")
    ax.set_xlabel("")
    ax.set_ylabel("images")
    ax.set_title(title or "images per class")
    fig.tight_layout()
    return fig


def sample_grid(images: np.ndarray, labels: Sequence[str], masks: np.ndarray | None = None,
                ncols: int = 6, title: str = ""):
    """A grid of images [N, H, W, C] (0..255) with their labels; mask outlines in red.

    Args:
        images: images to show, raw 0..255 floats or uint8.
        labels: one caption per image.
        masks: optional [N, H, W] masks (> 0 inside the lesion).
        ncols: columns of the grid.
        title: figure title.
    """
    n = len(images)
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.9 * ncols, 2.05 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes.ravel()[i]
        img = np.asarray(images[i], dtype=np.float32)
        ax.imshow(img[..., 0] if img.ndim == 3 else img, cmap="gray", vmin=0, vmax=255)
        if masks is not None and masks[i] is not None and np.any(masks[i] > 0):
            ax.contour(np.asarray(masks[i]) > 0, levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(str(labels[i]), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrices(matrices: Mapping[str, np.ndarray], classes: Sequence[str], normalize: bool = True):
    """One heatmap per named confusion matrix (rows true, columns predicted).

    Args:
        matrices: {title: [K, K] counts}.
        classes: class names in matrix order.
        normalize: show row-normalised recall, with counts in the annotation.
    """
    n = len(matrices)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 0.4, 3.4), squeeze=False)
    for ax, (title, cm) in zip(axes[0], matrices.items()):
        cm = np.asarray(cm, dtype=float)
        rows = cm.sum(axis=1, keepdims=True)
        shown = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0) if normalize else cm
        annot = np.array([[f"{int(c)}\n{s:.0%}" if normalize else f"{int(c)}" for c, s in zip(rc, rs)]
                          for rc, rs in zip(cm, shown)])
        sns.heatmap(shown, annot=annot, fmt="", cmap="Blues", vmin=0, vmax=1 if normalize else None,
                    cbar=False, xticklabels=classes, yticklabels=classes, ax=ax, annot_kws={"fontsize": 7})
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def roc_curves(predictions: Mapping[str, pd.DataFrame], classes: Sequence[str], positive: str):
    """One-vs-rest ROC of class ``positive`` for several strategies (scikit-learn roc_curve).

    Args:
        predictions: {strategy: predictions table with ``label`` and ``prob_<class>``}.
        classes: class names.
        positive: the class scored (``covid19``).
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for name, p in predictions.items():
        y = (p["label"] == positive).astype(int).to_numpy()
        if y.min() == y.max():
            continue
        s = p[f"prob_{positive}"].to_numpy(dtype=float)
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, s):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="gray", lw=0.8)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(f"ROC, {positive} vs rest")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def learning_curves(history: pd.DataFrame, title: str = ""):
    """Two panels from a ``history.csv``: losses, and validation accuracy / macro-F1 per epoch.

    Epochs of different freezing phases (``phase`` column) are shaded alternately.

    Args:
        history: one row per epoch (cxrlib.training's history.csv).
        title: figure title.
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
    for ax, cols in zip(axes, (("loss", "val_loss"), ("val_accuracy", "val_macro_f1"))):
        cols = [c for c in cols if c in history.columns]
        if cols:
            tidy = history.melt(id_vars=["epoch"], value_vars=cols, var_name="curve", value_name="value")
            sns.lineplot(data=tidy, x="epoch", y="value", hue="curve", marker="o", ax=ax)
        if "phase" in history.columns:
            for i, (_, g) in enumerate(history.groupby("phase", sort=False)):
                if i % 2:
                    ax.axvspan(g["epoch"].min() - 0.5, g["epoch"].max() + 0.5, color="gray", alpha=0.12)
        ax.set_xlabel("epoch")
    axes[1].set_ylim(0, 1.02)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def per_class_bars(table: pd.DataFrame, value: str, title: str = "", ref: float | None = None):
    """Horizontal bars of ``table[value]`` per ``table['class']`` (e.g. per-finding AUROC)."""
    t = table.sort_values(value, ascending=True)
    fig, ax = plt.subplots(figsize=(5.5, 0.28 * len(t) + 1.2))
    sns.barplot(data=t, y="class", x=value, ax=ax, color="#55a868", orient="h")
    if ref is not None:
        ax.axvline(ref, ls="--", c="gray", lw=0.8)
    ax.set_ylabel("")
    ax.set_title(title or value)
    fig.tight_layout()
    return fig


def strategy_points(metrics: pd.DataFrame, metric: str, title: str = ""):
    """Per-fold values of ``metric`` per strategy (points) with mean ± sd (bars).

    Args:
        metrics: tidy table with strategy, fold, metric, value (``results/metrics.csv``).
        metric: which metric.
        title: axes title.
    """
    d = metrics[metrics["metric"] == metric]
    fig, ax = plt.subplots(figsize=(5.2, 3.3))
    sns.pointplot(data=d, x="strategy", y="value", errorbar="sd", capsize=0.15, ax=ax, color="black",
                  linestyle="none")
    sns.stripplot(data=d, x="strategy", y="value", ax=ax, alpha=0.6, hue="strategy", legend=False)
    ax.set_ylabel(metric)
    ax.set_xlabel("")
    ax.set_title(title or f"{metric}: folds (dots), mean ± sd")
    fig.tight_layout()
    return fig


def published_vs_run(comparison: pd.DataFrame):
    """Bars: each paper claim's published value next to this run's (error bars = std)."""
    rows = []
    for r in comparison.to_dict("records"):
        label = f"{r['paper']}\n{r['metric']} ({r['strategy']})"
        rows.append({"claim": label, "source": "published", "value": r["published"],
                     "std": r["published_std"]})
        rows.append({"claim": label, "source": "this run", "value": r["this_run"], "std": r["this_run_std"]})
    d = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(1.9 * max(len(comparison), 1) + 2.5, 3.4))
    sns.barplot(data=d, x="claim", y="value", hue="source", ax=ax, palette=["#8c8c8c", "#4c72b0"])
    for patch_group, (_, g) in zip(ax.containers, d.groupby("source", sort=False)):
        xs = [p.get_x() + p.get_width() / 2 for p in patch_group]
        ax.errorbar(xs, g["value"], yerr=g["std"].fillna(0), fmt="none", c="k", capsize=3, lw=0.8)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("")
    ax.set_title("published (paper's data) vs this run (different data)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def heatmap_grid(images: np.ndarray, maps: Mapping[str, np.ndarray], labels: Sequence[str],
                 masks: np.ndarray | None = None):
    """Rows = images; first column the image, then one overlay per named heatmap set.

    Args:
        images: [N, H, W] grayscale 0..255.
        maps: {column title: [N, H, W] heatmaps in [0, 1]}.
        labels: true class per image (row titles).
        masks: optional [N, H, W] bool lesion masks (red outline).
    """
    n, ncols = len(images), 1 + len(maps)
    fig, axes = plt.subplots(n, ncols, figsize=(1.9 * ncols, 1.95 * n), squeeze=False)
    for i in range(n):
        for j in range(ncols):
            ax = axes[i, j]
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
            if j:
                title, m = list(maps.items())[j - 1]
                ax.imshow(m[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
                if i == 0:
                    ax.set_title(title, fontsize=7)
            elif i == 0:
                ax.set_title("image", fontsize=7)
            if masks is not None and np.any(masks[i]):
                ax.contour(masks[i], levels=[0.5], colors="red", linewidths=0.7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(str(labels[i]), fontsize=7)
    fig.tight_layout()
    return fig
