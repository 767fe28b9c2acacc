"""Apply a trained stage to new images: ``cxr predict`` and ``cxr evaluate``.

API (stable):

- ``load_predictor(stage_or_model) -> Predictor``: a finished stage folder (``model.h5`` +
  ``config.json``, see :mod:`cxrlib.experiment`) or a ``.h5`` model file (its folder's
  ``config.json`` is used when present; otherwise the input size comes from the model,
  classes are ``class0..`` and ``backbone``/``resize_mode`` default to compact_densenet/pad).
  The predictor prepares images exactly as the stage did (backbone preprocessing, image size,
  channels, resize mode; :func:`cxrlib.data.pipeline.load_images`).
- ``collect_images(paths) -> list[Path]``: files as given, folders searched recursively for
  ``IMAGE_SUFFIXES`` (png, jpg, jpeg, jfif, webp, bmp, tif, tiff).
- ``split_readable(df, root) -> (good rows, bad [(path, reason)])``: every file fully decoded
  first (:func:`cxrlib.data.images.scan_images`); unreadable files are named, counted, skipped.
- ``predict_files(predictor, paths, out_dir, explain=None) -> PredictResult``: writes
  ``predictions.csv`` (path, prob_<class>..., pred) and, with ``explain`` (``gradcam``,
  ``gradcam++`` or ``lrp.*``), overlay PNGs under ``out_dir/heatmaps`` via
  :func:`cxrlib.explain.batch.explain_manifest`; ``unreadable.csv`` lists the bad files.
- ``predict_frame(predictor, df, root) -> prob [N, K]`` (chunked: memory stays bounded).
- ``training_manifests(predictor, root) -> [paths]``: the manifests the stage (and its source
  stage) trained on, when their data root is ``root`` (for the overlap check of ``evaluate``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cxrlib import io

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jfif", ".webp", ".bmp", ".tif", ".tiff")
CHUNK = 256  # images decoded per prediction call (memory: CHUNK x H x W x C float32)


@dataclass
class Predictor:
    """A model with the preprocessing of the stage that trained it."""

    model: object
    model_path: Path
    classes: list[str]
    image_size: int
    channels: int
    backbone: str
    resize_mode: str
    multi_label: bool = False
    name: str = ""
    stage_dir: Path | None = None
    metrics: dict = field(default_factory=dict)  # the stage's metrics.json (internal test), if any
    config: dict = field(default_factory=dict)  # the stage's resolved config (config.json "config")


def load_predictor(stage_or_model: str | os.PathLike) -> Predictor:
    """Predictor of a stage folder or a ``.h5`` model file (see the module docstring)."""
    from cxrlib import experiment, models

    p = Path(stage_or_model)
    if p.is_dir():
        model, cfg, metrics = experiment.load_stage(p)
        c = cfg["config"]
        return Predictor(model, p / "model.h5", list(cfg["classes"]), int(c["image_size"]), int(c["channels"]),
                         str(c["backbone"]), str(c.get("resize_mode", "pad")), bool(cfg.get("multi_label")),
                         name=c.get("name") or p.name, stage_dir=p, metrics=metrics, config=dict(c))
    if not p.is_file():
        raise FileNotFoundError(f"{p}: neither a stage folder nor a model file")
    if (p.parent / "config.json").is_file() and (p.parent / "metrics.json").is_file():
        pred = load_predictor(p.parent)
        pred.model, pred.model_path = models.load_model(p), p
        return pred
    model = models.load_model(p)
    _, h, w, ch = model.input_shape
    n = int(model.output_shape[-1])
    print(f"[cxrlib] {p}: no stage config.json beside it; assuming backbone compact_densenet, resize pad, "
          f"classes class0..class{n - 1}")
    return Predictor(model, p, [f"class{i}" for i in range(n)], int(h), int(ch), "compact_densenet", "pad",
                     name=p.stem)


def collect_images(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files of ``paths``: files as given (any name), folders searched recursively.

    Raises:
        FileNotFoundError: a path does not exist (named).
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                              and not f.name.startswith(".")))
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return list(dict.fromkeys(out))


def split_readable(df: pd.DataFrame, root: str | os.PathLike) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """(rows whose image decodes, [(path, reason)] of the others): each file decoded once."""
    from cxrlib.data.images import scan_images

    df = df.reset_index(drop=True)
    report = scan_images(df, root)
    bad_idx = [b.index for b in report.bad]
    bad = [(b.path, b.reason) for b in report.bad]  # full path: names the file wherever it is
    return df.drop(index=bad_idx).reset_index(drop=True), bad


def predict_frame(pred: Predictor, df: pd.DataFrame, root: str | os.PathLike) -> np.ndarray:
    """Model outputs [N, K] for manifest rows, prepared like the stage's own images."""
    from cxrlib.data.pipeline import load_images

    chunks = []
    for s in range(0, len(df), CHUNK):
        x = load_images(df.iloc[s:s + CHUNK], root, pred.image_size, channels=pred.channels,
                        backbone=pred.backbone, resize_mode=pred.resize_mode, check=False)  # [n, H, W, C]
        chunks.append(np.asarray(pred.model.predict(x, batch_size=32, verbose=0)))
    return np.concatenate(chunks) if chunks else np.zeros((0, len(pred.classes)), np.float32)


