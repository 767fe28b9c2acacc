"""The run's report page ``reports/<experiment>/<run>/index.html``.

It only reads what the run wrote: ``run.json`` (stages, status, timings), ``config.yaml``,
the result tables of the summary stage (see :mod:`cxrlib.report.results`) and each stage's ``figures.csv``.
Every number printed in a table carries its exact value in a ``data-value`` attribute, so a
test can check the page against the CSVs. Links and images are relative (the folder can be
moved or zipped).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import jinja2
import yaml

from cxrlib.explain.scoring import LANDS_MASS, LANDS_POINTING, lands
from cxrlib.io import write_text
from cxrlib.report.locate import shown_path
from cxrlib.report.layout import read_figures, read_run
from cxrlib.report.results import (CLAIMS_TABLE, LOCALISATION_TABLE, RESULTS_STAGE, VERDICT_TABLE, format_mean_std,
                                   init_chains, read_results)

# Columns of summary.csv shown in the strategy table, in this order when present.
SUMMARY_METRICS: tuple[str, ...] = (
    "accuracy", "macro_f1", "weighted_f1", "roc_auc_macro", "covid19_sensitivity",
    "covid19_specificity",
)

TEMPLATE = jinja2.Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ title }} – run {{ run_id }}</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1150px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em} th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:.1em .5em;border-radius:.4em;font-size:.85em;font-weight:600}
.complete,.done{background:#d8f3dc;color:#1b4332} .failed{background:#ffd6d6;color:#7a0000}
.running,.partial,.pending{background:#fff3c4;color:#6b4f00} .skipped{background:#e7ecf5;color:#243b63}
.diff{background:#ffe8cc;color:#7a3e00} .same{background:#d8f3dc;color:#1b4332}
.meta{color:#555;font-size:.9em} pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:1em}
figure{margin:0;border:1px solid #e3e3e3;padding:.5em;background:#fff} figure img{max-width:100%;height:auto}
figcaption{font-size:.85em;color:#444;margin-top:.3em}
.error{border:2px solid #c00;background:#fff5f5;padding:.6em 1em}
</style></head>
<body>
<h1>{{ title }}</h1>
<p class="meta">experiment <b>{{ experiment }}</b> · run <b>{{ run_id }}</b> ·
status <span class="badge {{ status }}" id="run-status">{{ status }}</span> ·
config hash <code>{{ config_hash }}</code>{% if smoke %} · <span class="badge partial">smoke-sized</span>{% endif %} ·
created {{ created }} · data: {{ data_text }}</p>
{% if paper_citation %}<p class="meta">Reproduces: {{ paper_citation }}{% if paper_url %} (<a href="{{ paper_url }}">{{ paper_url }}</a>){% endif %}</p>{% endif %}

{% if failure %}<div class="error" id="failure"><b>Stage {{ failure.stage }} failed.</b>
The partially executed notebook is kept: <a href="{{ failure.html }}">{{ failure.html }}</a>
<pre>{{ failure.error }}</pre></div>{% endif %}

<h2>Published figures vs this run</h2>
{% if comparison %}
<table id="paper-comparison"><tr><th>paper</th><th>claim</th><th>protocol</th><th>metric</th>
<th>published</th><th>strategy here</th><th>this run</th><th>folds / sets</th><th>data</th></tr>
{% for r in comparison %}<tr>
<td>{{ r.paper }}</td><td>{{ r.claim }}</td><td>{{ r.protocol }}</td><td>{{ r.metric }}</td>
<td class="num" data-col="published" data-value="{{ r.published }}" data-std="{{ r.published_std }}">{{ r.published_text }}</td>
<td>{{ r.strategy }}</td>
<td class="num" data-col="this_run" data-value="{{ r.this_run }}" data-std="{{ r.this_run_std }}">{{ r.this_run_text }}</td>
<td class="num">{{ r.n }}</td>
<td>{% if r.same_data %}<span class="badge same">same data as the paper</span>{% else %}<span class="badge diff">different data</span>{% endif %}
{{ r.data }}{% if r.note %}<br><i>{{ r.note }}</i>{% endif %}</td></tr>
{% endfor %}</table>
<p class="meta">Published figures are the papers' own, measured on their data; a number from different data
is not a replication of that figure, only of the method.</p>
{% else %}<p>No comparison yet (the summary notebook has not run).</p>{% endif %}

<h2>Strategies on this run</h2>
{% if summary_rows %}
<table id="strategy-summary"><tr><th>strategy</th>{% for m in summary_metrics %}<th>{{ m }}</th>{% endfor %}<th>n</th><th>initialisation</th></tr>
{% for row in summary_rows %}<tr><td>{{ row.strategy }}</td>
{% for c in row.cells %}<td class="num" data-metric="{{ c.metric }}" data-value="{{ c.mean }}" data-std="{{ c.std }}">{{ c.text }}</td>{% endfor %}
<td class="num">{{ row.n }}</td><td class="init" data-col="initialisation">{{ row.init }}</td></tr>{% endfor %}</table>
<p class="meta">mean ± sample standard deviation over folds (hold-out: one test set, no std).
Initialisation: what each strategy actually started from, read from its stages' config.json.
Full tables: {% for name in result_files %}<a href="{{ name }}">{{ name }}</a> {% endfor %}</p>
{% else %}<p>No results yet.</p>{% endif %}

{% if claims %}<h2>The papers' claims, tested on this run</h2>
<table id="claims"><tr><th>paper</th><th>claim</th><th>statistic</th><th>a vs b</th><th>difference ± spread</th>
<th>p</th><th>a ahead</th><th>verdict</th></tr>
{% for c in claims %}<tr><td>{{ c.paper }}</td><td>{{ c.claim }}</td><td>{{ c.statistic }}</td><td>{{ c.a }} vs {{ c.b }}</td>
<td class="num" data-col="difference" data-value="{{ c.difference }}">{{ c.difference_text }}</td>
<td class="num" data-col="p_value" data-value="{{ c.p_value }}">{{ c.p_text }}</td><td class="num">{{ c.wins }}</td>
<td>{% if c.supported %}<span class="badge same">{{ c.direction }}</span>{% else %}<span class="badge diff">{{ c.direction }}</span>{% endif %}{% if c.note %}<br><i>{{ c.note }}</i>{% endif %}</td></tr>
{% endfor %}</table>
<p class="meta">Each claim as a paired test over the folds ({{ claims_test }}); notebook 4 explains each statistic and
notebook 6 sets it beside the paper's wording. Table: <a href="stages/{{ claims_table }}">claims.csv</a>.</p>{% endif %}

{% if localisation %}<h2>Where the models look: heatmaps against the lesion masks</h2>
<table id="localisation"><tr><th>model</th><th>method</th><th>relevance mass inside the lesion</th><th>× chance</th>
<th>pointing game</th><th>images</th><th>lands</th></tr>
{% for r in localisation %}<tr><td>{{ r.model }}</td><td>{{ r.method }}</td>
<td class="num" data-col="mass_inside" data-value="{{ r.mass }}">{{ r.mass_text }}</td>
<td class="num" data-col="x_chance" data-value="{{ r.x_chance }}">{{ r.x_chance_text }}</td>
<td class="num" data-col="pointing_game" data-value="{{ r.pointing }}">{{ r.pointing_text }}</td><td class="num">{{ r.n }}</td>
<td data-col="lands">{% if r.lands %}<span class="badge same">yes</span>{% else %}<span class="badge diff">no</span>{% endif %}</td></tr>
{% endfor %}</table>
<p class="meta">Chance = the share of the image the lesion masks cover (a map spread evenly scores it); pointing
game = share of images whose heatmap maximum falls inside the lesion; a map lands with at least
{{ lands_mass }}x chance inside and a pointing game of at least {{ lands_pointing }}. Table:
<a href="stages/{{ localisation_table }}">scores_summary.csv</a>; maps and failure cases in notebook 5.</p>{% endif %}
{% if verdicts and not (external and external.verdicts) %}<table id="shortcut-verdicts"><tr><th>model</th><th>shortcut verdict</th><th>evidence</th></tr>
{% for v in verdicts %}<tr><td>{{ v.model }}</td><td><b>{{ v.verdict }}</b></td><td>{{ v.evidence }}</td></tr>{% endfor %}</table>
<p class="meta">Shortcut audit (notebook 5): relevance on the text / border regions combined with the predictions
that change when the region is masked, against a same-size control region.</p>{% endif %}

{% if external %}<h2>Internal vs external validation</h2>
{% if external.headline %}<table id="external-headline"><tr>{% for c in external.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in external.headline %}<tr>{% for c in external.columns %}<td{% if c != "model" %} class="num"{% endif %}>{{ r[c] }}</td>{% endfor %}</tr>{% endfor %}</table>
<p class="meta">accuracy: internal = the model's own test fold; each external collection = images never trained on
(overlap with the training data removed{% if external.removed %}: {{ external.removed }}{% endif %}), bootstrap 95 % CI.
Tables: <a href="stages/07_external/summary.csv">summary</a>, <a href="stages/07_external/per_class.csv">per class</a>,
<a href="stages/07_external/gaps.csv">gaps</a>, <a href="stages/07_external/predicted.csv">predicted</a>.</p>
{% else %}<p>No external collection was found or configured (<code>external:</code> block): internal results only.</p>{% endif %}
{% if external.warnings %}<div class="error" id="external-warnings"><b>External validation warnings</b><ul>
{% for w in external.warnings %}<li>{{ w.message }}</li>{% endfor %}</ul></div>{% endif %}
{% if external.source %}<p id="source-classifier"><b>Source classifier:</b> {{ external.source }}</p>{% endif %}
{% if external.verdicts %}<table id="shortcut-verdicts"><tr><th>model</th><th>shortcut verdict</th><th>evidence</th></tr>
{% for v in external.verdicts %}<tr><td>{{ v.model }}</td><td><b>{{ v.verdict }}</b></td><td>{{ v.evidence }}</td></tr>{% endfor %}</table>{% endif %}
{% endif %}

<h2>Key figures</h2>
{% if figures %}<div class="figs">
{% for f in figures %}<figure><a href="{{ f.link }}"><img src="{{ f.src }}" alt="{{ f.caption }}"></a>
<figcaption>{{ f.caption }} <span class="meta">({{ f.stage }})</span></figcaption></figure>
{% endfor %}</div>{% else %}<p>No figures yet.</p>{% endif %}

<h2>Notebooks</h2>
<table id="notebooks"><tr><th>#</th><th>stage</th><th>what it does</th><th>status</th><th>seconds</th><th>rendered</th><th>executed notebook</th><th>log</th></tr>
{% for s in stages %}<tr><td>{{ loop.index }}</td><td>{{ s.id }}</td><td>{{ s.label }}</td>
<td><span class="badge {{ s.status }}">{{ s.status }}</span></td><td class="num">{{ s.seconds }}</td>
<td>{% if s.html %}<a href="{{ s.html }}">HTML</a>{% endif %}</td><td>{% if s.ipynb %}<a href="{{ s.ipynb }}">.ipynb</a>{% endif %}</td>
<td>{% if s.log %}<a href="{{ s.log }}" title="warnings and stderr of the notebook's kernel">log</a>{% endif %}</td></tr>
{% endfor %}</table>

<h2>Configuration</h2>
<details><summary>resolved config (<a href="config.yaml">config.yaml</a>)</summary><pre>{{ config_text }}</pre></details>
<p class="meta">Written by cxrlib {{ version }} · <code>cxr run {{ config_file }}</code></p>
<script>
// Mark each image as loaded or broken once the page has loaded (read by the browser test).
window.addEventListener("load", function () {
  document.querySelectorAll("img").forEach(function (im) {
    im.dataset.loaded = (im.complete && im.naturalWidth > 0) ? "ok" : "broken";
  });
  document.body.dataset.imagesChecked = "1";
});
</script>
</body></html>
""", autoescape=True)


