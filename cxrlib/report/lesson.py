"""What notebook ``05_heatmaps`` shows of the shortcut lesson (:mod:`cxrlib.report.shortcut`).

:func:`lesson_models` (the clean and the text-twin model), :func:`lesson_rows` (both models on the
same test images carrying the word), :func:`lesson_audit` (their text relevance on those images),
:func:`lesson_table` (the two verdicts side by side) and :func:`lesson_sentence` (what a teacher
reads out). Kept apart from :mod:`cxrlib.report.shortcut`, which :mod:`cxrlib.report.plan`
imports: these read the heatmap layer (:mod:`cxrlib.report.heatmaps`), which reads the plan.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from cxrlib.report.shortcut import SHORTCUT_MANIFEST, SHORTCUT_PREFIX, shortcut_options  # noqa: F401


def lesson_models(models: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``{clean key: folder, shortcut/<strategy>: folder}`` of :func:`cxrlib.report.heatmaps.heatmap_models`
    (clean first), or {} when the config has no ``shortcut_demo``."""
    opts = shortcut_options(cfg)
    if opts is None:
        return {}
    keys = [opts["clean"], f"{SHORTCUT_PREFIX}/{opts['strategy']}"]
    missing = [k for k in keys if k not in models]
    if missing:
        raise ValueError(f"shortcut lesson: model(s) {missing} not among the explained models {list(models)}")
    return {k: models[k] for k in keys}


def lesson_rows(run_dir: str | os.PathLike, cfg: Mapping[str, Any], n: int = 16) -> pd.DataFrame:
    """Up to ``n`` test images of the heatmap fold that carry the text in the twin (the shortcut
    class, e.g. COVID-19), as rows of the twin's manifest: both lesson models are explained on
    these same pixels, the clean one sees the word too (its training images had it at random)."""
    from cxrlib.data.manifest import read_manifest
    from cxrlib.report.heatmaps import marker_rows

    twin = read_manifest(Path(run_dir) / "stages" / "01_data" / f"{SHORTCUT_MANIFEST}.csv")
    return marker_rows(twin, cfg, n=n)


LESSON_IMAGES = 16  # test images with the word audited per lesson model: one Grad-CAM batch


def lesson_audit(audit: pd.DataFrame, lesson_maps: Mapping[tuple[str, str], Any], marked: pd.DataFrame,
                 root, image_size: int) -> pd.DataFrame:
    """``audit`` with the lesson models' ``text`` rows replaced by their relevance on ``marked``.

    :func:`cxrlib.report.heatmaps.audit_and_ablate` audits the text on the few lesion images
    that carry it (4 of the 8 in the quick demo: one Grad-CAM map more or less on the word moves
    the enrichment by a third); the lesson audits it on :func:`lesson_rows` (up to
    :data:`LESSON_IMAGES`), the images of the side-by-side figure.

    Args:
        audit: :func:`~cxrlib.report.heatmaps.audit_and_ablate`'s audit (all models, border and text).
        lesson_maps: ``{(model, method): Heatmaps}`` of the lesson models on ``marked``.
        marked: :func:`lesson_rows`.
        root, image_size: data root and model input size.
    """
    from cxrlib.report.heatmaps import audit_heatmaps

    new = audit_heatmaps(lesson_maps, marked, root, image_size)
    new = new[new["region"] == "text"]
    lesson = {model for model, _ in lesson_maps}
    keep = ~(audit["model"].isin(lesson) & (audit["region"] == "text"))
    return pd.concat([audit[keep], new], ignore_index=True)


def _test_accuracy(folder) -> float:
    from cxrlib.io import read_json

    metrics = read_json(Path(folder) / "metrics.json", default={})
    return float((metrics.get("test") or {}).get("accuracy", float("nan")))


def lesson_table(lesson: Mapping[str, Any], effects: pd.DataFrame, verdict: pd.DataFrame,
                 region: str = "text") -> pd.DataFrame:
    """The two lesson models side by side: what each was trained on, its test accuracy (on its own
    test images), the relevance on the text (highest enrichment over the methods), the flips of
    masking the text vs its control region, and the verdict.

    Args:
        lesson: :func:`lesson_models`.
        effects, verdict: the two tables of :func:`cxrlib.report.heatmaps.shortcut_table`.
        region: the audited region of the lesson.
    """
    rows = []
    for key, folder in lesson.items():
        e = effects[(effects["model"] == key) & (effects["region"] == region)]
        v = verdict[verdict["model"] == key]
        e = e.iloc[0] if len(e) else {}
        rows.append({
            "model": key,
            "trained on": ("text on every image of the shortcut class, none elsewhere"
                           if key.startswith(f"{SHORTCUT_PREFIX}/") else "text at random (no correlation)"),
            "test accuracy": _test_accuracy(folder),
            f"{region} enrichment": e.get("enrichment", float("nan")),
            "method": e.get("method", ""),
            "n masked": e.get("n_masked", 0),
            f"flips, {region} masked": e.get("flips", float("nan")),
            "flips, control masked": e.get("flips_control", float("nan")),
            "verdict": v["verdict"].iloc[0] if len(v) else "not audited",
        })
    return pd.DataFrame(rows)


def lesson_sentence(table: pd.DataFrame, text: str = "PORTABLE", region: str = "text") -> str:
    """What a teacher reads out under :func:`lesson_table` (numbers from the table)."""
    if len(table) != 2:
        return ""
    clean, cut = table.iloc[0], table.iloc[1]

    def pct(x):
        return "n/a" if pd.isna(x) else f"{x:.0%}"

    def num(x, f="{:.2f}"):
        return "n/a" if pd.isna(x) else f.format(x)

    better = "better than" if cut["test accuracy"] > clean["test accuracy"] else "about as good as"
    return (
        f"Both models saw the same patients, lesions and pixels; only the word differs. In the images of "
        f"**{cut['model']}** the word {text} is burnt in on every COVID-19 image and on no other, in "
        f"its test images too, so its test accuracy ({num(cut['test accuracy'])}) looks {better} the "
        f"clean model's ({num(clean['test accuracy'])}): the test set rewards reading the word. Masking the "
        f"word changes {pct(cut[f'flips, {region} masked'])} of its predictions on the "
        f"{int(cut['n masked'])} labelled test images, against {pct(cut['flips, control masked'])} when a "
        f"box of the same size on the other shoulder is masked, and its heatmaps put "
        f"{num(cut[f'{region} enrichment'], '{:.1f}')}x the area's share of relevance on the word "
        f"(verdict: *{cut['verdict']}*). The clean model: {num(clean[f'{region} enrichment'], '{:.1f}')}x, "
        f"{pct(clean[f'flips, {region} masked'])} vs {pct(clean['flips, control masked'])} "
        f"(verdict: *{clean['verdict']}*). A hospital that writes {text} on every bedside film would get "
        "COVID-19 for all of them from the shortcut model: a good test score does not show what a model reads.")
