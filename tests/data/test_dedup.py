"""Duplicate detection: exact (sha1) and near (phash candidates verified on thumbnails)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageEnhance

from cxrlib.data.dedup import (
    add_hashes, drop_duplicates, find_duplicates, hamming_neighbors, hash_bits, patient_groups,
)
from cxrlib.data.manifest import new_manifest


def _phantom(seed: int, size: int = 64) -> Image.Image:
    """Smooth random gray image (distinct seeds -> distinct images)."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (8, 8)).astype(np.uint8)
    return Image.fromarray(small).resize((size, size), Image.BICUBIC)


@pytest.fixture()
def copies(tmp_path):
    base = _phantom(1)
    base.save(tmp_path / "a.png")
    (tmp_path / "a_copy.png").write_bytes((tmp_path / "a.png").read_bytes())          # exact copy
    base.resize((48, 48)).save(tmp_path / "a_small.jpg", quality=80)                    # resized + re-encoded
    ImageEnhance.Contrast(base).enhance(1.3).save(tmp_path / "a_contrast.png")          # re-contrasted
    _phantom(2).save(tmp_path / "b.png")
    _phantom(3).save(tmp_path / "c.png")
    rows = [dict(path=p, patient_id=p[0] + p, source=s, view="", findings="", label="")
            for p, s in (("a.png", "x"), ("b.png", "x"), ("a_copy.png", "y"), ("a_small.jpg", "y"),
                         ("a_contrast.png", "z"), ("c.png", "z"))]
    return tmp_path, new_manifest(rows)


def test_hash_bits_and_neighbours():
    bits = hash_bits(["0000000000000000", "0000000000000003", "ffffffffffffffff"])
    assert bits.shape == (3, 64) and bits[1].sum() == 2 and bits[2].all()
    assert hamming_neighbors(["0000000000000000", "0000000000000003", "ffffffffffffffff"], 2) == [(0, 1, 2)]
    assert hamming_neighbors(["0000000000000000", "0000000000000003"], 1) == []


def test_add_hashes(copies):
    root, df = copies
    out = add_hashes(df, root)
    assert out["sha1"].str.len().eq(40).all() and out["phash"].str.len().eq(16).all()
    assert out.at[0, "sha1"] == out.at[2, "sha1"] != out.at[1, "sha1"]
    assert "sha1" not in df.columns  # input untouched


def test_find_and_drop_duplicates(copies):
    root, df = copies
    pairs = find_duplicates(df, root=root)
    got = {(a, b): k for a, b, k in zip(pairs["path_a"], pairs["path_b"], pairs["kind"])}
    assert got[("a.png", "a_copy.png")] == "exact"
    assert got[("a.png", "a_small.jpg")] == "near" and got[("a.png", "a_contrast.png")] == "near"
    assert not any("b.png" in k or "c.png" in k for k in got)
    kept, removed = drop_duplicates(df, pairs)
    assert list(kept["path"]) == ["a.png", "b.png", "c.png"]
    assert set(removed["duplicate_of"]) == {"a.png"} and len(removed) == 3
    kept2, _ = drop_duplicates(df, pairs, prefer=("z",))
    assert "a_contrast.png" in set(kept2["path"]) and "a.png" not in set(kept2["path"])
    cross = find_duplicates(df, root=root, cross_source_only=True)
    assert (cross["source_a"] != cross["source_b"]).all() and len(cross) < len(pairs)


def test_without_root_only_exact_and_identical_hashes(copies):
    root, df = copies
    hashed = add_hashes(df, root)
    with pytest.warns(UserWarning, match="only searched at phash distance 0"):
        pairs = find_duplicates(hashed)
    assert (pairs["distance"] == 0).all()
    with pytest.raises(ValueError, match="add_hashes"):
        find_duplicates(df)


