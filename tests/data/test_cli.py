"""``cxr data ...``: exit codes and messages on good and bad input (no traceback for bad data)."""

from __future__ import annotations

import sys
import types

import pandas as pd
import pytest
from PIL import Image

from cxrlib.cli import main
from cxrlib.data.manifest import new_manifest, read_manifest, write_manifest


def _img(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (16, 16), color=value).save(path)


@pytest.fixture()
def folder_dataset(tmp_path):
    root = tmp_path / "data"
    for cls, n in (("covid19", 6), ("normal", 8), ("pneumonia", 6)):
        for i in range(n):
            _img(root / cls / f"{cls}{i}.png", value=(i * 37 + len(cls) * 11) % 256)
    return root


def test_manifest_prints_counts_and_skips(folder_dataset, tmp_path, capsys):
    out = tmp_path / "m.csv"
    rc = main(["data", "manifest", "folders", str(folder_dataset), "-o", str(out), "--task", "paper-b-viral",
               "--skipped", str(tmp_path / "skipped.csv")])
    text = capsys.readouterr().out
    assert rc == 0
    assert "label covid19: 6" in text and "label normal: 8" in text and "patients: 14" in text
    assert "6  folder 'pneumonia' is not a class of paper_b_viral (see class_map)" in text
    assert len(read_manifest(out)) == 14
    assert len(pd.read_csv(tmp_path / "skipped.csv")) == 6


