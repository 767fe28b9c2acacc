"""Where ``cxr`` finds its notebooks, the experiment configs and the reports folder.

The notebooks (``01_data.ipynb`` ... ``06_summary.ipynb``) and the shipped experiment configs
(``paper_a.yaml``, ``paper_b.yaml``, ``*_real.yaml``) are package data of cxrlib
(``cxrlib/notebooks/`` and ``cxrlib/notebooks/experiments/``), so ``cxr run paper_a`` works
after ``pip install cxrlib`` from any directory, not only in a source checkout.

Experiment names are looked up on a search path, first hit wins:

1. folders given with ``cxr run --experiments-dir DIR`` (repeatable),
2. folders in ``CXR_EXPERIMENTS_PATH`` (separated like ``PATH``),
3. the packaged ``cxrlib/notebooks/experiments/``.

A path to an existing YAML file is always used as is (``cxr run my/config.yaml``).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

EXPERIMENTS_PATH_ENV = "CXR_EXPERIMENTS_PATH"
REPORTS_ENV = "CXR_REPORTS_DIR"


def notebooks_dir() -> Path:
    """The packaged notebooks folder (``cxrlib/notebooks``; a real folder for papermill)."""
    return Path(str(resources.files("cxrlib").joinpath("notebooks")))


def packaged_experiments_dir() -> Path:
    """The folder of the experiment configs shipped with cxrlib."""
    return notebooks_dir() / "experiments"


def experiment_search_path(extra: Iterable[str | os.PathLike] | None = None) -> list[Path]:
    """The folders searched for an experiment name, in order (see the module docstring).

    Args:
        extra: folders given on the command line (``--experiments-dir``), searched first.
    """
    dirs = [Path(d) for d in (extra or [])]
    env = os.environ.get(EXPERIMENTS_PATH_ENV, "")
    dirs += [Path(d) for d in env.split(os.pathsep) if d]
    dirs.append(packaged_experiments_dir())
    return dirs


def known_experiments(search_path: Sequence[Path]) -> list[str]:
    """Names (file stems) of every experiment YAML on ``search_path``, first hit per name."""
    names: dict[str, None] = {}
    for d in search_path:
        if d.is_dir():
            for p in sorted(d.glob("*.yaml")):
                names.setdefault(p.stem, None)
    return list(names)


def resolve_experiment(name_or_path: str | os.PathLike,
                       extra_dirs: Iterable[str | os.PathLike] | None = None) -> Path:
    """A YAML path as given, or a bare name (``paper_a``) found on the search path.

    Raises:
        FileNotFoundError: naming every folder searched and the experiments found there.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    search = experiment_search_path(extra_dirs)
    stem = str(name_or_path).removesuffix(".yaml")
    for d in search:
        candidate = d / f"{stem}.yaml"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"experiment {str(name_or_path)!r} not found: not a YAML file, and no {stem}.yaml in "
        f"{', '.join(str(d) for d in search)} (known: {', '.join(known_experiments(search)) or 'none'}; "
        f"add folders with --experiments-dir or {EXPERIMENTS_PATH_ENV})")


def reports_root(start: str | os.PathLike | None = None) -> Path:
    """Reports folder for interactive notebook runs (``<root>/interactive/...``).

    ``CXR_REPORTS_DIR`` when set; else the nearest ``reports/`` folder in ``start`` (default
    the current folder) or one of its parents (a source checkout has one); else
    ``./reports``. Never the installed package's folder.
    """
    if os.environ.get(REPORTS_ENV):
        return Path(os.environ[REPORTS_ENV]).resolve()
    here = Path(start or Path.cwd()).resolve()
    package = Path(str(resources.files("cxrlib"))).resolve()
    for d in (here, *here.parents):
        if (d / "reports").is_dir() and not (d / "reports").resolve().is_relative_to(package):
            return d / "reports"
    if here.is_relative_to(package):  # a notebook opened from the installed package
        return Path.home() / "cxr-reports"
    return here / "reports"


def shown_path(path: str | os.PathLike) -> str:
    """A path as a user would type it: relative to the current folder when inside it."""
    if not path:
        return ""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