def test_unreadable_image_names_line(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    df = new_manifest([dict(path="bad.png", patient_id="p", source="s")])
    with pytest.raises(ValueError, match="line 2, column 'path': cannot hash"):
        add_hashes(df, tmp_path)


def test_real_collections(shared_data, cohen_root, figure1_root, nih_root):
    from cxrlib.data.adapters import ADAPTERS

    frames = []
    for src, root in (("covid-chestxray", cohen_root), ("figure1", figure1_root)):
        m = ADAPTERS[src](root).manifest
        m["path"] = root.name + "/" + m["path"]
        frames.append(m)
    # two different NIH patients whose phashes are only 2 bits apart, and an exact NIH copy
    nih = ADAPTERS["nih"](nih_root).manifest
    nih = nih[nih["path"].str.contains("00005228_002|00018145_000|00002658_00[12]")].copy()
    nih["path"] = nih_root.name + "/" + nih["path"]
    df = pd.concat(frames + [nih], ignore_index=True)
    pairs = find_duplicates(df, root=shared_data)
    names = {(Path(a).name, Path(b).name): k for a, b, k in zip(pairs["path_a"], pairs["path_b"], pairs["kind"])}
    # the same radiograph published in the Cohen and the Figure 1 collections
    assert names[("9C34AF49-E589-44D5-92D3-168B3B04E4A6.jpeg", "COVID-00022.jpg")] == "near"
    assert names[("00002658_001.png", "00002658_002.png")] == "exact"
    assert ("00005228_002.png", "00018145_000.png") not in names
    # one image listed under two Cohen patients (192: AR-1, 196: extubation-1)
    assert ("AR-1.jpg", "extubation-1.jpg") in names
    cross = pairs[pairs["source_a"] != pairs["source_b"]]
    assert set(zip(cross["source_a"], cross["source_b"])) == {("covid-chestxray", "figure1")}


def test_patient_groups_merge_patients_sharing_an_image():
    df = new_manifest([dict(path=p, patient_id=pid, source=src) for p, pid, src in (
        ("1.png", "a:1", "a"), ("2.png", "a:1", "a"), ("3.png", "a:2", "a"), ("4.png", "7", "b"), ("5.png", "8", "b"))])
    pairs = pd.DataFrame({"path_a": ["2.png"], "path_b": ["4.png"]})
    assert list(patient_groups(df, pairs)) == ["a:1", "a:1", "a:2", "a:1", "b:8"]


# ----------------------------------------------------------------------------- bounded time (issue 9)
@pytest.fixture(autouse=True)
def _own_fingerprint_store(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cxr-cache"))


def test_rerun_decodes_nothing_and_scan_reuses_the_decode(copies, monkeypatch):
    from cxrlib.data import fingerprints, images

    root, df = copies
    first = find_duplicates(df, root=root)
    monkeypatch.setattr(fingerprints, "fingerprint", lambda p: pytest.fail(f"decoded {p} again"))
    pd.testing.assert_frame_equal(find_duplicates(df, root=root), first)
    monkeypatch.setattr(images, "_check_one", lambda p: pytest.fail(f"scan decoded {p} again"))
    assert images.scan_images(df, root).n_ok == len(df)
    # a changed file is decoded again (key = path, size, mtime)
    monkeypatch.undo()
    import hashlib
    import os

    before = add_hashes(df, root).set_index("path")["sha1"]["c.png"]
    (root / "c.png").write_bytes((root / "a.png").read_bytes())
    os.utime(root / "c.png", ns=(1, 2))
    after = add_hashes(df, root).set_index("path")["sha1"]["c.png"]
    assert before != after == hashlib.sha1((root / "a.png").read_bytes()).hexdigest()


def test_bad_image_in_the_store_is_reported_by_the_scan(tmp_path):
    from cxrlib.data.images import scan_images

    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")
    df = new_manifest([dict(path="bad.png", patient_id="p", source="s")])
    with pytest.raises(ValueError, match="line 2, column 'path': cannot hash"):
        add_hashes(df, tmp_path)
    report = scan_images(df, tmp_path)
    assert len(report.bad) == 1 and "cannot decode" in report.bad[0].reason


def test_near_pairs_equal_the_exhaustive_search():
    from cxrlib.data.dedup import hash_ints, near_pairs, popcount

    rng = np.random.default_rng(0)
    base = rng.standard_normal((60, 1024)).astype(np.float32)
    t = np.concatenate([base, base[:30] + rng.normal(0, rng.uniform(0.05, 0.4, (30, 1)), (30, 1024))])
    t = ((t - t.mean(1, keepdims=True)) / t.std(1, keepdims=True)).astype(np.float32)  # standardised
    h = rng.integers(0, 2**63, len(t), dtype=np.int64).astype(np.uint64)
    h[60:] = h[:30] ^ np.uint64(0b1011)  # copies 3 bits away
    h[75:] = h[15:30] ^ np.uint64(2**40 - 1)  # some copies far in phash: excluded by distance
    a, b, d, c = near_pairs(t, h, max_distance=10, min_correlation=0.975)
    corr = t @ t.T / 1024
    dist = popcount(h[:, None] ^ h[None, :])
    i, j = np.nonzero(np.triu((corr >= 0.975) & (dist <= 10), 1))
    assert sorted(zip(a.tolist(), b.tolist())) == sorted(zip(i.tolist(), j.tolist()))
    assert 0 < len(a) < 30  # the noisy and the far copies are not reported
    np.testing.assert_allclose(c, corr[a, b], atol=1e-5)
    assert hash_ints(["ffffffffffffffff"])[0] == np.uint64(2**64 - 1)
