"""Where the time of a ``cxr run`` goes, per executed notebook (issue 11 item 1: the demo budget).

Reads a finished run folder and prints, per stage: the stage's wall time (``stage.json``), the
time inside the notebook's cells (papermill's per-cell ``duration``), the first code cell
(imports), the fixed cost outside the cells (process start, papermill import, kernel start,
saving), and the cost of rendering its HTML, measured here by rendering it again in this
process (the runner renders in-process too). The last lines give the totals and the share of
fixed cost, and the ratio of the run's summed stage time to its wall time (parallelism).

    python benchmarks/demo_stage_times.py reports/paper_b/latest
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def stage_times(run_dir: Path, render: bool = True) -> pd.DataFrame:
    """One row per executed stage: wall, cells, imports cell, fixed cost, render seconds."""
    from cxrlib.report.execute import render_html

    rows = []
    for sj in sorted((run_dir / "stages").glob("*/stage.json")):
        stage = json.loads(sj.read_text())
        nb_path = run_dir / "notebooks" / f"{sj.parent.name}.ipynb"
        if not nb_path.is_file():
            continue
        nb = json.loads(nb_path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        durations = [float((c.get("metadata", {}).get("papermill") or {}).get("duration") or 0.0) for c in code]
        render_s = float("nan")
        if render:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                render_html(nb_path, Path(tmp) / "x.html")
                render_s = time.perf_counter() - t0
        wall = float(stage.get("seconds") or 0.0)
        rows.append({"stage": sj.parent.name, "wall_s": wall, "cells_s": sum(durations),
                     "imports_cell_s": durations[0] if durations else 0.0,
                     "outside_cells_s": wall - sum(durations), "render_s": render_s})
    return pd.DataFrame(rows)


def idle_slot_seconds(run: dict, jobs: int = 2) -> tuple[float, float]:
    """(run span, seconds x slots with no notebook running) from ``run.json``'s stage start/finish.

    With ``--jobs 2`` on 2 cores, a serial stretch (01_data, source pretraining, 04 -> 05 -> 06)
    leaves one slot idle: what running the two papers side by side could fill.
    """
    import datetime as dt

    spans = [(dt.datetime.fromisoformat(r["started"]), dt.datetime.fromisoformat(r["finished"]))
             for r in (run.get("stages") or {}).values() if r.get("started") and r.get("finished")]
    if not spans:
        return 0.0, 0.0
    events = sorted({t for s in spans for t in s})
    idle = 0.0
    for a, b in zip(events, events[1:]):
        running = sum(1 for s, e in spans if s <= a and e >= b)
        idle += max(0, jobs - running) * (b - a).total_seconds()
    return (events[-1] - events[0]).total_seconds(), idle


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="a finished run folder (reports/<experiment>/<run>)")
    ap.add_argument("--no-render", action="store_true", help="skip re-rendering the HTML")
    args = ap.parse_args(argv)
    run_dir = args.run_dir.resolve()
    df = stage_times(run_dir, render=not args.no_render)
    if df.empty:
        print(f"{run_dir}: no finished stage", file=sys.stderr)
        return 1
    pd.set_option("display.width", 140)
    print(df.round(2).to_string(index=False))
    tot = df[["wall_s", "cells_s", "imports_cell_s", "outside_cells_s", "render_s"]].sum()
    fixed = tot["outside_cells_s"] + tot["imports_cell_s"]
    print(f"\n{len(df)} stages: summed stage time {tot['wall_s']:.1f} s, in cells {tot['cells_s']:.1f} s, "
          f"imports cell {tot['imports_cell_s']:.1f} s, outside cells {tot['outside_cells_s']:.1f} s, "
          f"render {tot['render_s']:.1f} s")
    print(f"fixed cost (outside cells + imports) / summed stage time = {fixed / tot['wall_s']:.2f}")
    run = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    span, idle = idle_slot_seconds(run)
    if span:
        print(f"run span {span:.0f} s (first start to last finish); summed stage time / span = "
              f"{tot['wall_s'] / span:.2f}; idle slot-seconds at --jobs 2: {idle:.0f} "
              f"({idle / (2 * span):.0%} of the 2 x span slot time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
