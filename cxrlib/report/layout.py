"""The run folder: one module owning its paths, ``run.json``, ``stage.json`` and the figure registry.

Layout of one run (``reports/<experiment>/<run_id>/``)::

    run.json                 run id, config hash, status, one record per stage
    config.yaml              the resolved config the notebooks read
    notebooks/<stage>.ipynb  executed notebook (kept, partially executed, when it fails)
    notebooks/<stage>.html   the same rendered by nbconvert
    notebooks/<stage>.log    papermill's log of the stage
    notebooks/<stage>.stderr.log  the kernel's warnings, logging and stderr (not in the notebook)
    stages/<stage>/          everything the stage wrote (models, CSV, JSON, figures)
    stages/<stage>/stage.json  the report stage's record: hash, status, list of its outputs
    stages/<stage>/figures.csv the figure registry: file, caption, key (1 = on the index page)
    stages/.attempts/        earlier unfinished attempts of a stage (moved aside, never deleted)
    index.html               the report

Two resume rules live on a run folder, one per level, and never contradict each other:

- **report stage** (one notebook execution, this module): done when ``stage.json`` says
  ``done`` with the same stage hash and every file it lists still exists
  (:func:`stage_is_done`). Anything else is moved to ``stages/.attempts/`` and re-executed.
- **training stage** (one :func:`cxrlib.experiment.run_stage` call inside a notebook, in a
  sub-folder of the report stage or of ``--out``): done when its ``metrics.json`` exists with
  the same resolved config in ``config.json`` (see :mod:`cxrlib.experiment.stage`).

A report stage that finished contains finished training stages, so the outer rule is enough
for ``cxr run``; the inner rule is what makes a notebook or a benchmark rerun cheap.

Every file here is written atomically with :mod:`cxrlib.io`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io as _stdio
import os
from pathlib import Path
from typing import Any, Mapping

from cxrlib.io import read_json, write_json, write_text
from cxrlib.report.config import canonical_json, config_hash, file_hash
from cxrlib.report.plan import Stage

RUN_FILE = "run.json"
STAGE_FILE = "stage.json"
FIGURES_INDEX = "figures.csv"  # per stage: file, caption, key (1 = shown on the index page)


def now_iso() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


# --------------------------------------------------------------------------- paths
def stage_dir(run_dir: Path, stage_id: str) -> Path:
    """Output folder of a stage."""
    return Path(run_dir) / "stages" / stage_id


def notebook_path(run_dir: Path, stage_id: str, suffix: str = ".ipynb") -> Path:
    """The executed notebook of a stage (``suffix`` ``.html``/``.log``/``.params.yaml`` for the others)."""
    return Path(run_dir) / "notebooks" / f"{stage_id}{suffix}"


# --------------------------------------------------------------------------- run.json / stage.json
def read_run(run_dir: Path) -> dict[str, Any] | None:
    """``run.json`` of a run folder, or None when absent/unreadable."""
    return read_json(Path(run_dir) / RUN_FILE, default=None)


def write_run(run_dir: Path, info: Mapping[str, Any]) -> None:
    write_json(Path(run_dir) / RUN_FILE, info, strict=False)


def read_stage(sdir: Path) -> dict[str, Any] | None:
    return read_json(Path(sdir) / STAGE_FILE, default=None)


def write_stage(sdir: Path, record: Mapping[str, Any]) -> None:
    write_json(Path(sdir) / STAGE_FILE, record, strict=False)


def list_outputs(sdir: Path) -> list[str]:
    """Files a stage wrote (relative to its folder), without ``stage.json``."""
    if not sdir.is_dir():
        return []
    return sorted(str(p.relative_to(sdir)) for p in sdir.rglob("*")
                  if p.is_file() and p.name != STAGE_FILE and ".tmp" not in p.name)


def stage_is_done(sdir: Path, shash: str, notebook_out: Path) -> bool:
    """True when the stage finished with hash ``shash`` and all its outputs still exist."""
    info = read_stage(sdir)
    if not info or info.get("status") != "done" or info.get("hash") != shash:
        return False
    if not notebook_out.is_file():
        return False
    return all((sdir / rel).is_file() for rel in info.get("outputs", []))


def stage_hash(stage: Stage, chash: str, notebook: Path, upstream: Mapping[str, str]) -> str:
    """Hash of what a stage's outputs depend on: config, its parameters, notebook, upstream."""
    body = {
        "config": chash,
        "stage": stage.id,
        "params": stage.params,
        "notebook": file_hash(notebook),
        "upstream": {d: upstream.get(d, "") for d in stage.depends},
    }
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()[:12]


def keep_aside(sdir: Path, out_nb: Path, run_dir: Path) -> Path | None:
    """Move an earlier, unfinished attempt of a stage to ``stages/.attempts/`` (never delete).

    Returns:
        The attempt folder, or None when there was nothing to move.
    """
    leftovers = [p for p in (sdir, out_nb, *(out_nb.with_suffix(x) for x in (".html", ".log", ".stderr.log")))
                 if p.exists()]
    if not leftovers:
        return None
    attempt = run_dir / "stages" / ".attempts" / f"{sdir.name}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    attempt.mkdir(parents=True, exist_ok=True)
    for p in leftovers:
        os.replace(p, attempt / ("outputs" if p == sdir else p.name))
    return attempt