def _num(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(f) else repr(f)


def _stage_rows(run_dir: Path, info: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    records = info.get("stages", {})
    for sid in info.get("plan", list(records)):
        rec = records.get(sid, {})
        html_rel, nb_rel = f"notebooks/{sid}.html", f"notebooks/{sid}.ipynb"
        log_rel = f"notebooks/{sid}.stderr.log"
        status = rec.get("status", "pending")
        if rec.get("skipped_at") and status == "done":
            status = "done"
        rows.append({
            "id": sid, "label": rec.get("label") or info.get("labels", {}).get(sid, ""), "status": status,
            "seconds": rec.get("seconds", ""),
            "html": html_rel if (run_dir / html_rel).is_file() else "",
            "ipynb": nb_rel if (run_dir / nb_rel).is_file() else "",
            "log": log_rel if (run_dir / log_rel).is_file() else "",
        })
    return rows


def _figures(run_dir: Path, info: dict[str, Any]) -> list[dict[str, str]]:
    figs = []
    for sid in info.get("plan", []):
        sdir = run_dir / "stages" / sid
        for row in read_figures(sdir):
            if row.get("key") == "1" and (sdir / row["file"]).is_file():
                link = f"notebooks/{sid}.html"
                figs.append({"src": f"stages/{sid}/{row['file']}", "caption": row.get("caption", ""),
                             "stage": sid,
                             "link": link if (run_dir / link).is_file() else f"stages/{sid}/{row['file']}"})
    return figs


def _external(run_dir: Path) -> dict[str, Any] | None:
    """The ``07_external`` stage's results (cxrlib.validation.stage), or None before it ran."""
    from cxrlib.io import read_json

    rec = read_json(run_dir / "stages" / "07_external" / "external.json", default=None)
    if not rec:
        return None
    head = rec.get("headline") or []
    src = rec.get("source_classifier") or {}
    return {"headline": head, "columns": list(head[0]) if head else [],
            "warnings": [w for w in rec.get("warnings", []) if w.get("kind") != "too_few"]
            + [w for w in rec.get("warnings", []) if w.get("kind") == "too_few"],
            "removed": ", ".join(f"{r['collection']}: {r['n']} {r['reason']}" for r in rec.get("removed", [])),
            "source": src.get("warning") or src.get("note", ""), "verdicts": rec.get("verdicts") or []}


def _csv_records(path: Path) -> list[dict[str, Any]]:
    import pandas as pd

    if not path.is_file():
        return []
    try:
        return pd.read_csv(path, keep_default_na=False).to_dict("records")
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return []


def _claims(run_dir: Path) -> list[dict[str, Any]]:
    """The claims tests of notebook 4 (:func:`cxrlib.claims.claims_table`), formatted."""
    from cxrlib.report.results import format_value

    rows = []
    for r in _csv_records(run_dir / "stages" / CLAIMS_TABLE):
        r = dict(r)
        r["difference_text"] = format_mean_std(r.get("difference"), r.get("spread"), digits=3)
        r["p_text"] = format_value(r.get("p_value"), 4)
        r["difference"], r["p_value"] = _num(r.get("difference")), _num(r.get("p_value"))
        r["supported"] = str(r.get("supported")).lower() == "true"
        rows.append(r)
    return rows


def _localisation(run_dir: Path) -> list[dict[str, Any]]:
    """Per (model, method) of notebook 5: mass inside the lesion, x chance, pointing game."""
    from cxrlib.report.results import format_value

    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    for r in _csv_records(run_dir / "stages" / LOCALISATION_TABLE):
        row = by_key.setdefault((str(r["model"]), str(r["method"])), {"model": r["model"], "method": r["method"]})
        if r["metric"] == "mass_inside":
            row.update(mass=_num(r["mean"]), x_chance=_num(r.get("x_chance")), n=r.get("n", ""),
                       mass_text=f"{format_value(r['mean'], 3)} (chance {format_value(r.get('chance'), 3)})",
                       x_chance_text=format_value(r.get("x_chance"), 2))
        elif r["metric"] == "pointing_game":
            row.update(pointing=_num(r["mean"]), pointing_text=format_value(r["mean"], 2))
    for r in by_key.values():  # _num gives text ("" for a missing value)
        x, p = (float(r.get(k) or "nan") for k in ("x_chance", "pointing"))
        r["lands"] = lands(x, p)
    return [r for r in by_key.values() if "mass" in r]


def render_index(run_dir: str | os.PathLike) -> str:
    """The index page of a run as an HTML string."""
    from cxrlib import __version__
    from cxrlib.report.results import data_description

    run_dir = Path(run_dir)
    info = read_run(run_dir) or {}
    config_text = (run_dir / "config.yaml").read_text(encoding="utf-8") if (run_dir / "config.yaml").is_file() else ""
    cfg = yaml.safe_load(config_text) or {}
    tables = read_results(run_dir)

    comparison = []
    if "paper_comparison" in tables:
        for r in tables["paper_comparison"].to_dict("records"):
            r = dict(r)
            r["published_text"] = format_mean_std(r["published"], r["published_std"])
            r["this_run_text"] = format_mean_std(r["this_run"], r["this_run_std"])
            for k in ("published", "published_std", "this_run", "this_run_std"):
                r[k] = _num(r[k])
            r["same_data"] = str(r.get("same_data")).lower() == "true"
            r["note"] = "" if str(r.get("note")) == "nan" else r.get("note")
            comparison.append(r)

    summary_rows, summary_metrics = [], []
    chains = {}
    if cfg.get("strategies") and cfg.get("split"):
        try:
            chains = dict(init_chains(run_dir, cfg).itertuples(index=False))
        except (KeyError, ValueError, TypeError):  # a config the plan cannot read: no chains
            chains = {}
    if "summary" in tables and not tables["summary"].empty:
        s = tables["summary"]
        summary_metrics = [m for m in SUMMARY_METRICS if m in set(s["metric"])]
        for strategy in dict.fromkeys(s["strategy"]):
            sub = s[s["strategy"] == strategy].set_index("metric")
            cells = [{"metric": m, "mean": _num(sub.loc[m, "mean"]), "std": _num(sub.loc[m, "std"]),
                      "text": format_mean_std(sub.loc[m, "mean"], sub.loc[m, "std"])}
                     if m in sub.index else {"metric": m, "mean": "", "std": "", "text": "–"}
                     for m in summary_metrics]
            n = int(sub["n"].max()) if len(sub) else 0
            summary_rows.append({"strategy": strategy, "cells": cells, "n": n, "init": chains.get(strategy, "")})

    failure = None
    if info.get("status") == "failed" and info.get("failed_stage"):
        sid = info["failed_stage"]
        failure = {"stage": sid, "html": f"notebooks/{sid}.html",
                   "error": info.get("stages", {}).get(sid, {}).get("error", "")}

    data_text, _ = data_description(cfg) if cfg.get("data") else ("", False)
    paper = cfg.get("paper", {}) or {}
    return TEMPLATE.render(
        title=cfg.get("title", cfg.get("name", "experiment")), experiment=info.get("experiment", ""),
        run_id=info.get("run_id", run_dir.name), status=info.get("status", "unknown"),
        config_hash=info.get("config_hash", ""), smoke=info.get("smoke", False),
        created=info.get("created", ""), data_text=data_text,
        paper_citation=paper.get("citation", ""), paper_url=paper.get("url", ""),
        failure=failure, comparison=comparison, summary_rows=summary_rows, external=_external(run_dir),
        claims=_claims(run_dir), claims_test="paired t-test; Wilcoxon in claims.csv",
        localisation=_localisation(run_dir),
        verdicts=_csv_records(run_dir / "stages" / VERDICT_TABLE),
        claims_table=CLAIMS_TABLE, localisation_table=LOCALISATION_TABLE,
        lands_mass=f"{LANDS_MASS:g}", lands_pointing=f"{LANDS_POINTING:g}",
        summary_metrics=summary_metrics, result_files=[f"stages/{RESULTS_STAGE}/{k}.csv" for k in tables],
        figures=_figures(run_dir, info), stages=_stage_rows(run_dir, info),
        config_text=config_text, version=__version__,
        config_file=shown_path(cfg.get("config_file", "")),
    )


def write_index(run_dir: str | os.PathLike) -> Path:
    """Render and write ``<run>/index.html`` atomically; returns its path."""
    run_dir = Path(run_dir)
    return write_text(run_dir / "index.html", render_index(run_dir))
