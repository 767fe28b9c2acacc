"""Heatmaps over a manifest: arrays + PNG overlays, one folder per model and method.

API (stable):

- ``explain_manifest(df, root, model_path, out_dir, methods=("gradcam",), classes=None,
  image_size=64, channels=3, backbone="compact_densenet", resize_mode="pad", class_index=None,
  model_name=None, overlays=True, batch_size=8, overwrite=False) -> DataFrame``
  writes ``out_dir/<model_name>/<method>/<image stem>.npy`` (float32 [H, W]: Grad-CAM maps in
  [0, 1], LRP signed relevance), ``<image stem>.png`` (image | heatmap | overlay, colour bar)
  and ``heatmaps.csv`` (path, class_index, class, prob, npy, png) per folder. A tqdm progress
  bar counts images; finished images are kept (atomic writes) and skipped on a rerun unless
  ``overwrite``.
- ``explain_models(models, df, root, out_dir, methods, explainers=None, **kwargs)``: the same for
  several models, images loaded once, LRP (own process) overlapping Grad-CAM; returns
  ``{(model, method): Heatmaps}``.
- ``load_for_explaining(df, root, image_size, channels, backbone, resize_mode) -> (x, shown)``.
- ``save_overlay(image, heatmap, out_png, title="", signed=False)``: the three-panel figure.
- ``read_heatmaps(folder) -> (index DataFrame, maps [N, H, W])``: load a method folder back.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cxrlib.io import atomic_path, write_csv


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, arr)


def _to_rgb(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """uint8 [H, W, 3] colours of ``values`` [H, W] through a matplotlib colormap's lookup table."""
    from matplotlib import colormaps

    t = np.clip((np.asarray(values, np.float32) - vmin) / ((vmax - vmin) or 1.0), 0.0, 1.0)  # [H, W]
    lut = (colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)  # [256, 3]
    return lut[(t * 255).round().astype(np.int64)]