def set_aside_fold(fold_dir: Path, run_dir: Path) -> Path:
    """Move one fold's training stage to ``stages/.attempts/<stage>-<fold>-<time>`` (never delete).

    For a fold restored by :func:`restore_finished_folds` whose training config no longer
    matches (the code's defaults changed between the attempts): it is kept, then retrained.
    """
    fold_dir = Path(fold_dir)
    dest = (Path(run_dir) / "stages" / ".attempts"
            / f"{fold_dir.parent.name}-{fold_dir.name}-{_dt.datetime.now():%Y%m%d-%H%M%S-%f}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(fold_dir, dest)
    return dest


def restore_finished_folds(attempt: Path | None, sdir: Path) -> list[str]:
    """Move the finished training stages of an unfinished attempt back into the new stage folder.

    A ``03_transfer`` notebook trains one fold per sub-folder; a sub-folder with ``metrics.json``
    and ``config.json`` is a finished training stage, which :mod:`cxrlib.experiment.stage` reads
    back (same config) instead of retraining: so a strategy interrupted at fold 4 resumes there.
    A restored fold whose config differs is set aside and retrained (:func:`set_aside_fold`,
    called by :func:`cxrlib.report.transfer.train_folds`). Returns the restored sub-folders' names.
    """
    outputs = attempt / "outputs" if attempt else None
    if outputs is None or not outputs.is_dir():
        return []
    restored = []
    for sub in sorted(outputs.iterdir()):
        if sub.is_dir() and (sub / "metrics.json").is_file() and (sub / "config.json").is_file():
            os.replace(sub, sdir / sub.name)
            restored.append(sub.name)
    return restored


# --------------------------------------------------------------------------- choosing the run folder
def new_run_id(base: Path, smoke: bool = False) -> str:
    """A fresh run id ``YYYYmmdd-HHMMSS[-smoke]`` that does not exist under ``base``."""
    stem = _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + ("-smoke" if smoke else "")
    run_id, n = stem, 2
    while (base / run_id).exists():
        run_id, n = f"{stem}-{n}", n + 1
    return run_id


def find_resumable(base: Path, chash: str) -> Path | None:
    """The most recent run under ``base`` made from the config with hash ``chash``."""
    if not base.is_dir():
        return None
    runs = []
    for d in base.iterdir():
        info = read_run(d) if d.is_dir() and not d.is_symlink() else None
        if info and info.get("config_hash") == chash:
            runs.append((info.get("created", ""), d))
    return max(runs)[1] if runs else None


def choose_run_dir(out: Path, cfg: Mapping[str, Any], run_id: str | None = None,
                   force: bool = False) -> tuple[Path, bool]:
    """Pick the run folder: resume the same-config run, or make a new one.

    Args:
        out: reports root (``reports``); runs go to ``out/<experiment>/<run_id>``.
        cfg: resolved config.
        run_id: explicit run id. Resumed if it exists with the same config hash; an existing
            run of another config is refused (runs are never overwritten).
        force: always start a new run (all stages executed).

    Returns:
        (run folder, True if an existing run is resumed).
    """
    base = out / str(cfg["name"])
    chash = config_hash(cfg)
    if run_id:
        run_dir = base / run_id
        info = read_run(run_dir)
        if run_dir.exists() and (info is None or info.get("config_hash") != chash):
            raise ValueError(
                f"run {run_dir} exists and was made from another config "
                f"(hash {info.get('config_hash') if info else 'unknown'}, now {chash}); "
                "runs are never overwritten: choose another --run-id or omit it")
        if run_dir.exists() and force:
            raise ValueError(f"--force starts a new run; {run_dir} exists: omit --run-id")
        return run_dir, run_dir.exists()
    if not force:
        found = find_resumable(base, chash)
        if found is not None:
            return found, True
    return base / new_run_id(base, bool(cfg.get("smoke"))), False


def update_latest_link(run_dir: Path) -> None:
    """Point ``reports/<experiment>/latest`` at this run (relative symlink; best effort)."""
    link = run_dir.parent / "latest"
    try:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(run_dir.name, target_is_directory=True)
    except OSError:
        pass


# --------------------------------------------------------------------------- figure registry
def register_figure(sdir: Path, path: Path, caption: str, key: bool) -> None:
    """Add or replace a figure's row in the stage's ``figures.csv``."""
    rel = str(path.relative_to(sdir))
    rows = [r for r in read_figures(sdir) if r["file"] != rel]
    rows.append({"file": rel, "caption": caption, "key": "1" if key else "0"})
    buf = _stdio.StringIO()
    w = csv.DictWriter(buf, fieldnames=["file", "caption", "key"], lineterminator="\r\n")
    w.writeheader()
    w.writerows(rows)
    write_text(sdir / FIGURES_INDEX, buf.getvalue())


def read_figures(sdir: Path) -> list[dict[str, str]]:
    """Rows of a stage's ``figures.csv`` (empty when it has none)."""
    index = Path(sdir) / FIGURES_INDEX
    if not index.is_file():
        return []
    with open(index, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
