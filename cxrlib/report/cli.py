"""``cxr run`` and ``cxr demo``: execute experiments' notebooks and write their HTML reports."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cxrlib._text import parse_key_values

DEMO_EXPERIMENTS: tuple[str, ...] = ("paper_a", "paper_b")


def resolve_experiment(name_or_path: str, extra_dirs=None) -> Path:
    """A YAML path, or a bare name (``paper_a``) on the experiment search path.

    See :func:`cxrlib.report.locate.resolve_experiment` (``--experiments-dir``,
    ``CXR_EXPERIMENTS_PATH``, then the configs shipped in ``cxrlib/notebooks/experiments``).
    """
    from cxrlib.report.locate import resolve_experiment as _resolve

    return _resolve(name_or_path, extra_dirs)


def _parse_sets(items: list[str] | None) -> dict[str, str]:
    return parse_key_values(items, "--set", "transfer.train.epochs=3")


def _dataset_sets(items: list[str] | None) -> dict[str, str]:
    """``--dataset nih=/mnt/nih`` as the config override ``data.datasets.nih`` (absolute path, YAML-quoted)."""
    import json
    import os

    from cxrlib.data.adapters.collections import parse_datasets

    return {f"data.datasets.{k}": json.dumps(os.path.abspath(v)) for k, v in parse_datasets(items).items()}


def _run(experiments: list[str], args: argparse.Namespace) -> int:
    from cxrlib.report.config import ConfigError
    from cxrlib.report.runner import RunFailed, RunInterrupted, run_experiments

    try:
        results = run_experiments(
            [resolve_experiment(e, getattr(args, "experiments_dir", None)) for e in experiments], out=args.out,
            data_root=getattr(args, "data", None),
            smoke=args.smoke, force=args.force, run_id=getattr(args, "run_id", None),
            overrides={**_parse_sets(getattr(args, "set", None)), **_dataset_sets(getattr(args, "dataset", None))},
            only=getattr(args, "only", None),
            jobs=args.jobs,
        )
    except RunInterrupted as exc:
        stopped = f" (stopped: {', '.join(exc.stopped)})" if exc.stopped else ""
        print(f"\ncxr run: interrupted{stopped}; finished stages are kept, run the same command "
              f"again to resume {exc.run_dir}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\ncxr run: interrupted", file=sys.stderr)
        return 130
    except RunFailed as exc:
        print(f"\nRUN FAILED: {exc}\nreport: {exc.run_dir / 'index.html'}", file=sys.stderr)
        return 1
    except (ConfigError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"cxr run: error: {exc}", file=sys.stderr)
        return 2
    for result in results:
        print(result.index)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    return _run([args.experiment], args)


def cmd_demo(args: argparse.Namespace) -> int:
    """Both papers side by side, sharing the ``--jobs`` notebook slots (one report each)."""
    t0 = time.monotonic()
    code = _run(list(DEMO_EXPERIMENTS), args)
    if not code:
        print(f"cxr demo: both papers' experiments done in {time.monotonic() - t0:.0f} s; "
              f"reports under {Path(args.out).resolve()}", file=sys.stderr)
    return code


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="reports", help="reports root (default: reports)")
    p.add_argument("--smoke", action="store_true",
                   help="CI-sized run: apply the config's `smoke:` overrides (tiny data, 1 epoch, 2 folds)")
    p.add_argument("--force", action="store_true",
                   help="start a new run and execute every stage (default: resume the run of the same config)")
    p.add_argument("--experiments-dir", action="append", metavar="DIR",
                   help="folder searched first for experiment names (repeatable; also "
                        "CXR_EXPERIMENTS_PATH; then the configs shipped with cxrlib)")
    p.add_argument("--jobs", type=int, default=2, metavar="N",
                   help="notebooks executed side by side when independent (the strategies' fan-out; "
                        "in `cxr demo` shared by both papers); "
                        "default 2: much of a small stage is single-threaded (kernel start, imports, "
                        "graph building), so two overlap well on 2 cores")


def register(subparsers) -> None:
    """Add ``run`` and ``demo`` to the ``cxr`` command."""
    p = subparsers.add_parser(
        "run", help="execute an experiment's notebooks (papermill) and write its HTML report",
        description="Execute the experiment's notebooks in dependency order (one executed notebook "
                    "per strategy and fold), render them to HTML and write "
                    "OUT/<experiment>/<run>/index.html. A rerun of the same config resumes its run, "
                    "skipping stages whose outputs exist.")
    p.add_argument("experiment", help="experiment YAML, or a name on the search path (shipped: paper_a, "
                                      "paper_b, paper_a_real, paper_b_real)")
    p.add_argument("--data", metavar="ROOT", help="root folder of the public datasets (real-data configs)")
    p.add_argument("--dataset", action="append", metavar="COLLECTION=PATH",
                   help="folder of one collection stored elsewhere or under another name, e.g. nih=/mnt/nih "
                        "(repeatable; default: found under --data by its published folder names)")
    _common(p)
    p.add_argument("--run-id", help="resume or create this run id (never overwrites another config's run)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set transfer.epochs=3 (repeatable)")
    p.add_argument("--only", action="append", metavar="STAGE",
                   help="run only stages whose id starts with STAGE (and their dependencies); repeatable")
    p.set_defaults(func=cmd_run)

    d = subparsers.add_parser(
        "demo", help="run both papers' experiments on the embedded phantom data (what `make demo` does)",
        description="Runs the shipped experiments paper_a and paper_b on generated phantom "
                    "radiographs and writes their HTML reports.")
    _common(d)
    d.set_defaults(func=cmd_demo)
