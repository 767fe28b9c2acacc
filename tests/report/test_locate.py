"""Notebooks and experiment configs are package data, found by name from any folder."""

from __future__ import annotations

import pytest

from cxrlib.report import locate
from cxrlib.report.cli import resolve_experiment


def test_packaged_notebooks_and_experiments():
    nb = locate.notebooks_dir()
    assert (nb / "01_data.ipynb").is_file() and (nb / "06_summary.ipynb").is_file()
    names = locate.known_experiments(locate.experiment_search_path())
    assert {"paper_a", "paper_b", "paper_a_real", "paper_b_real"} <= set(names)


def test_resolve_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(locate.EXPERIMENTS_PATH_ENV, raising=False)
    path = resolve_experiment("paper_b")
    assert path == locate.packaged_experiments_dir() / "paper_b.yaml"


def test_search_path_order_and_paths(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    (first / "paper_a.yaml").write_text("name: mine\n")
    (second / "custom.yaml").write_text("name: custom\n")
    monkeypatch.setenv(locate.EXPERIMENTS_PATH_ENV, str(second))
    assert resolve_experiment("paper_a", [first]) == first / "paper_a.yaml"  # --experiments-dir wins
    assert resolve_experiment("custom") == second / "custom.yaml"             # then the env path
    assert resolve_experiment(str(second / "custom.yaml")) == second / "custom.yaml"  # a path as is
    with pytest.raises(FileNotFoundError, match="nothere.*second.*custom"):
        resolve_experiment("nothere")


def test_interactive_reports_root(tmp_path, monkeypatch):
    monkeypatch.delenv(locate.REPORTS_ENV, raising=False)
    (tmp_path / "reports").mkdir()
    (tmp_path / "sub").mkdir()
    assert locate.reports_root(tmp_path / "sub") == tmp_path / "reports"
    monkeypatch.setenv(locate.REPORTS_ENV, str(tmp_path / "elsewhere"))
    assert locate.reports_root(tmp_path / "sub") == tmp_path / "elsewhere"