def prediction_rows(paths: Sequence[str], prob: np.ndarray, classes: Sequence[str],
                    multi_label: bool = False) -> pd.DataFrame:
    """path, prob_<class>..., pred (argmax; multi-label: '|'-joined classes with prob >= 0.5)."""
    out = pd.DataFrame({"path": list(paths)})
    for k, c in enumerate(classes):
        out[f"prob_{c}"] = prob[:, k]
    out["pred"] = (["|".join(c for c, v in zip(classes, r) if v >= 0.5) for r in prob] if multi_label
                   else [classes[i] for i in prob.argmax(axis=1)])
    return out


@dataclass
class PredictResult:
    table: pd.DataFrame  # one row per readable image
    bad: list[tuple[str, str]]  # (path, reason) of unreadable files
    csv: Path

    def summary(self) -> str:
        return f"{len(self.table)} image(s) predicted, {len(self.bad)} unreadable -> {self.csv}"


def predict_files(pred: Predictor, paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                  explain: str | None = None, progress: bool = False) -> PredictResult:
    """Predict every image of ``paths`` (files/folders); see the module docstring.

    Unreadable files are printed by name with the reason, counted, written to
    ``unreadable.csv`` and skipped; the readable ones are all predicted.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [f.resolve() for f in collect_images(paths)]
    root = Path(os.path.commonpath([f.parent for f in files])) if files else Path("/")
    df = pd.DataFrame({"path": [f.relative_to(root).as_posix() for f in files]})  # short heatmap file names
    good, bad = split_readable(df, root)
    for path, reason in bad:
        print(f"[cxrlib] unreadable, skipped: {path}: {reason}")
    prob = predict_frame(pred, good, root)
    table = prediction_rows([str(root / p) for p in good["path"]], prob, pred.classes, pred.multi_label)
    if explain and len(good):
        from cxrlib.explain.batch import explain_manifest

        idx = explain_manifest(good, root, pred.model_path, out / "heatmaps", methods=[explain],
                               classes=pred.classes, image_size=pred.image_size, channels=pred.channels,
                               backbone=pred.backbone, resize_mode=pred.resize_mode, model_name=pred.name or "model",
                               progress=progress)
        png = {str(root / p): f for p, f in zip(idx["path"], idx["png"])}
        folder = Path("heatmaps") / (pred.name or "model") / explain
        table[f"{explain}_png"] = [str(folder / png[p]) if png.get(p) else "" for p in table["path"]]
    csv = io.write_csv(out / "predictions.csv", table, index=False)
    io.write_csv(out / "unreadable.csv", pd.DataFrame(bad, columns=["path", "reason"]), index=False)
    return PredictResult(table, bad, csv)


def training_manifests(pred: Predictor, root: str | os.PathLike) -> list[Path]:
    """Manifests of the stage and of its source stage whose data root is ``root`` (else [])."""
    import json

    out, cfg = [], pred.config
    while cfg:
        man = Path(cfg.get("manifest") or "")
        data_root = Path(cfg.get("root") or man.parent)
        if man.is_file() and data_root.resolve() == Path(root).resolve():
            out.append(man)
        src = Path(cfg.get("source_dir") or "") / "config.json"
        cfg = json.loads(src.read_text(encoding="utf-8")).get("config", {}) if cfg.get("source_dir") and src.is_file() else {}
    return out
