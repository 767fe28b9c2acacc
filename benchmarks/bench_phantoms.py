"""Benchmark of the phantom generator: generation speed and learnability (not a test).

Generates a phantom set, reports images/s, then trains a tiny plain CNN on a patient-grouped
hold-out (sklearn ``GroupShuffleSplit``) and reports validation accuracy per epoch against
chance (for the multi-label source task: AUC per finding). The phantoms are meant to be learnable but not trivial: well above chance, below 100 %.

Usage::

    python benchmarks/bench_phantoms.py --task paper_a --n 400 --size 64 --epochs 20
    python benchmarks/bench_phantoms.py --task paper_b --n 300 --epochs 10 --shortcut-strength 1
    python benchmarks/bench_phantoms.py --task source --n 600 --epochs 15
    python benchmarks/bench_phantoms.py --task paper_a --n 300 --size 48 --epochs 5 --conspicuity 2.5  # quick demo
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cxrlib import runtime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="paper_a", help="paper_a, paper_b, paper_b_viral or source (multi-label)")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--size", type=int, default=64, help="rendered image size (the CNN sees 64 px)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shortcut-strength", type=float, default=0.0,
                    help="phi correlation of the burnt-in marker with covid19 (shortcut learning check)")
    ap.add_argument("--conspicuity", type=float, default=1.0,
                    help="lesion contrast multiplier (1 = calibrated; the quick demo uses 2.5 at 48 px)")
    ap.add_argument("--out", default=None, help="keep the generated set here (default: temp dir)")
    args = ap.parse_args(argv)

    runtime.configure_env()
    import numpy as np
    import tensorflow as tf
    from sklearn.metrics import confusion_matrix, roc_auc_score
    from sklearn.model_selection import GroupShuffleSplit

    from cxrlib.data.images import read_image
    from cxrlib.data.manifest import read_manifest
    from cxrlib.data.phantoms import generate_phantoms
    from cxrlib.data.pipeline import encode_targets
    from cxrlib.data.taxonomy import is_multilabel, task_classes

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        t0 = time.perf_counter()
        manifest = generate_phantoms(out, args.task, args.n, seed=args.seed, image_size=args.size,
                                     shortcut_strength=args.shortcut_strength, conspicuity=args.conspicuity)
        dt = time.perf_counter() - t0
        print(f"generated {args.n} images of {args.size} px in {dt:.1f} s ({args.n / dt:.1f} images/s)")

        df = read_manifest(manifest)
        classes = task_classes(args.task)
        multi = is_multilabel(args.task)
        x = np.stack([read_image(out / p, channels=1) for p in df["path"]]).astype("float32")  # [N,S,S,1]
        x = tf.image.resize(x, (64, 64)).numpy()
        x = (x - x.mean()) / x.std()
        y = encode_targets(df, classes, multi_label=multi)  # [N,K] one-hot or multi-hot
        strat = y.argmax(axis=1)
        tr, te = next(GroupShuffleSplit(1, test_size=0.25, random_state=args.seed).split(x, strat, df["patient_id"]))

        tf.keras.utils.set_random_seed(args.seed)
        L = tf.keras.layers
        model = tf.keras.Sequential([
            L.Input((64, 64, 1)),
            L.Conv2D(16, 3, activation="relu", padding="same"), L.MaxPool2D(),  # [32,32,16]
            L.Conv2D(32, 3, activation="relu", padding="same"), L.MaxPool2D(),  # [16,16,32]
            L.Conv2D(32, 3, activation="relu", padding="same"), L.MaxPool2D(),  # [8,8,32]
            L.Conv2D(32, 3, activation="relu", padding="same"), L.MaxPool2D(),  # [4,4,32]
            L.Flatten(), L.Dropout(0.3), L.Dense(64, activation="relu"),
            L.Dense(len(classes), activation="sigmoid" if multi else "softmax"),
        ])
        model.compile(tf.keras.optimizers.Adam(1e-3), "binary_crossentropy" if multi else "categorical_crossentropy",
                      metrics=[tf.keras.metrics.AUC(multi_label=True, name="auc")] if multi else ["accuracy"])
        t0 = time.perf_counter()
        hist = model.fit(x[tr], y[tr], validation_data=(x[te], y[te]), epochs=args.epochs, batch_size=16, verbose=0)
        print(f"trained {args.epochs} epochs on {len(tr)} images in {time.perf_counter() - t0:.1f} s")
        metric = "val_auc" if multi else "val_accuracy"
        print(f"{metric} per epoch:", " ".join(f"{a:.2f}" for a in hist.history[metric]))
        prob = model.predict(x[te], verbose=0)  # [n_test,K]
        held_out = f"{len(te)} images of {df['patient_id'].iloc[te].nunique()} held-out patients"
        if multi:
            aucs = {c: roc_auc_score(y[te, k], prob[:, k]) for k, c in enumerate(classes) if 0 < y[te, k].sum() < len(te)}
            print(f"macro AUC {np.mean(list(aucs.values())):.3f} (chance 0.5, {held_out})")
            print("AUC per finding:", ", ".join(f"{c} {a:.2f}" for c, a in aucs.items()))
            return 0
        pred, true = prob.argmax(axis=1), y[te].argmax(axis=1)
        print(f"final val accuracy {np.mean(pred == true):.3f} (chance {1 / len(classes):.3f}, {held_out})")
        print("confusion matrix (rows true, columns predicted):", list(classes))
        print(confusion_matrix(true, pred, labels=range(len(classes))))
        if args.shortcut_strength > 0 and "covid19" in classes:
            marker = (df["shortcut"] == "1").to_numpy()[te]
            covid = classes.index("covid19")
            print(f"P(predicted covid19 | marker) = {np.mean(pred[marker] == covid):.2f}, "
                  f"P(predicted covid19 | no marker) = {np.mean(pred[~marker] == covid):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
