"""The real-data report in a browser: internal vs external, source classifier, shortcut verdict.

One module-scoped run of ``cxr run paper_a_real --data ../shared/data --smoke`` (NIH sample +
Cohen COVID-19 collection for training, Figure 1 and the held-out Cohen non-COVID rows as
external collections; about 5-9 minutes on 2 cores), then headless Chromium renders
``index.html``. Set ``CXR_TEST_REAL_REPORTS`` to the ``--out`` folder of an earlier such run to
check it instead of running again. Skips cleanly without ``../shared/data`` or Chromium.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from bs4 import BeautifulSoup

from test_demo import CHROMIUM_FLAGS, _chromium  # tests/report is on sys.path (rootdir conftest)

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]
EXPERIMENT = "paper_a_real"


@pytest.fixture(scope="module")
def real_run(shared_data, tmp_path_factory) -> Path:
    """The run folder of ``cxr run paper_a_real --smoke`` on the shared sample."""
    given = os.environ.get("CXR_TEST_REAL_REPORTS")
    if given:
        out = Path(given)
    else:
        for folder in ("nih-chestxray14-sample", "covid-chestxray-dataset"):
            if not (shared_data / folder).is_dir():
                pytest.skip(f"{shared_data / folder} not found")
        from cxrlib.cli import main

        out = tmp_path_factory.mktemp("real_reports")
        code = main(["run", EXPERIMENT, "--data", str(shared_data), "--smoke", "--out", str(out)])
        assert code == 0, f"cxr run {EXPERIMENT} --smoke failed (exit {code}); see {out}"
    runs = [d for d in (out / EXPERIMENT).iterdir() if d.is_dir() and not d.is_symlink()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="module")
def dom(real_run: Path, tmp_path_factory) -> BeautifulSoup:
    """``index.html`` as headless Chromium built it (after the page's scripts ran)."""
    profile = tmp_path_factory.mktemp("chromium")

    def browse(*args: str) -> str:  # one headless Chromium call on the page, its stdout
        cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, (real_run / "index.html").as_uri()]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=180).stdout

    shot = real_run / "index_screenshot.png"  # for a human look at the page
    browse("--window-size=1280,3200", f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 10_000
    out = browse("--virtual-time-budget=5000", "--dump-dom")
    return BeautifulSoup(out, "html.parser")


def _table(soup: BeautifulSoup, css: str) -> list[dict[str, str]]:
    t = soup.select_one(css)
    assert t is not None, f"{css} missing from index.html"
    rows = t.find_all("tr")
    head = [c.get_text(strip=True) for c in rows[0].find_all(["th", "td"])]
    return [dict(zip(head, (c.get_text(" ", strip=True) for c in r.find_all("td")))) for r in rows[1:]]


def test_external_section_next_to_internal(dom: BeautifulSoup, real_run: Path):
    import json

    rec = json.loads((real_run / "stages" / "07_external" / "external.json").read_text())
    rows = _table(dom, "#external-headline")
    assert rows and all(r.get("model") for r in rows)
    cols = " ".join(rows[0])
    assert "internal" in cols and "figure1" in cols and "cohen_non_covid" in cols, cols
    # one headline row per trained model (strategy x fold), with a number in the internal column
    internal = next(c for c in rows[0] if "internal" in c)
    assert all(r[internal] not in ("", "nan") for r in rows)
    assert len(rows) == len({s["model"] for s in rec["summary"]})


def test_source_classifier_figure_and_sentence(dom: BeautifulSoup):
    text = dom.select_one("#source-classifier").get_text(" ", strip=True)
    assert "majority baseline" in text
    figs = [f for f in dom.select("figure") if "Source classifier" in f.get_text()]
    assert figs, "source classifier figure missing from the key figures"
    assert figs[0].img.get("data-loaded") == "ok"


def test_verdict_table_and_warnings(dom: BeautifulSoup, real_run: Path):
    import json

    from cxrlib.explain.shortcuts import VERDICTS

    rows = _table(dom, "#shortcut-verdicts")
    assert rows and {r["shortcut verdict"] for r in rows} <= set(VERDICTS)
    assert all("control" in r["evidence"] for r in rows)  # the border ablation is judged against its control
    rec = json.loads((real_run / "stages" / "07_external" / "external.json").read_text())
    crossed = [w for w in rec.get("warnings", []) if w.get("kind") != "too_few"]
    box = dom.select_one("#external-warnings")
    if crossed:  # every threshold crossing of the stage's record is on the page
        assert box is not None
        shown = box.get_text(" ", strip=True)
        assert all(w["message"] in shown for w in crossed)
    else:
        assert box is None or all(w.get("kind") == "too_few" for w in rec.get("warnings", []))


def test_no_broken_links_or_images(dom: BeautifulSoup, real_run: Path):
    assert dom.body.get("data-images-checked") == "1"
    states = {i["src"]: i.get("data-loaded") for i in dom.find_all("img", src=True)}
    assert states and all(v == "ok" for v in states.values()), states
    refs = [i["src"] for i in dom.find_all("img", src=True)] + [a["href"] for a in dom.find_all("a", href=True)]
    local = [r for r in refs if not urlparse(r).scheme and not r.startswith("#")]
    missing = [r for r in local if not (real_run / unquote(r)).is_file()]
    assert local and not missing, missing
    assert dom.select_one("#run-status").get_text() == "complete"


def test_no_warning_or_stderr_block_in_rendered_notebooks(real_run: Path):
    import nbformat

    notebooks = sorted((real_run / "notebooks").glob("*.ipynb"))
    assert any(p.name.startswith("07") for p in notebooks), [p.name for p in notebooks]
    for nb_path in notebooks:
        nb = nbformat.read(str(nb_path), as_version=4)
        noisy = [o.get("text", "")[:200] for c in nb.cells for o in c.get("outputs", [])
                 if o.get("output_type") == "stream" and o.get("name") == "stderr"]
        assert not noisy, (nb_path.name, noisy)
