"""``cxr predict`` and ``cxr evaluate``: a trained stage applied to new images.

    cxr predict STAGE_OR_MODEL PATH... [--explain gradcam|gradcam++|lrp.epsilon] [--out DIR]
    cxr evaluate STAGE --manifest M.csv --root R [--training T.csv ...] [--out DIR]

``predict`` writes ``DIR/predictions.csv`` (path, prob_<class>..., pred), overlay PNGs under
``DIR/heatmaps`` with ``--explain``, and ``DIR/unreadable.csv``. ``evaluate`` writes
``DIR/metrics.json``, ``DIR/index.html`` and the tables of :mod:`cxrlib.validation.run`; rows
duplicating the training manifests (images or patients) are removed first and reported: those
given with ``--training``, else the stage's own (and its source stage's) when they live under ``--root``.
Both name every unreadable file, count it and go on with the others.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_predict(args: argparse.Namespace) -> int:
    from cxrlib.predict import load_predictor, predict_files

    try:
        pred = load_predictor(args.model)
        res = predict_files(pred, args.paths, args.out, explain=args.explain)
    except (FileNotFoundError, ValueError) as exc:
        print(f"cxr predict: error: {exc}", file=sys.stderr)
        return 2
    print(res.summary())
    return 0


def evaluate_stage(stage, manifest, root, out, training=(), n_boot: int = 1000, thresholds=None) -> dict:
    """What ``cxr evaluate`` does; returns the metrics record written to ``metrics.json``."""
    import pandas as pd

    from cxrlib import evaluation, io
    from cxrlib.data.manifest import line_of, read_manifest
    from cxrlib.predict import load_predictor, split_readable, training_manifests
    from cxrlib.validation import Thresholds
    from cxrlib.validation.collections import remove_training_overlap
    from cxrlib.validation.run import evaluate_external, evaluate_page, write_external

    pred = load_predictor(stage)
    df = read_manifest(manifest)
    name = Path(manifest).stem
    unknown = sorted(set(df["label"]) - set(pred.classes) - {""})
    for lab in unknown:  # named with the first CSV line, before any long work
        first = int((df["label"] == lab).to_numpy().argmax())
        print(f"[cxrlib] {manifest}: line {line_of(first)}, field 'label': {lab!r} is not a class of the model "
              f"{pred.classes}; {int((df['label'] == lab).sum())} row(s) set aside")
    notes = []
    if not training:
        training = training_manifests(pred, root)
        if training:
            notes.append("training manifests found in the stage config(s)")
    if training:
        train = pd.concat([read_manifest(t) for t in training], ignore_index=True)
        df, removed = remove_training_overlap(df, train, root, pred.classes, collection=name)
        notes.append(f"overlap with the training manifests {list(map(str, training))} removed: {len(removed)} row(s)")
    else:
        keep = df["label"].isin(pred.classes)
        removed = df[~keep].assign(collection=name, reason="no label / not a model class")
        df = df[keep].reset_index(drop=True)
        notes.append("overlap with the training data NOT checked (pass --training MANIFEST)")
    good, bad = split_readable(df, root)
    for path, reason in bad:
        print(f"[cxrlib] unreadable, skipped: {path}: {reason}")
    if bad:
        removed = pd.concat([removed, pd.DataFrame([{"collection": name, "path": p, "reason": f"unreadable: {r}"}
                                                    for p, r in bad])], ignore_index=True)
    th = thresholds or Thresholds()
    res = evaluate_external({pred.name: pred}, {name: good}, root, th, n_boot=n_boot, removed=removed)
    rows = res.predictions
    full = (evaluation.classification_metrics(rows["label"].map(pred.classes.index).to_numpy(),
                                              rows[[f"prob_{c}" for c in pred.classes]].to_numpy(), pred.classes)
            if len(rows) else {})
    out = Path(out)
    write_external(res, out)
    record = {"stage": str(stage), "manifest": str(manifest), "n_rows": int(len(read_manifest(manifest))),
              "n_evaluated": int(len(good)), "n_unreadable": len(bad), "unreadable": [p for p, _ in bad],
              "removed": res.removed["reason"].value_counts().to_dict() if len(res.removed) else {},
              "metrics": full, "summary": res.summary.to_dict("records"), "warnings": res.warnings,
              "notes": notes}
    io.write_json(out / "metrics.json", record)
    io.write_text(out / "index.html", evaluate_page(res, f"{pred.name} on {name}", notes + [
        f"{len(good)} image(s) evaluated, {len(bad)} unreadable, {len(res.removed)} removed (see removed.csv)"]))
    return record


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cxrlib.data.manifest import ManifestError

    try:
        rec = evaluate_stage(args.stage, args.manifest, args.root, args.out, args.training or (), args.bootstrap)
    except (FileNotFoundError, ValueError, ManifestError) as exc:
        print(f"cxr evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(f"{rec['n_evaluated']} image(s) evaluated, {rec['n_unreadable']} unreadable -> {Path(args.out) / 'index.html'}")
    for w in rec["warnings"]:
        print(f"WARNING: {w['message']}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("predict", help="predict images (files or folders) with a trained stage",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="stage folder (model.h5 + config.json) or a .h5 model file")
    p.add_argument("paths", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--explain", choices=["gradcam", "gradcam++", "lrp.epsilon", "lrp.z", "lrp.alpha_1_beta_0"],
                   help="also write heatmap overlay PNGs")
    p.add_argument("--out", default="predictions", help="output folder (default: ./predictions)")
    p.set_defaults(func=cmd_predict)
    e = sub.add_parser("evaluate", help="evaluate a trained stage on a labelled manifest (metrics JSON + HTML)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("stage", help="finished stage folder")
    e.add_argument("--manifest", required=True, help="manifest CSV (label column in the stage's classes)")
    e.add_argument("--root", required=True, help="data root the manifest's paths are relative to")
    e.add_argument("--training", action="append", help="training manifest(s) (same root): overlap removed first")
    e.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (0 = none)")
    e.add_argument("--out", default="evaluation", help="output folder (default: ./evaluation)")
    e.set_defaults(func=cmd_evaluate)
