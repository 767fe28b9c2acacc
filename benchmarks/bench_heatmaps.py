"""Benchmark of cxrlib.explain: seconds per image per method, and cxrlib's overhead over the bare library.

For each method the same saved model and the same images go through
(a) cxrlib: ``CamExplainer.explain`` (Grad-CAM, Grad-CAM++) / ``LRPExplainer.explain`` (LRP, in its
    graph-mode worker process), and
(b) the bare library call: tf-keras-vis ``Gradcam(model, ReplaceToLinear())(CategoricalScore, x,
    penultimate_layer=...)`` in this process / iNNvestigate ``create_analyzer(...).analyze`` in a
    separate graph-mode process with the same model file and the same fast-path flag.
Steady-state seconds per image are the median of ``--repeats`` timed calls after one warm-up call
(which also builds the analyzer; its time is reported as ``first_s``). The cxrlib and bare calls
alternate (cxrlib, bare, cxrlib, bare, ...) so a change of machine load hits both alike.
``overhead`` is cxrlib's steady-state time divided by the bare call's, measured in the same run.
cxrlib's LRP time is the parent's wall time of ``explain`` (worker round trip included); the bare
LRP time is ``analyze`` inside its own worker. cxrlib's calls explain the predicted class (the
default, class chosen inside the explained forward pass); the bare calls are given the class
indices computed beforehand. The load average is printed before and after.

``--slow-path`` also times the first LRP heatmap with Keras' default graph-mode layer creation
(``fast_graph_layer_creation(False)``) and checks the maps against the fast path; on a compact
DenseNet this takes many minutes per method (see the module docstring of cxrlib.explain.lrp).

Usage::

    python benchmarks/bench_heatmaps.py                       # compact DenseNet, 64 px, 8 images
    python benchmarks/bench_heatmaps.py --backbone densenet121 --size 224 --images 4 --methods lrp.epsilon
    python benchmarks/bench_heatmaps.py --slow-path --methods lrp.epsilon
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from cxrlib import runtime  # noqa: F401  (TF environment defaults)

ALL = ("gradcam", "gradcam++", "lrp.epsilon", "lrp.z", "lrp.alpha_1_beta_0",
       "lrp.sequential_preset_a", "lrp.sequential_preset_b")


def _alternate(ours, bare, repeats: int) -> tuple[float, list[float], float, list[float]]:
    """Warm up both, then alternate timed calls; ``bare`` returns its own seconds (or None: wall time)."""
    t0 = time.perf_counter()
    ours()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    b = bare()
    bfirst = b if b is not None else time.perf_counter() - t0
    o_times, b_times = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours()
        o_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b = bare()
        b_times.append(b if b is not None else time.perf_counter() - t0)
    return first, o_times, bfirst, b_times


_BARE: dict = {}


def _bare_init(model_path: str, fast: bool) -> None:
    """Worker initializer: plain iNNvestigate on the saved model (graph mode)."""
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    from cxrlib.explain._lrp_worker import fast_graph_layer_creation, logits_model

    fast_graph_layer_creation(fast)
    _BARE["model"] = logits_model(tf.keras.models.load_model(model_path, compile=False))


def _bare_lrp(method: str, x: np.ndarray, idx: list[int]) -> tuple[float, np.ndarray]:
    """Seconds of one bare ``analyze`` call (the analyzer is built on the first call) and the maps."""
    import innvestigate

    if method not in _BARE:
        _BARE[method] = innvestigate.create_analyzer(method, _BARE["model"], neuron_selection_mode="index")
    t0 = time.perf_counter()
    rel = _BARE[method].analyze(x, neuron_selection=idx)
    return time.perf_counter() - t0, rel.sum(-1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="compact_densenet")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", nargs="+", default=list(ALL))
    ap.add_argument("--slow-path", action="store_true", help="also time LRP without the fast flag")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import tensorflow as tf
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    from cxrlib.explain.gradcam import CamExplainer
    from cxrlib.explain.lrp import LRPExplainer
    from cxrlib.models import build_model, last_conv_layer_name, save_model

    tf.keras.utils.set_random_seed(args.seed)
    model = build_model(args.backbone, (args.size, args.size, 3), 3, "softmax")
    tmp = Path(tempfile.mkdtemp(prefix="bench_heatmaps_"))
    path = save_model(model, tmp / "model.h5")
    x = np.random.default_rng(args.seed).normal(size=(args.images, args.size, args.size, 3)).astype(np.float32)
    idx = model.predict(x, verbose=0).argmax(1).tolist()
    n = args.images
    print(f"{args.backbone} {args.size}px, {model.count_params():,} parameters, {n} images per call, "
          f"median of {args.repeats} calls after a warm-up; TF {tf.__version__}")
    rows = []
    cams = [m for m in args.methods if not m.startswith("lrp")]
    lrps = [m for m in args.methods if m.startswith("lrp")]
    print(f"load average before: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    for m in cams:
        ex = CamExplainer(model, m)
        vis = (Gradcam if m == "gradcam" else GradcamPlusPlus)(model, model_modifier=ReplaceToLinear(), clone=True)
        layer = last_conv_layer_name(model)

        def bare_call(vis=vis, layer=layer):
            vis(CategoricalScore(idx), x, penultimate_layer=layer)  # [N, H, W]; wall time is measured

        first, ours, bfirst, bare = _alternate(lambda: ex.explain(x), bare_call, args.repeats)
        rows.append((m, first, statistics.median(ours), bfirst, statistics.median(bare)))
    if lrps:
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=ctx, initializer=_bare_init, initargs=(str(path), True)) as pool, \
                LRPExplainer(path, fast=True) as ex:
            for m in lrps:
                maps = {}

                def bare_call(m=m):
                    sec, maps["bare"] = pool.submit(_bare_lrp, m, x, idx).result()
                    return sec

                first, ours, bfirst, bare = _alternate(lambda m=m: ex.explain(x, method=m), bare_call, args.repeats)
                same = np.allclose(ex.explain(x, method=m).maps, maps["bare"], rtol=1e-5, atol=1e-8)
                rows.append((m + ("" if same else " (maps differ!)"), first, statistics.median(ours),
                             bfirst, statistics.median(bare)))
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(f"\n{'method':28s} {'first call s':>12s} {'s/img cxrlib':>13s} {'s/img bare':>11s} {'overhead':>9s}")
    for m, first, ours, bfirst, b in rows:
        print(f"{m:28s} {first:12.2f} {ours / n:13.4f} {b / n:11.4f} {ours / b:8.2f}x")
    print("(first call includes building the iNNvestigate analyzer (bare: its first call); "
          "LRP worker start-up and model load are not included)")
    if args.slow_path and lrps:
        print("\nfirst LRP heatmap, Keras graph-mode layer creation: fast flag vs default (slow) path")
        for m in lrps:
            res = {}
            for fast in (True, False):
                t0 = time.perf_counter()
                with LRPExplainer(path, method=m, fast=fast) as ex:
                    r = ex.explain(x[:1])
                res[fast] = (time.perf_counter() - t0, r.build_seconds, r.relevance)
            same = np.array_equal(res[True][2], res[False][2])
            close = np.allclose(res[True][2], res[False][2], rtol=1e-6, atol=1e-9)
            print(f"{m:28s} analyzer build fast {res[True][1]:8.1f} s  slow {res[False][1]:8.1f} s  "
                  f"(incl. worker start {res[True][0]:.1f} / {res[False][0]:.1f} s); maps "
                  f"{'bit-identical' if same else 'within 1e-6' if close else 'DIFFERENT'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