@pytest.mark.parametrize("argv, message", [
    (["data", "manifest", "kermany", "/no/such/folder", "-o", "x.csv"], "dataset folder not found"),
    (["data", "manifest", "folders", "{root}", "-o", "x.csv", "--opt", "colour=red"], "bad option for folders"),
    (["data", "manifest", "folders", "{root}", "-o", "x.csv", "--opt", "colour"], "key=value"),
    (["data", "check", "/no/such.csv", "--root", "{root}"], "file not found"),
    (["data", "split", "{manifest}", "-o", "x.csv"], "nothing to do"),
    (["data", "split", "{manifest}", "-o", "x.csv", "--folds", "50"], "cannot fill 50 folds"),
])
def test_bad_input_exits_2_with_a_message(argv, message, folder_dataset, tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    main(["data", "manifest", "folders", str(folder_dataset), "-o", str(manifest)])
    capsys.readouterr()
    argv = [a.format(root=folder_dataset, manifest=manifest) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_check_reports_missing_files_labels_and_leakage(folder_dataset, tmp_path, capsys):
    rows = [dict(path=f"normal/normal{i}.png", patient_id="p1" if i < 2 else f"p{i}", source="s", view="",
                 findings="normal", label="normal", split="train" if i else "test") for i in range(4)]
    rows.append(dict(path="covid19/missing.png", patient_id="p9", source="s", view="", findings="x",
                     label="flu", split="train"))
    bad = tmp_path / "bad.csv"
    write_manifest(new_manifest(rows), bad)
    rc = main(["data", "check", str(bad), "--root", str(folder_dataset), "--task", "paper_b"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "line 6, column 'path': file not found" in out
    assert "unknown label 'flu'" in out
    assert "patient p1 (source s) is in several splits" in out
    assert "3 error(s)" in out


def test_check_finds_duplicates_crossing_splits(folder_dataset, tmp_path, capsys):
    (folder_dataset / "normal" / "copy.png").write_bytes((folder_dataset / "normal" / "normal3.png").read_bytes())
    rows = [dict(path="normal/normal3.png", patient_id="a", source="s", view="", findings="", label="normal",
                 split="train"),
            dict(path="normal/copy.png", patient_id="b", source="s", view="", findings="", label="normal",
                 split="test")]
    m = tmp_path / "dup.csv"
    write_manifest(new_manifest(rows), m)
    assert main(["data", "check", str(m), "--root", str(folder_dataset)]) == 0  # no hashes: not checked
    capsys.readouterr()
    assert main(["data", "check", str(m), "--root", str(folder_dataset), "--duplicates"]) == 1
    out = capsys.readouterr().out
    assert "exact duplicate images cross splits: normal/normal3.png (train" in out


def test_check_images_reports_unreadable_file(folder_dataset, tmp_path, capsys):
    (folder_dataset / "normal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    m = tmp_path / "m.csv"
    main(["data", "manifest", "folders", str(folder_dataset), "-o", str(m)])
    capsys.readouterr()
    assert main(["data", "check", str(m), "--root", str(folder_dataset)]) == 0
    assert main(["data", "check", str(m), "--root", str(folder_dataset), "--images"]) == 1
    out = capsys.readouterr().out
    assert "normal/broken.png" in out and "Traceback" not in out


def test_split_then_check_is_clean(folder_dataset, tmp_path, capsys):
    m, s = tmp_path / "m.csv", tmp_path / "s.csv"
    main(["data", "manifest", "folders", str(folder_dataset), "-o", str(m), "--task", "paper_b"])
    assert main(["data", "split", str(m), "--folds", "3", "--seed", "1", "--test-size", "0.25",
                 "--val-size", "0.15", "-o", str(s)]) == 0
    df = read_manifest(s)
    assert set(df["fold"]) == {"0", "1", "2"} and set(df["split"]) == {"train", "val", "test"}
    assert main(["data", "check", str(s), "--root", str(folder_dataset), "--task", "paper-b"]) == 0


def test_dedup_merges_and_reports(folder_dataset, tmp_path, capsys):
    (folder_dataset / "normal" / "copy.png").write_bytes((folder_dataset / "normal" / "normal3.png").read_bytes())
    m, out, rep = tmp_path / "m.csv", tmp_path / "d.csv", tmp_path / "pairs.csv"
    main(["data", "manifest", "folders", str(folder_dataset), "-o", str(m)])
    assert main(["data", "dedup", str(m), "--root", str(folder_dataset), "-o", str(out), "--report", str(rep)]) == 0
    assert len(read_manifest(out)) == len(read_manifest(m)) - 1
    assert "copy.png" in rep.read_text()
    assert main(["data", "dedup", str(m), str(m), "--root", str(folder_dataset), "-o", str(out)]) == 2
    assert "twice" in capsys.readouterr().err


def test_phantoms_calls_generator_lazily(tmp_path, monkeypatch, capsys):
    calls = {}

    def fake_generate(out_dir, task, n, **kw):
        calls.update(out_dir=out_dir, task=task, n=n, **kw)
        rows = [dict(path=f"images/{i}.png", patient_id=str(i), source="phantom", view="PA", findings="x",
                     label="covid19") for i in range(n)]
        return write_manifest(new_manifest(rows), tmp_path / "manifest.csv")

    monkeypatch.setitem(sys.modules, "cxrlib.data.phantoms", types.SimpleNamespace(generate_phantoms=fake_generate))
    rc = main(["data", "phantoms", str(tmp_path), "--task", "paper-a", "--n", "3", "--seed", "7", "--size", "32",
               "--shortcut-strength", "0.5"])
    assert rc == 0
    assert calls == dict(out_dir=str(tmp_path), task="paper-a", n=3, seed=7, shortcut_strength=0.5, image_size=32)
    assert "images: 3" in capsys.readouterr().out


def test_build_manifests_on_tiny_collections(tmp_path, capsys):
    """A data root with a fake Cohen collection and a fake Kermany set: paper_b uses Kermany."""
    root = tmp_path / "data"
    cohen = root / "covid-chestxray-dataset"
    rows = []
    for i in range(12):
        name = f"c{i}.png"
        _img(cohen / "images" / name, value=i * 20)
        rows.append(dict(patientid=str(i // 2), finding="COVID-19" if i % 3 else "Pneumonia/Viral/SARS",
                         view="PA", modality="X-ray", folder="images", filename=name))
    pd.DataFrame(rows).to_csv(cohen / "metadata.csv", index=False)
    k = root / "chest_xray" / "train"
    for i in range(12):
        _img(k / "NORMAL" / f"IM-{i:04d}-0001.jpeg", value=255 - i * 15)
        _img(k / "PNEUMONIA" / f"person{i}_virus_{i}.jpeg", value=i * 9 + 3)
    out = tmp_path / "dm"
    rc = main(["data", "build-manifests", str(root), "-o", str(out), "--recipe", "paper_b",
               "--recipe", "paper_b_viral", "--folds", "3"])
    assert rc == 0, capsys.readouterr()
    b = read_manifest(out / "paper_b.csv")
    assert b.groupby("label")["source"].agg(set).to_dict() == {
        "covid19": {"covid-chestxray"}, "normal": {"kermany"}, "pneumonia": {"kermany"}}
    assert b["path"].str.startswith(("covid-chestxray-dataset/", "chest_xray/")).all()
    readme = (out / "README.md").read_text()
    assert "## paper_b.csv" in readme and "not taken from this source" in readme
    skipped = pd.read_csv(out / "paper_b.skipped.csv")
    assert (skipped["reason"] == "class pneumonia not taken from this source in paper_b").sum() == 4
    assert main(["data", "build-manifests", str(tmp_path / "nowhere"), "-o", str(out)]) == 2


def test_check_multilabel_findings(folder_dataset, tmp_path, capsys):
    rows = [dict(path="normal/normal0.png", patient_id="a", source="nih", findings="Effusion|Hernia"),
            dict(path="normal/normal1.png", patient_id="b", source="nih", findings="Effusion|Flu")]
    m = tmp_path / "ml.csv"
    write_manifest(new_manifest(rows), m)
    assert main(["data", "check", str(m), "--root", str(folder_dataset), "--task", "source"]) == 1
    assert "line 3, column 'findings': unknown finding(s) ['Flu']" in capsys.readouterr().out
