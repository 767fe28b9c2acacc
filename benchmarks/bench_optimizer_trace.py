"""CPU cost of a small training run with Keras' new vs legacy optimizers (the quick demo's fold).

A quick-demo fold trains a compact DenseNet at 48 px for 3-4 epochs on ~200 images; most of its
CPU goes to tracing the train step, and the new ``keras.optimizers.Adam`` (Keras 2.11+) traces
one update per variable, while ``keras.optimizers.legacy.Adam`` applies fused per-variable ops
that trace faster. Same Adam update (bias-corrected step, epsilon outside the square root).
Each variant runs in a fresh process (tracing caches are per process), alternating, and the
script prints process CPU seconds per phase and the legacy/new ratio measured in this run.

    python benchmarks/bench_optimizer_trace.py --repeats 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r'''
import json, sys, time
import numpy as np, tensorflow as tf, keras
from cxrlib.models import build_model
from cxrlib.training import make_optimizer
which, size, n, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
x = rng.random((n, size, size, 3), dtype=np.float32)           # [N, H, W, 3]
y = keras.utils.to_categorical(rng.integers(0, 4, n), 4)        # [N, 4]
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
c0 = time.process_time()
model = build_model("compact_densenet", (size, size, 3), 4, activation="softmax", weights=None)
c1 = time.process_time()
opt = keras.optimizers.Adam(1e-3) if which == "new" else make_optimizer("adam", 1e-3)
model.compile(optimizer=opt, loss="categorical_crossentropy", metrics=["accuracy"])
model.fit(ds, epochs=1, verbose=0)
c2 = time.process_time()
model.fit(ds, epochs=epochs, initial_epoch=1, verbose=0)
c3 = time.process_time()
print(json.dumps({"optimizer": which if which == "new" else type(opt).__module__ + "." + type(opt).__name__,
                  "build": c1 - c0, "first_epoch": c2 - c1, "later_epochs": c3 - c2, "total": c3 - c0}))
'''


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    rows: dict[str, list[dict]] = {"new": [], "cxrlib": []}
    for _ in range(args.repeats):
        for which in rows:
            out = subprocess.run([sys.executable, "-c", CHILD, which, str(args.size), str(args.images), str(args.epochs)],
                                 capture_output=True, text=True, check=True).stdout
            rows[which].append(json.loads(out.strip().splitlines()[-1]))
    print(f"compact DenseNet, {args.size} px, {args.images} images, {args.epochs} epochs; CPU seconds "
          f"(median of {args.repeats}, fresh process each)")
    med = {}
    for which, rs in rows.items():
        med[which] = {k: sorted(r[k] for r in rs)[len(rs) // 2] for k in ("build", "first_epoch", "later_epochs", "total")}
        print(f"  {rs[0]['optimizer']:<45} " + "  ".join(f"{k} {v:5.2f}" for k, v in med[which].items()))
    for k in ("first_epoch", "total"):
        print(f"  ratio cxrlib/new {k}: {med['cxrlib'][k] / med['new'][k]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
