"""Fixed cost of one notebook execution under ``cxr run``: ``python -m papermill`` vs the runner's
lighter start (:mod:`cxrlib.report.papermill_main`), both measured in this run.

Executes a 3-cell notebook (parameters, ``import pandas``, a print) ``--repeat`` times with each
command and prints the CPU seconds (user + system of the child processes: papermill and its
kernel) per execution and their ratio. The demo executes 29 notebooks, so the saving per
notebook is paid 29 times.

    python benchmarks/bench_notebook_overhead.py --repeat 3
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("import pandas as pd"), nbformat.v4.new_code_cell("print(x)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(module: str, nb: Path, out: Path, repeat: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per execution of ``python -m module nb out``."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    cpu0, t0 = _children_cpu(), time.perf_counter()
    for _ in range(repeat):
        subprocess.run([sys.executable, "-m", module, str(nb), str(out), "-p", "x", "2", "--no-progress-bar",
                        "-k", "python3"], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (_children_cpu() - cpu0) / repeat, (time.perf_counter() - t0) / repeat


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        nb, out = Path(tmp) / "tiny.ipynb", Path(tmp) / "out.ipynb"
        _notebook(nb)
        measure("cxrlib.report.papermill_main", nb, out, 1)  # warm the file cache once
        base_cpu, base_wall = measure("papermill", nb, out, args.repeat)
        new_cpu, new_wall = measure("cxrlib.report.papermill_main", nb, out, args.repeat)
    print(f"python -m papermill:                 {base_cpu:.2f} CPU-s, {base_wall:.2f} s wall per notebook")
    print(f"python -m cxrlib.report.papermill_main: {new_cpu:.2f} CPU-s, {new_wall:.2f} s wall per notebook")
    print(f"CPU ratio baseline/new = {base_cpu / new_cpu:.2f}; saved per notebook {base_cpu - new_cpu:.2f} CPU-s, "
          f"x 29 demo notebooks = {29 * (base_cpu - new_cpu):.0f} CPU-s")
    print("load average:", " ".join(f"{v:.2f}" for v in os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
