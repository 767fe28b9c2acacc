"""label_map.csv and the one combination rule (labels.py)."""

import csv

import pytest

from cxrlib.data.labels import UnmappedFinding, _LABEL_MAP_CSV, map_label, resolve_label
from cxrlib.data.taxonomy import NIH_FINDINGS, task_classes


@pytest.mark.parametrize("finding, a, b, bv", [
    ("No Finding", "normal", "normal", "normal"),
    ("Pneumonia", "pneumonia", "pneumonia", ""),
    ("Effusion|Pneumonia", "pneumonia", "pneumonia", ""),   # any row containing Pneumonia
    ("Effusion|Mass", "other_disease", "", ""),
    ("Hernia", "other_disease", "", ""),
])
def test_nih_rules(finding, a, b, bv):
    assert (map_label("nih", finding, "paper_a"), map_label("nih", finding, "paper-b"),
            map_label("nih", finding, "paper_b_viral")) == (a, b, bv)


@pytest.mark.parametrize("finding, a, b, bv", [
    ("COVID-19", "covid19", "covid19", "covid19"),
    ("Pneumonia/Viral/COVID-19", "covid19", "covid19", "covid19"),
    ("COVID-19, ARDS", "covid19", "covid19", "covid19"),       # comma form: covid19 takes precedence
    ("SARS", "pneumonia", "pneumonia", "viral_pneumonia"),
    ("Pneumonia/Viral/Influenza/H1N1", "pneumonia", "pneumonia", "viral_pneumonia"),
    ("Pneumonia/Viral/Adenovirus", "pneumonia", "pneumonia", "viral_pneumonia"),  # parent fallback
    ("Streptococcus", "pneumonia", "pneumonia", ""),
    ("Pneumonia/Fungal/Pneumocystis", "pneumonia", "pneumonia", ""),
    ("ARDS", "other_disease", "", ""),
    ("No Finding", "normal", "normal", "normal"),
    ("  no   finding ", "normal", "normal", "normal"),          # case and spacing insensitive
])
def test_cohen_rules(finding, a, b, bv):
    assert [map_label("cohen", finding, t) for t in ("paper_a", "paper_b", "paper_b_viral")] == [a, b, bv]


def test_todo_is_dropped_with_reason_and_unknown_is_an_error():
    assert resolve_label("covid-chestxray", "todo", "paper_a").reason == "finding not yet labelled upstream (todo)"
    assert resolve_label("covid-chestxray", "Pneumonia/Whatever", "paper_a").reason == "unmapped finding Pneumonia/Whatever"
    with pytest.raises(UnmappedFinding, match="Martian flu"):
        map_label("covid-chestxray", "Martian flu", "paper_a")
    with pytest.raises(ValueError, match="unknown vocabulary"):
        map_label("padchest", "x", "paper_a")


def test_kermany_and_radiography_vocabularies():
    assert map_label("kermany", "virus", "paper_b_viral") == "viral_pneumonia"
    assert map_label("kermany", "bacteria", "paper_b_viral") == ""
    assert map_label("radiography-db", "Lung_Opacity", "paper_a") == "other_disease"


def test_table_covers_all_nih_findings_and_uses_only_task_classes():
    with open(_LABEL_MAP_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["finding"] for r in rows if r["vocabulary"] == "nih"} == set(NIH_FINDINGS) | {"No Finding"}
    for r in rows:
        for task in ("paper_a", "paper_b", "paper_b_viral"):
            assert r[task] == "-" or r[task] in task_classes(task), r
    keys = [(r["vocabulary"], r["finding"].casefold()) for r in rows]
    assert len(keys) == len(set(keys))
