"""``cxr data``: leaking manifests are refused; bad data gives a message naming file, line and fix."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cxrlib.cli import main
from cxrlib.data.manifest import new_manifest, read_manifest, write_manifest


def _img(path, seed=0, fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16), dtype=np.uint8)).save(path, fmt)


@pytest.fixture()
def root(tmp_path):
    r = tmp_path / "data"
    for i in range(12):
        _img(r / f"i{i}.png", i)
    return r


def _manifest(tmp_path, rows, name="m.csv"):
    base = dict(source="s", view="", findings="", label="normal")
    path = tmp_path / name
    write_manifest(new_manifest([{**base, **r} for r in rows]), path)
    return path


def test_split_refuses_one_file_under_two_patients(root, tmp_path, capsys):
    rows = [dict(path=f"i{i}.png", patient_id=f"p{i}") for i in range(10)] + [dict(path="i3.png", patient_id="x")]
    m = _manifest(tmp_path, rows)
    assert main(["data", "split", str(m), "--folds", "2", "-o", str(tmp_path / "s.csv")]) == 1
    err = capsys.readouterr().err
    assert "the same image file (path i3.png) is on lines 5, 12" in err
    assert not (tmp_path / "s.csv").exists()


def test_check_refuses_a_file_or_duplicate_group_crossing_folds(root, tmp_path, capsys):
    rows = [dict(path="i0.png", patient_id="a", fold="0"), dict(path="i0.png", patient_id="b", fold="1")]
    assert main(["data", "check", str(_manifest(tmp_path, rows)), "--root", str(root)]) == 1
    assert "image file i0.png is in several folds: 0 (line 2); 1 (line 3)" in capsys.readouterr().out
    # the same group through patient_group (patients merged by a shared image) across folds
    rows = [dict(path="i0.png", patient_id="a", patient_group="g", fold="0"),
            dict(path="i1.png", patient_id="b", patient_group="g", fold="1")]
    assert main(["data", "check", str(_manifest(tmp_path, rows)), "--root", str(root)]) == 1
    assert "is in several folds" in capsys.readouterr().out


def test_check_refuses_paths_leaving_the_root(root, tmp_path, capsys):
    rows = [dict(path="../x.png", patient_id="a"), dict(path="/etc/passwd", patient_id="b")]
    assert main(["data", "check", str(_manifest(tmp_path, rows)), "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "line 2, column 'path': path '../x.png' leaves the data root" in out
    assert "line 3, column 'path': path '/etc/passwd' leaves the data root" in out


def test_bad_phash_is_named_not_a_traceback(root, tmp_path, capsys):
    rows = [dict(path=f"i{i}.png", patient_id=f"p{i}", sha1="a" * 40, phash="zz" * 8 if i == 1 else "0" * 16)
            for i in range(3)]
    m = _manifest(tmp_path, rows)
    assert main(["data", "check", str(m), "--root", str(root)]) == 1
    assert "line 3, column 'phash': 'zzzzzzzzzzzzzzzz' is not 16 hex digits" in capsys.readouterr().out
    assert main(["data", "dedup", str(m), "--root", str(root), "-o", str(tmp_path / "d.csv")]) == 2
    assert "line 3, column 'phash'" in capsys.readouterr().err


def test_decompression_bomb_is_named(root, tmp_path, capsys):
    Image.new("1", (14000, 14000)).save(root / "huge.png")
    m = _manifest(tmp_path, [dict(path="i0.png", patient_id="a"), dict(path="huge.png", patient_id="b")])
    for argv in (["data", "dedup", str(m), "--root", str(root), "-o", str(tmp_path / "d.csv")],
                 ["data", "check", str(m), "--root", str(root), "--duplicates"]):
        rc = main(argv)
        cap = capsys.readouterr()
        text = cap.out + cap.err
        assert rc in (1, 2) and "line 3, column 'path'" in text and "huge.png" in text, text
        assert "Traceback" not in text


def test_output_folder_is_refused_and_nothing_left_behind(root, tmp_path, capsys):
    m = _manifest(tmp_path, [dict(path=f"i{i}.png", patient_id=f"p{i}") for i in range(6)])
    out = tmp_path / "outdir"
    out.mkdir()
    for argv in (["data", "split", str(m), "--folds", "2", "-o", str(out)],
                 ["data", "dedup", str(m), "--root", str(root), "-o", str(out)],
                 ["data", "manifest", "folders", str(root), "-o", str(out)]):
        assert main(argv) == 2
        assert "is a folder" in capsys.readouterr().err
    assert list(tmp_path.glob("*.tmp")) == [] and list(out.iterdir()) == []


def test_label_col_typo_and_few_patient_classes(root, tmp_path, capsys):
    rows = [dict(path=f"i{i}.png", patient_id=f"p{i}", label="normal" if i < 9 else "covid19") for i in range(11)]
    m = _manifest(tmp_path, rows)
    assert main(["data", "split", str(m), "--folds", "3", "--label-col", "lable", "-o", str(tmp_path / "s.csv")]) == 2
    assert "--label-col 'lable' is not a column" in capsys.readouterr().err
    assert main(["data", "split", str(m), "--folds", "3", "-o", str(tmp_path / "s.csv")]) == 0
    assert "class 'covid19' has 2 patient(s), fewer than 3 folds" in capsys.readouterr().err
    assert set(read_manifest(tmp_path / "s.csv")["fold"]) == {"0", "1", "2"}


def test_check_images_shows_the_scan_warnings(root, tmp_path, capsys):
    _img(root / "really_a_png.jpg", 20)  # PNG bytes under a .jpg name
    m = _manifest(tmp_path, [dict(path="i0.png", patient_id="a"), dict(path="really_a_png.jpg", patient_id="b")])
    assert main(["data", "check", str(m), "--root", str(root), "--images"]) == 0
    out = capsys.readouterr().out
    assert "warning: line 3, column 'path'" in out and "1 warning(s)" in out


def test_bad_image_error_uses_check_line_numbers(root, tmp_path, capsys):
    from cxrlib.data.images import scan_images

    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    rows = [dict(path=f"i{i}.png", patient_id=f"p{i}") for i in range(3)] + [dict(path="broken.png", patient_id="z")]
    m = _manifest(tmp_path, rows)
    assert main(["data", "check", str(m), "--root", str(root), "--images"]) == 1
    assert "line 5, column 'path': unreadable image" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"broken.png \(line 5\)"):
        scan_images(read_manifest(m), root).raise_if_bad()


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"path,patient_id,source,view,findings,label\na.png,p,s,,,\nb.png,p,s,,,,extra\n",
     "line 3: 7 fields where the header has 6"),
])
def test_unreadable_manifest_is_named(root, tmp_path, capsys, content, message):
    m = tmp_path / "bad.csv"
    m.write_bytes(content)
    assert main(["data", "check", str(m), "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and message in err and "Traceback" not in err


def test_check_refuses_a_source_prefix_without_patient_id(root, tmp_path, capsys):
    rows = [dict(path="i0.png", patient_id="nih:", source="nih"), dict(path="i1.png", patient_id="nih:", source="nih")]
    assert main(["data", "check", str(_manifest(tmp_path, rows)), "--root", str(root)]) == 1
    assert "line 2, column 'patient_id': patient id 'nih:' has no id after the source prefix" in capsys.readouterr().out
