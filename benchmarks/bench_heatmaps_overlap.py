"""Wall time of notebook 5's heatmaps: LRP (own process) overlapping Grad-CAM vs one after the other.

``cxrlib.explain.batch.explain_models`` drives the LRP methods from a second thread, which mostly
waits for the LRP worker process, while Grad-CAM computes in the calling thread. The baseline,
measured in the same process on the same models and images, is the earlier order: each model's
methods one after the other (``explain_manifest`` per model). Both start a fresh
``ExplainerCache`` (and so a fresh LRP process) and write to fresh folders, so neither reuses the
other's work. Give a finished run's folder (``cxr demo`` or ``cxr run paper_b``):

    python benchmarks/bench_heatmaps_overlap.py reports/paper_b/latest --repeats 2

Prints wall and CPU seconds (this process and its children) per variant and their ratios; the
quick demo's paper-B heatmap stage is the last notebook of `make demo`, so its wall time is the
demo's tail.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args(argv)

    import yaml

    from cxrlib.data.manifest import read_manifest
    from cxrlib.data.taxonomy import task_classes
    from cxrlib.explain.batch import explain_manifest, explain_models
    from cxrlib.explain.factory import ExplainerCache, model_file
    from cxrlib.report.datastage import load_data_info
    from cxrlib.report.heatmaps import explainer_options, heatmap_models, select_images
    from cxrlib.report.notebook import StageContext
    from cxrlib.report.plan import build_plan

    run = args.run_dir.resolve()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    hcfg, info = cfg["heatmaps"], load_data_info(run)
    stage = next(s for s in build_plan(cfg) if s.kind == "heatmaps")
    models = heatmap_models(StageContext(cfg, run, Path(tempfile.mkdtemp()), stage))
    rows = select_images(read_manifest(info["target"]), cfg, n=int(hcfg.get("n_images", 8)))
    kw = dict(classes=list(task_classes(cfg["task"])), image_size=int(cfg["stage"]["image_size"]),
              backbone=cfg["stage"]["backbone"], progress=False)
    methods = list(hcfg["methods"])
    print(f"{len(models)} models x {methods} x {len(rows)} images ({run})")

    def sequential(out: Path) -> None:
        with ExplainerCache(**explainer_options(hcfg)) as cache:
            for name, model in models.items():
                explain_manifest(rows, info["root"], model_file(model), out, methods=methods, model_name=name,
                                 explainers=cache, **kw)

    def overlapped(out: Path) -> None:
        with ExplainerCache(**explainer_options(hcfg)) as cache:
            explain_models(models, rows, info["root"], out, methods, explainers=cache, **kw)

    times: dict[str, list[tuple[float, float]]] = {"sequential": [], "overlapped": []}
    for _ in range(args.repeats):
        for name, fn in (("sequential", sequential), ("overlapped", overlapped)):
            out = Path(tempfile.mkdtemp(prefix=f"bench_overlap_{name}_"))
            t0, c0 = time.perf_counter(), _cpu()
            fn(out)
            times[name].append((time.perf_counter() - t0, _cpu() - c0))
    best = {k: min(v) for k, v in times.items()}  # fastest repeat (wall, its CPU)
    for k, (wall, cpu) in best.items():
        print(f"{k:>11}: wall {wall:6.1f} s, CPU {cpu:6.1f} s (best of {args.repeats})")
    ratio = best["overlapped"][0] / best["sequential"][0]
    print(f"overlapped / sequential: wall {ratio:.2f}x, CPU {best['overlapped'][1] / best['sequential'][1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
