"""Score heatmaps against ground truth: lesion masks (phantoms) and expert boxes (NIH).

None of the papers' toolkits does this, so it is written here; the metrics use scikit-learn
and SciPy where they exist.

API (stable):

- ``mass_inside(heatmap, mask) -> float``: fraction of the *positive* relevance inside the mask
  (1.0 = all evidence on the lesion; the mask's area fraction is what a uniform map gets).
- ``pointing_game(heatmap, mask, tolerance=0) -> bool``: is the heatmap's maximum inside the mask
  (or within ``tolerance`` pixels of it)?
- ``heatmap_auc(heatmap, mask) -> float``: ROC-AUC of the heatmap values as a pixel detector of
  the mask (``sklearn.metrics.roc_auc_score``; 0.5 = chance).
- ``box_mask(boxes, stored_shape, image_size, frame_shape=None, resize_mode='pad')``: rasterise
  boxes ``(x, y, w, h)`` given in a frame (the NIH 1024x1024 frame, or the stored image) into
  the model's input grid.
- ``nih_box_masks(boxes, paths, stored_shapes, image_size)``: masks for the rows of
  ``cxrlib.data.adapters.nih.load_boxes`` (several boxes of one image are merged per finding).
- ``score_against_boxes(maps, paths, boxes, root, image_size, method)``: the same tidy table
  for NIH images against ``load_boxes`` (class = boxed finding).
- ``load_masks(df, root, image_size, resize_mode="pad") -> bool [N, H, W]``: phantom lesion
  masks (``mask_path`` column) decoded and resized exactly like the images
  (``cxrlib.data.pipeline.load_images``).
- ``score_heatmaps(maps, masks, paths, method, classes=None, ...) -> DataFrame``: tidy table, one
  row per image x metric: ``path, model, method, class, metric, value, mask_fraction``.
- ``summarize_scores(scores) -> DataFrame``: mean, std, n (and the uniform-map baseline of
  ``mass_inside``) per model, method, class and metric.
- ``score_heatmap_set(heatmaps, masks, paths, classes=None)``: the same table for every
  ``(model, method)`` of ``cxrlib.explain.batch.explain_models``.
- ``localisation_summary(scores)``: mean, std, 95 % interval half-width, chance and
  mean / chance per model, method, metric.
- ``lands(mass_x_chance, pointing_game) -> bool``: the landing criterion itself.
- ``landing_table(summary, accuracy=None)``: per model and method, does the heatmap *land*
  (mass inside at least ``LANDS_MASS`` x chance and pointing game at least ``LANDS_POINTING``),
  with the mass's 95 % interval in x chance and whether the interval clears the bar.

Heatmaps are taken as given: signed LRP relevance or [0, 1] Grad-CAM maps; only the positive
part counts as evidence for the explained class in ``mass_inside``. An all-zero map has no
evidence: ``mass_inside`` and ``heatmap_auc`` are NaN for it and it counts as a pointing-game
miss; ``score_heatmaps`` keeps such rows (value NaN) so ``summarize_scores`` reports how many.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

METRICS: tuple[str, ...] = ("mass_inside", "pointing_game", "auc")
# A heatmap "lands" on the lesions (issue 11): at least twice the chance mass inside the masks
# and the hottest pixel inside on at least half of the images.
LANDS_MASS = 2.0
LANDS_POINTING = 0.5


def _pair(heatmap: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    heatmap = np.asarray(heatmap, dtype=np.float64)
    mask = np.asarray(mask).astype(bool)
    if heatmap.ndim == 3 and heatmap.shape[-1] == 1:
        heatmap = heatmap[..., 0]
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if heatmap.shape != mask.shape:
        raise ValueError(f"heatmap shape {heatmap.shape} differs from mask shape {mask.shape}")
    if not np.isfinite(heatmap).all():
        raise ValueError("heatmap contains NaN or infinite values")
    return heatmap, mask


def mass_inside(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of positive relevance inside ``mask`` (NaN for a map with no positive value).

    Args:
        heatmap: [H, W] relevance / CAM.
        mask: [H, W] boolean region (lesion mask, box, border, text box).
    """
    heatmap, mask = _pair(heatmap, mask)
    pos = np.clip(heatmap, 0.0, None)  # [H, W] positive evidence
    total = pos.sum()
    if total <= 0:
        return float("nan")
    return float(pos[mask].sum() / total)


