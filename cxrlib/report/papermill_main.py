"""``python -m cxrlib.report.papermill_main ARGS``: papermill's command line, started lighter.

Every stage of ``cxr run`` is one papermill process (:func:`cxrlib.report.execute.execute_stage`),
so its start-up is paid once per notebook (29 times for ``cxr demo``). Most of papermill's
import time is not papermill: ``nbformat`` imports ``jsonschema``, whose optional IRI format
checker imports ``rfc3987_syntax``, which builds a Lark grammar at import (about 1.2 of the
1.6 CPU-seconds of ``import papermill`` on this project's 2-core machine;
``benchmarks/bench_notebook_overhead.py`` measures it). The notebook schemas of nbformat use no
``format`` keyword, so marking that optional module absent changes no validation; papermill,
nbclient and the kernel run unchanged.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Run papermill's command line (``papermill.cli.papermill``) with ``sys.argv``."""
    # jsonschema treats an absent rfc3987_syntax as "IRI formats not checked" (try/except ImportError)
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    from papermill.cli import papermill

    papermill(prog_name="papermill")


if __name__ == "__main__":
    main()