def save_overlay(image: np.ndarray, heatmap: np.ndarray, out_png: str | os.PathLike, title: str = "",
                 signed: bool = False, alpha: float = 0.45, panel: int = 192) -> Path:
    """Save image | heatmap | overlay side by side with a colour bar (atomic write).

    Drawn with NumPy and Pillow (colours from matplotlib's colormap tables): a matplotlib figure
    per image cost 0.26 CPU-s, which for the 300 overlays of the quick demo's heatmap notebooks
    was a fifth of the whole demo's CPU; this costs a few milliseconds.

    Args:
        image: [H, W] or [H, W, C] display image (raw 0..255 or any range; scaled for display).
        heatmap: [H, W] map (Grad-CAM [0, 1], or signed LRP relevance).
        out_png: destination PNG.
        title: caption line above the panels (e.g. path, class and probability).
        signed: symmetric blue-white-red colour scale around 0 (LRP), else ``jet`` from 0 to max.
        alpha: heatmap opacity in the overlay.
        panel: side of each panel in pixels (the maps are enlarged with nearest-neighbour
            sampling, so each model pixel stays a visible square).
    """
    from PIL import Image, ImageDraw

    img = np.asarray(image, dtype=np.float32)
    img = img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img
    if img.ndim == 3:
        img = img.mean(axis=-1)  # [H, W] gray for display
    span = float(np.ptp(img))
    img = (img - img.min()) / span if span > 0 else np.zeros_like(img)
    heat = np.asarray(heatmap, dtype=np.float32)
    if signed:
        lim = float(np.abs(heat).max()) or 1.0
        cmap, vmin, vmax = "bwr", -lim, lim
    else:
        cmap, vmin, vmax = "jet", 0.0, float(heat.max()) or 1.0
    gray = np.repeat((img * 255).round().astype(np.uint8)[..., None], 3, axis=-1)  # [H, W, 3]
    colour = _to_rgb(heat, cmap, vmin, vmax)  # [H, W, 3]
    blend = (gray * (1 - alpha) + colour * alpha).round().astype(np.uint8)
    bar = _to_rgb(np.linspace(vmax, vmin, panel)[:, None].repeat(12, axis=1), cmap, vmin, vmax)  # [panel, 12, 3]
    head, gap, label_w = 16, 6, 64
    canvas = Image.new("RGB", (3 * panel + 4 * gap + 12 + label_w, panel + 2 * head), "white")
    for i, arr in enumerate((gray, colour, blend)):
        canvas.paste(Image.fromarray(arr).resize((panel, panel), Image.NEAREST), (gap + i * (panel + gap), head))
    x_bar = 3 * (panel + gap) + gap
    canvas.paste(Image.fromarray(bar), (x_bar, head))
    draw = ImageDraw.Draw(canvas)
    for i, name in enumerate(("image", "heatmap", "overlay")):
        draw.text((gap + i * (panel + gap), head + panel + 2), name, fill="black")
    draw.text((x_bar + 14, head), f"{vmax:.3g}", fill="black")
    draw.text((x_bar + 14, head + panel - 10), f"{vmin:.3g}", fill="black")
    draw.text((x_bar + 14, head + panel // 2 - 5), "relevance" if signed else "Grad-CAM", fill="black")
    if title:
        draw.text((gap, 2), title, fill="black")
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        canvas.save(tmp, format="PNG")
    return out_png


def _stems(paths: Sequence[str]) -> list[str]:
    """File stems unique within the batch (folders flattened with '__')."""
    stems = [str(Path(p).with_suffix("")).replace("/", "__").replace("\\", "__") for p in paths]
    if len(set(stems)) != len(stems):
        raise ValueError("manifest paths are not unique")
    return stems


def explain_manifest(df: pd.DataFrame, root: str | os.PathLike, model_path: str | os.PathLike,
                     out_dir: str | os.PathLike, methods: Sequence[str] = ("gradcam",),
                     classes: Sequence[str] | None = None, image_size: int = 64, channels: int = 3,
                     backbone: str = "compact_densenet", resize_mode: str = "pad",
                     class_index: int | Sequence[int] | None = None, model_name: str | None = None,
                     overlays: bool = True, batch_size: int = 8, overwrite: bool = False,
                     progress: bool = True, explainers=None, images: tuple | None = None,
                     **options) -> pd.DataFrame:
    """Generate heatmaps for every manifest row with each method; write arrays, overlays, index.

    Args:
        df: manifest rows to explain.
        root: data root.
        model_path: saved ``.h5`` model (Grad-CAM loads it in this process, LRP in a worker).
        out_dir: output root; files go to ``out_dir/<model_name>/<method>/``.
        methods: ``gradcam``, ``gradcam++`` and/or iNNvestigate ``lrp.*`` analyzer names.
        classes: class names of the model's outputs (for the index and titles).
        image_size, channels, backbone, resize_mode: how the model's images were prepared
            (``cxrlib.data.pipeline.load_images``).
        class_index: None (predicted class), an int, or one int per row.
        model_name: folder name (default: the model file's parent folder name).
        overlays: also write PNG overlays.
        batch_size: images per explanation call.
        overwrite: recompute images whose ``.npy`` already exists.
        progress: show a tqdm progress bar.
        explainers: an :class:`cxrlib.explain.factory.ExplainerCache` to reuse (and leave open);
            None builds one for this call and closes it at the end.
        images: ``(x, shown)`` already loaded by :func:`load_for_explaining` for these rows and
            settings (several models share them); None loads them here.
        **options: explainer options (:func:`cxrlib.explain.factory.make_explainer`), e.g.
            ``min_cam_size=8`` for Grad-CAM or ``epsilon=1e-7`` for LRP.

    Returns:
        The concatenated index: path, model, method, class_index, class, prob, npy, png.
    """
    from tqdm.std import tqdm  # plain text bar: tqdm.auto warns (IProgress) without ipywidgets

    from cxrlib.explain.base import canonical_method
    from cxrlib.explain.factory import ExplainerCache

    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"model file not found: {model_path}")
    model_name = model_name or model_path.parent.name or model_path.stem
    df = df.reset_index(drop=True)
    stems = _stems(df["path"].tolist())
    x, shown = images if images is not None else load_for_explaining(df, root, image_size, channels, backbone,
                                                                      resize_mode)
    n = len(df)
    cls = None if class_index is None else np.broadcast_to(np.asarray(class_index, dtype=int), (n,))
    index = []
    cache = explainers if explainers is not None else ExplainerCache(**options)
    try:
        for method in methods:
            index.append(_explain_method(canonical_method(method), cache.get(model_path, method), x, shown, df,
                                         stems, Path(out_dir) / model_name / method, model_name, cls, classes,
                                         overlays, batch_size, overwrite, progress, tqdm))
    finally:
        if explainers is None:
            cache.close()
    return pd.concat(index, ignore_index=True) if index else pd.DataFrame()


def load_for_explaining(df: pd.DataFrame, root, image_size: int = 64, channels: int = 3,
                        backbone: str = "compact_densenet", resize_mode: str = "pad") -> tuple[np.ndarray, np.ndarray]:
    """``(x, shown)``: the rows' model inputs [N, H, W, C] and their 0..255 gray display [N, H, W].

    Every image is checked first (the error names the bad files), before any long work.
    """
    from cxrlib.data.pipeline import load_images

    df = df.reset_index(drop=True)
    x = load_images(df, root, image_size, channels=channels, backbone=backbone, resize_mode=resize_mode)
    shown = load_images(df, root, image_size, channels=1, backbone=None, resize_mode=resize_mode, check=False)
    return x, shown


def _explain_method(method, explainer, x, shown, df, stems, folder: Path, model_name, cls, classes,
                    overlays, batch_size, overwrite, progress, tqdm) -> pd.DataFrame:
    """One model x method folder: arrays, overlays and index for the rows not done yet."""
    n = len(df)
    folder.mkdir(parents=True, exist_ok=True)
    old = folder / "heatmaps.csv"
    prev = pd.read_csv(old, dtype={"path": str}, keep_default_na=False) if old.is_file() else None
    rows = {} if prev is None else {r["path"]: r for r in prev.to_dict("records")}

    def stale(i: int) -> bool:  # no map yet, or one of another class than the one asked for now
        done = rows.get(df["path"][i])
        return (not (folder / f"{stems[i]}.npy").is_file() or done is None
                or (cls is not None and int(done["class_index"]) != int(cls[i])))

    todo = [i for i in range(n) if overwrite or stale(i)]
    bar = tqdm(total=len(todo), desc=f"{model_name}/{method}", unit="img", disable=not progress)
    for s in range(0, len(todo), batch_size):
        idx = todo[s:s + batch_size]
        h = explainer.explain(x[idx], None if cls is None else cls[idx])  # Heatmaps, maps [b, H, W]
        for j, i in enumerate(idx):
            npy, png = folder / f"{stems[i]}.npy", folder / f"{stems[i]}.png"
            _save_npy(npy, h.maps[j].astype(np.float32))
            name = classes[h.class_index[j]] if classes is not None else str(h.class_index[j])
            if overlays:
                save_overlay(shown[i], h.maps[j], png, signed=h.signed,
                             title=f"{df['path'][i]} | {method} | {name} p={h.prob[j]:.2f}")
            rows[df["path"][i]] = {"path": df["path"][i], "model": model_name, "method": method,
                                   "class_index": int(h.class_index[j]), "class": name, "prob": float(h.prob[j]),
                                   "npy": npy.name, "png": png.name if overlays else ""}
        bar.update(len(idx))
        _write_index(folder, rows)  # after every batch: a crash keeps finished images indexed
    bar.close()
    _write_index(folder, rows)
    return pd.DataFrame([rows[p] for p in df["path"] if p in rows])


def _write_index(folder: Path, rows: dict) -> None:
    write_csv(folder / "heatmaps.csv", pd.DataFrame(list(rows.values())))


def read_heatmaps(folder: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray]:
    """Index and maps [N, H, W] of one ``<model>/<method>`` folder written by explain_manifest."""
    folder = Path(folder)
    index = pd.read_csv(folder / "heatmaps.csv", dtype={"path": str}, keep_default_na=False)
    maps = np.stack([np.load(folder / f) for f in index["npy"]]) if len(index) else np.zeros((0, 0, 0))
    return index, maps


def explain_models(models, df: pd.DataFrame, root, out_dir, methods: Sequence[str], explainers=None,
                   images: tuple | None = None, **kwargs) -> dict:
    """Heatmaps of several models x methods, in the row order of ``df``, keyed by ``(model, method)``.

    Runs :func:`explain_manifest` per model (files under ``out_dir/<model>/<method>/``, resumable)
    with one :class:`cxrlib.explain.factory.ExplainerCache` for all of them, then reads the maps
    back. The images are loaded once for all models. LRP runs in its own worker process
    (:mod:`cxrlib.explain.lrp`): its methods are driven from a second thread, which mostly waits
    for that process, while Grad-CAM computes in this one, so the two use both cores
    (``benchmarks/bench_heatmaps_overlap.py``).

    Args:
        models: ``{model name: stage folder or .h5 file}``.
        df: manifest rows to explain.
        root: data root.
        out_dir: output root.
        methods: heatmap method names (as in the config).
        explainers: an open :class:`~cxrlib.explain.factory.ExplainerCache` to reuse across calls
            (the caller closes it); None: one for this call, closed at the end.
        images: ``(x, shown)`` of :func:`load_for_explaining` for ``df`` with these settings,
            when the caller has them already (notebook 5 shows ``shown``); None loads them here.
        **kwargs: :func:`explain_manifest` arguments (classes, image_size, backbone, ...) and
            explainer options (``min_cam_size``, ``epsilon`` ...).

    Returns:
        ``{(model, method): Heatmaps}`` with the saved maps (signed relevance for LRP),
        ``class_index`` and ``prob`` of the explained class; ``Heatmaps.display()`` gives [0, 1].
    """
    from cxrlib.explain.base import Heatmaps, canonical_method
    from cxrlib.explain.factory import ExplainerCache, model_file

    options = {k: kwargs.pop(k) for k in list(kwargs) if k not in _MANIFEST_ARGS}
    out: dict[tuple[str, str], Heatmaps] = {}
    cache = explainers if explainers is not None else ExplainerCache(**options)

    def run(some: list[str]) -> None:  # every model with some of the methods
        for name, model in models.items():
            explain_manifest(df, root, model_file(model), out_dir, methods=some, model_name=name,
                             explainers=cache, images=images, **kwargs)

    lrp = [m for m in methods if canonical_method(m).startswith("lrp")]
    cam = [m for m in methods if m not in lrp]
    try:
        if images is None:
            images = load_for_explaining(df, root, **{k: kwargs[k] for k in _LOAD_ARGS if k in kwargs})
        if lrp and cam:
            with ThreadPoolExecutor(1, thread_name_prefix="cxr-lrp") as pool:
                pending = pool.submit(run, lrp)  # waits on the LRP process ...
                run(cam)                         # ... while Grad-CAM computes here
                pending.result()
        else:
            run(list(methods))
        for name in models:
            for method in methods:
                index, maps = read_heatmaps(Path(out_dir) / name / method)
                order = pd.Index(index["path"]).get_indexer(df["path"])  # rows of df in the index
                canon = canonical_method(method)
                out[(name, method)] = Heatmaps(maps=maps[order], class_index=index["class_index"].to_numpy()[order],
                                               prob=index["prob"].to_numpy(np.float32)[order],
                                               signed=canon.startswith("lrp"), method=canon)
    finally:
        if explainers is None:
            cache.close()
    return out


_MANIFEST_ARGS = ("classes", "image_size", "channels", "backbone", "resize_mode", "class_index", "overlays",
                  "batch_size", "overwrite", "progress")
_LOAD_ARGS = ("image_size", "channels", "backbone", "resize_mode")