def pointing_game(heatmap: np.ndarray, mask: np.ndarray, tolerance: float = 0) -> bool:
    """Hit when the heatmap maximum lies in the mask or within ``tolerance`` pixels of it.

    Ties (several pixels at the maximum): a hit if any of them qualifies. A map with no positive
    value (nothing to point at) is a miss; an empty mask is always a miss.

    Args:
        heatmap: [H, W].
        mask: [H, W] boolean.
        tolerance: distance in pixels (Euclidean, pixel centres) allowed outside the mask; the
            original pointing game (Zhang et al. 2016) used 15 px at 224 px input.
    """
    from scipy.ndimage import distance_transform_edt

    heatmap, mask = _pair(heatmap, mask)
    if not mask.any() or heatmap.max() <= 0:
        return False
    peaks = heatmap == heatmap.max()  # [H, W]
    if tolerance > 0:
        dist = distance_transform_edt(~mask)  # [H, W] distance to the nearest mask pixel
        return bool((dist[peaks] <= tolerance).any())
    return bool(mask[peaks].any())


def heatmap_auc(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """ROC-AUC of heatmap values separating mask pixels from the rest (NaN if undefined).

    Args:
        heatmap: [H, W].
        mask: [H, W] boolean; AUC is undefined (NaN) when the mask is empty or covers the image,
            or when the heatmap is constant.
    """
    from sklearn.metrics import roc_auc_score

    heatmap, mask = _pair(heatmap, mask)
    if mask.all() or not mask.any() or np.ptp(heatmap) == 0:
        return float("nan")
    return float(roc_auc_score(mask.ravel(), heatmap.ravel()))


def box_mask(boxes: Iterable[Sequence[float]], stored_shape: tuple[int, int], image_size: int | tuple[int, int],
             frame_shape: tuple[int, int] | None = None, resize_mode: str = "pad") -> np.ndarray:
    """Rasterise boxes into the model's input grid, with the pipeline's resize geometry.

    A pixel belongs to the box when its centre lies inside it. When the stored image has the
    input's aspect ratio (NIH and phantoms are square) the transform is a pure scaling, done
    exactly; otherwise the box is drawn on the stored frame and sent through the pipeline's own
    ``cxrlib.data.pipeline.resize_image`` (pad/crop), then thresholded at one half.

    Args:
        boxes: ``(x, y, w, h)`` per box, in ``frame_shape`` pixels (x = column, y = row).
        stored_shape: (height, width) of the image file.
        image_size: model input size (int for square, or (height, width)).
        frame_shape: (height, width) of the frame the boxes are given in (NIH: (1024, 1024));
            None = the stored image itself (e.g. phantom ``text_box``).
        resize_mode: the pipeline's ``pad``, ``crop`` or ``stretch`` used for the images.

    Returns:
        bool [H, W] mask (union of the boxes).
    """
    out_h, out_w = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    sh, sw = (int(v) for v in stored_shape)
    fh, fw = frame_shape if frame_shape is not None else stored_shape
    boxes = [tuple(float(v) for v in b) for b in boxes]
    if resize_mode == "stretch" or sh * out_w == sw * out_h:
        # frame -> stored image -> input grid: independent scalings of columns and rows
        return _rasterise(boxes, (out_h, out_w), out_w / fw, out_h / fh)
    import tensorflow as tf

    from cxrlib.data.pipeline import resize_image

    stored = _rasterise(boxes, (sh, sw), sw / fw, sh / fh).astype(np.float32)  # [sh, sw]
    out = resize_image(tf.constant(stored[..., None] * 255.0), (out_h, out_w), resize_mode)
    return out.numpy()[..., 0] > 127.5


def _rasterise(boxes, shape: tuple[int, int], sx: float, sy: float) -> np.ndarray:
    """Union of scaled boxes on a grid of ``shape``; pixel centres decide membership."""
    rows = (np.arange(shape[0]) + 0.5)[:, None]  # [H, 1] pixel centres
    cols = (np.arange(shape[1]) + 0.5)[None, :]  # [1, W]
    mask = np.zeros(shape, dtype=bool)
    for x, y, w, h in boxes:
        mask |= (cols >= x * sx) & (cols <= (x + w) * sx) & (rows >= y * sy) & (rows <= (y + h) * sy)
    return mask


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    """Parse a manifest ``text_box`` cell ``"x,y,w,h"`` (empty -> None).

    Raises:
        ValueError: the cell is not four numbers.
    """
    text = str(text).strip()
    if not text:
        return None
    parts = text.split(",")
    if len(parts) != 4:
        raise ValueError(f"text_box {text!r} is not 'x,y,w,h'")
    return tuple(float(p) for p in parts)  # type: ignore[return-value]


def nih_box_masks(boxes: pd.DataFrame, paths: Sequence[str], stored_shapes: Sequence[tuple[int, int]],
                  image_size: int, resize_mode: str = "pad") -> dict[tuple[str, str], np.ndarray]:
    """Masks of the NIH expert boxes for the given images, keyed by (path, finding).

    Args:
        boxes: ``cxrlib.data.adapters.nih.load_boxes(root)`` (path, finding, x, y, w, h,
            frame_width, frame_height; coordinates in the 1024 frame).
        paths: manifest paths of the images being scored (matched on the ``path`` column).
        stored_shapes: (height, width) of each image file (256x256 in the shared sample).
        image_size: model input size.
        resize_mode: the pipeline's resize mode used for the images.
    """
    need = {"path", "finding", "x", "y", "w", "h"}
    missing = need - set(boxes.columns)
    if missing:
        raise ValueError(f"box table lacks columns {sorted(missing)}")
    shapes = dict(zip(paths, stored_shapes))
    out: dict[tuple[str, str], np.ndarray] = {}
    sel = boxes[boxes["path"].isin(shapes)]
    for (path, finding), grp in sel.groupby(["path", "finding"], sort=False):
        fw = float(grp["frame_width"].iloc[0]) if "frame_width" in grp else 1024.0
        fh = float(grp["frame_height"].iloc[0]) if "frame_height" in grp else 1024.0
        xywh = grp[["x", "y", "w", "h"]].astype(float).to_numpy()
        out[(path, finding)] = box_mask(xywh, shapes[path], image_size, frame_shape=(fh, fw),
                                         resize_mode=resize_mode)
    return out


def score_against_boxes(maps: np.ndarray, paths: Sequence[str], boxes: pd.DataFrame, root, image_size: int,
                        method: str, model: str = "", resize_mode: str = "pad", tolerance: float = 0) -> pd.DataFrame:
    """Score heatmaps of NIH images against the expert boxes (one row per image x finding x metric).

    Images without a box are skipped and counted in ``df.attrs["n_without_box"]`` (the 60 boxes
    of the shared sample cover few images; nothing is dropped silently).

    Args:
        maps: [N, H, W] heatmaps of the images ``paths`` (manifest paths relative to ``root``).
        paths: [N] manifest paths.
        boxes: ``cxrlib.data.adapters.nih.load_boxes(root)``.
        root: NIH data root (stored image sizes are read from the files).
        image_size: model input size.
        method, model: names recorded in the table.
        resize_mode: the pipeline's resize mode used for the images.
        tolerance: pointing-game tolerance in pixels.

    Returns:
        :func:`score_heatmaps` table; ``class`` is the boxed finding.
    """
    from PIL import Image

    from pathlib import Path

    shapes = []
    for p in paths:
        with Image.open(Path(root) / p) as im:
            shapes.append((im.height, im.width))
    masks = nih_box_masks(boxes, list(paths), shapes, image_size, resize_mode=resize_mode)
    where = {p: i for i, p in enumerate(paths)}
    keys = list(masks)
    out = score_heatmaps(np.asarray([maps[where[p]] for p, _ in keys]).reshape(len(keys), image_size, image_size),
                         np.asarray([masks[k] for k in keys]).reshape(len(keys), image_size, image_size),
                         [p for p, _ in keys], method, classes=[f for _, f in keys], model=model,
                         tolerance=tolerance)
    out.attrs["n_without_box"] = len(set(paths) - {p for p, _ in keys})
    return out


def load_masks(df: pd.DataFrame, root, image_size: int, resize_mode: str = "pad") -> np.ndarray:
    """Phantom lesion masks resized exactly like the images, as bool [N, H, W].

    Args:
        df: manifest rows with a non-empty ``mask_path`` (relative to ``root``).
        root: data root.
        image_size: model input size.
        resize_mode: the pipeline's ``'pad'`` or ``'crop'`` (same as used for the images).

    Raises:
        ValueError: naming the manifest rows without a mask.
    """
    from cxrlib.data.pipeline import load_images

    if "mask_path" not in df.columns:
        raise ValueError("manifest has no 'mask_path' column (phantom manifests do)")
    empty = df.index[df["mask_path"].astype(str).str.strip() == ""].tolist()
    if empty:
        raise ValueError(f"{len(empty)} row(s) have an empty mask_path (rows {empty[:10]})")
    as_images = df.assign(path=df["mask_path"])
    arr = load_images(as_images, root, image_size, channels=1, backbone=None, resize_mode=resize_mode)
    return np.asarray(arr)[..., 0] > 127.5  # [N, H, W] 0/255 mask -> bool (bilinear edges split at half)


def score_heatmaps(maps: np.ndarray, masks: np.ndarray, paths: Sequence[str], method: str,
                   classes: Sequence[str] | None = None, model: str = "", tolerance: float = 0,
                   metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Score a batch of heatmaps against their masks; tidy output, one row per image x metric.

    Args:
        maps: [N, H, W] heatmaps.
        masks: [N, H, W] bool ground-truth regions.
        paths: [N] image paths (manifest ``path``).
        method: method name (``gradcam``, ``lrp.epsilon``, ...).
        classes: [N] explained class (or ground-truth class) per image; '' when None.
        model: model name recorded in the table.
        tolerance: pointing-game tolerance in pixels.
        metrics: subset of :data:`METRICS`.

    Returns:
        DataFrame[path, model, method, class, metric, value, mask_fraction]; ``mask_fraction`` is
        the mask's area share, i.e. the ``mass_inside`` of a uniform map (the chance level).
    """
    maps, masks = np.asarray(maps), np.asarray(masks)
    if len(maps) != len(masks) or len(maps) != len(paths):
        raise ValueError(f"{len(maps)} maps, {len(masks)} masks and {len(paths)} paths differ in number")
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; expected some of {METRICS}")
    classes = [""] * len(paths) if classes is None else list(classes)
    funcs = {"mass_inside": mass_inside, "auc": heatmap_auc,
             "pointing_game": lambda h, m: float(pointing_game(h, m, tolerance))}
    rows = []
    for heat, mask, path, cls in zip(maps, masks, paths, classes):
        frac = float(np.asarray(mask, dtype=bool).mean())
        for metric in metrics:
            rows.append({"path": path, "model": model, "method": method, "class": cls,
                         "metric": metric, "value": funcs[metric](heat, mask), "mask_fraction": frac})
    return pd.DataFrame(rows, columns=["path", "model", "method", "class", "metric", "value", "mask_fraction"])


def summarize_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and counts per model, method, class and metric.

    ``n`` counts scored images, ``n_undefined`` those whose value is NaN (no positive evidence,
    or undefined AUC): they are reported, never silently dropped. ``chance`` is the mean mask
    fraction (uniform-map ``mass_inside``; for ``pointing_game`` the hit rate of a random point;
    0.5 for ``auc``).
    """
    keys = ["model", "method", "class", "metric"]
    g = scores.groupby(keys, sort=True, dropna=False)
    out = g["value"].agg(mean="mean", std="std", n="size").reset_index()
    out["n_undefined"] = g["value"].apply(lambda v: int(v.isna().sum())).to_numpy()
    chance = g["mask_fraction"].mean().to_numpy()
    out["chance"] = np.where(out["metric"] == "auc", 0.5, chance)
    return out


def score_heatmap_set(heatmaps, masks: np.ndarray, paths: Sequence[str], classes: Sequence[str] | None = None,
                      tolerance: float = 0) -> pd.DataFrame:
    """:func:`score_heatmaps` for every ``(model, method)`` of ``cxrlib.explain.batch.explain_models``.

    Args:
        heatmaps: ``{(model, method): Heatmaps}`` over the same images.
        masks: [N, H, W] bool ground truth of those images.
        paths: [N] image paths.
        classes: names of the model outputs; the ``class`` column is then the explained class.
        tolerance: pointing-game tolerance in pixels.
    """
    parts = []
    for (model, method), h in heatmaps.items():
        names = None if classes is None else [classes[i] for i in h.class_index]
        parts.append(score_heatmaps(h.maps, masks, paths, method, classes=names, model=model, tolerance=tolerance))
    return pd.concat(parts, ignore_index=True)


def localisation_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per model, method and metric: mean, its spread, n, chance and mean / chance.

    ``chance`` is what a uniform map scores (the mask's mean area share for ``mass_inside`` and
    ``pointing_game``, 0.5 for ``auc``); ``x_chance`` = mean / chance, the figure the issue's
    target "at least twice the chance mass" is read from. ``std`` is the spread over images and
    ``ci95`` the half-width of the mean's normal 95 % interval (1.96 std / sqrt(defined n)): with
    a dozen images a mean 2x chance can be luck, and ``ci95`` says how much. Undefined values
    (all-zero maps) are counted in ``n_undefined``.
    """
    keys = ["model", "method", "metric"]
    g = scores.groupby(keys, sort=True)
    out = g["value"].agg(mean="mean", std="std", n="size").reset_index()
    defined = g["value"].count().to_numpy()  # non-NaN values per group
    out["ci95"] = 1.96 * out["std"].to_numpy() / np.sqrt(np.maximum(defined, 1))
    out["n_undefined"] = g["value"].apply(lambda v: int(v.isna().sum())).to_numpy()
    out["chance"] = np.where(out["metric"] == "auc", 0.5, g["mask_fraction"].mean().to_numpy())
    out["x_chance"] = out["mean"] / out["chance"]
    return out


def lands(mass_x_chance: float, pointing_game: float, mass: float = LANDS_MASS,
          pointing: float = LANDS_POINTING) -> bool:
    """Does a heatmap land: at least ``mass`` x chance inside the lesions and a pointing game of at
    least ``pointing``? (False for NaN.)"""
    return bool(mass_x_chance >= mass and pointing_game >= pointing)


def landing_table(summary: pd.DataFrame, accuracy: dict[str, float] | None = None,
                  mass: float = LANDS_MASS, pointing: float = LANDS_POINTING) -> pd.DataFrame:
    """Per model and method of :func:`localisation_summary`: does the heatmap land on the lesions?

    Columns: ``model, method, accuracy`` (the model's test accuracy when given, so a reader sees
    which model is the best), ``n`` (scored images), ``mass_x_chance`` and ``mass_x_ci95`` (the
    mean mass inside over chance and its 95 % half-width in the same unit), ``pointing_game``,
    ``lands`` (``mass_x_chance >= mass`` and ``pointing_game >= pointing``) and ``clear``
    (lands with the lower end of the mass interval above ``mass`` too: not a matter of which
    images were drawn). Models in the order of ``accuracy`` (then the summary's), methods in the
    summary's order.
    """
    by = summary.set_index(["model", "method", "metric"])
    pairs = summary[["model", "method"]].drop_duplicates()
    rows = []
    for model, method in pairs.itertuples(index=False):
        m, p = by.loc[(model, method, "mass_inside")], by.loc[(model, method, "pointing_game")]
        x, ci = float(m["x_chance"]), float(m["ci95"] / m["chance"]) if m["chance"] else float("nan")
        rows.append({"model": model, "method": method,
                     "accuracy": (accuracy or {}).get(model, float("nan")), "n": int(m["n"]),
                     "mass_x_chance": x, "mass_x_ci95": ci, "pointing_game": float(p["mean"]),
                     "lands": lands(x, float(p["mean"]), mass, pointing),
                     "clear": lands(x - ci, float(p["mean"]), mass, pointing)})
    out = pd.DataFrame(rows, columns=["model", "method", "accuracy", "n", "mass_x_chance", "mass_x_ci95",
                                      "pointing_game", "lands", "clear"])
    order = {m: i for i, m in enumerate(dict.fromkeys(list(accuracy or {}) + out["model"].tolist()))}
    return out.sort_values("model", key=lambda c: c.map(order), kind="stable", ignore_index=True)
