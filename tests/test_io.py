"""cxrlib.io: atomic writes leave no temporary file and keep the old file on failure."""

import math

import numpy as np
import pandas as pd
import pytest

from cxrlib import io


def test_write_json_numpy_and_strict_nan(tmp_path):
    p = io.write_json(tmp_path / "a" / "m.json", {"n": np.int64(3), "x": np.float32(0.5),
                                                 "nan": float("nan"), "arr": np.arange(2), "p": tmp_path})
    assert io.read_json(p) == {"n": 3, "x": 0.5, "nan": None, "arr": [0, 1], "p": str(tmp_path)}
    lax = io.write_json(tmp_path / "lax.json", {"nan": float("nan"), "obj": object}, strict=False)
    back = io.read_json(lax)
    assert math.isnan(back["nan"]) and back["obj"].startswith("<class")
    assert [f.name for f in tmp_path.iterdir() if ".tmp" in f.name] == []


def test_failed_write_keeps_old_file_and_no_tmp(tmp_path):
    target = tmp_path / "t.csv"
    io.write_csv(target, pd.DataFrame({"a": [1]}))
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "a\n1\n"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["t.csv"]


def test_folder_target_is_a_clear_error(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        io.write_text(tmp_path, "x")
    assert list(tmp_path.iterdir()) == []


def test_read_json_default(tmp_path):
    assert io.read_json(tmp_path / "missing.json", default=None) is None
    (tmp_path / "bad.json").write_text("{")
    assert io.read_json(tmp_path / "bad.json", default={}) == {}
    with pytest.raises(FileNotFoundError):
        io.read_json(tmp_path / "missing.json")


def test_written_files_get_umask_permissions(tmp_path):
    import os
    import stat
    mask = os.umask(0o022)
    try:
        p = io.write_text(tmp_path / "index.html", "<p>")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
