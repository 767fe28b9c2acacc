"""Run at the start of every notebook kernel of ``cxr run``: library noise goes to the stage log.

Executed from the IPython startup file that :func:`cxrlib.report.execute.execute_stage` writes
(``notebooks/.ipython/profile_default/startup/``), before the notebook's first cell. Python
warnings (TensorFlow deprecations, iNNvestigate dtype notes, tqdm's "IProgress not found"),
``logging`` records and anything written to ``sys.stderr`` (tqdm bars, absl) are appended to
``notebooks/<stage>.stderr.log`` -- the file the index page links as the stage's log -- instead
of appearing as output blocks in the rendered notebook. Cell errors are unaffected: a failing
cell still shows its traceback in the notebook.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

LOG_ENV = "CXR_STAGE_LOG"


def route_noise(log_path: str | os.PathLike | None = None) -> None:
    """Send warnings, logging and ``sys.stderr`` of this process to ``log_path`` (append).

    Args:
        log_path: the stage's log file (default: ``$CXR_STAGE_LOG``; nothing happens without it).
    """
    log_path = log_path or os.environ.get(LOG_ENV)
    if not log_path:
        return
    stream = open(log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (lives with the kernel)

    def showwarning(message, category, filename, lineno, file=None, line=None):
        stream.write(warnings.formatwarning(message, category, filename, lineno, line))

    warnings.showwarning = showwarning
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr = stream
