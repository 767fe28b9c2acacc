"""Tests for cxrlib.data.phantoms: determinism, manifest, masks, findings, shortcut markers.

Images are kept tiny (32-64 px) so the whole file runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cxrlib.data.manifest import read_manifest, split_findings, validate_manifest
from cxrlib.data.phantoms import (
    NO_FINDING,
    PatientAnatomy,
    ViewParams,
    generate_phantoms,
    render_phantom,
    sample_patient,
    sample_view,
    shortcut_twin,
)
from cxrlib.data.taxonomy import NIH_FINDINGS, task_classes


def _load(root, rel):
    return np.asarray(Image.open(root / rel))


@pytest.fixture(scope="module")
def paper_b(tmp_path_factory):
    """A small paper-B phantom set with a strong shortcut."""
    root = tmp_path_factory.mktemp("phantom_b")
    generate_phantoms(root, "paper-b", 60, seed=3, image_size=64, shortcut_strength=1.0)
    return root, read_manifest(root / "manifest.csv")


def _pair(findings, seed, size=64, domain="target", view="PA", subtype="bacterial"):
    """The same patient, view and noise rendered without and with ``findings``."""
    rng = np.random.default_rng(seed)
    patient, v = sample_patient(rng, domain), sample_view(rng, domain, view=view)
    base = render_phantom(patient, v, [], size, seed=seed)
    ill = render_phantom(patient, v, findings, size, seed=seed, subtype=subtype)
    return base, ill


# ----------------------------------------------------------------------------- files, manifest
def test_manifest_validates_and_files_match(paper_b):
    root, df = paper_b
    assert validate_manifest(df, root=root, classes=task_classes("paper_b"), require_label=True) == []
    for col in ("mask_path", "shortcut", "text_box", "age", "sex", "lr_box", "ctr"):
        assert col in df.columns, col
    assert len(df) == 60 and df["path"].is_unique
    for _, row in df.head(8).iterrows():
        im = Image.open(root / row["path"])
        mk = Image.open(root / row["mask_path"])
        assert im.mode == "L" and im.size == (64, 64)
        assert mk.mode == "L" and mk.size == im.size
        assert set(np.unique(np.asarray(mk))) <= {0, 255}
    assert set(df["view"]) <= {"PA", "AP"} and set(df["sex"]) <= {"M", "F"}
    meta = json.loads((root / "phantoms.json").read_text())
    assert meta["n"] == 60 and meta["task"] == "paper_b"


def test_classes_balanced_and_patients_grouped(paper_b):
    _, df = paper_b
    counts = df["label"].value_counts()
    assert set(counts.index) == set(task_classes("paper_b"))
    assert counts.max() - counts.min() <= 3  # at most images_per_patient apart
    per_patient = df.groupby("patient_id")
    sizes = per_patient.size()
    assert sizes.min() >= 1 and sizes.max() <= 3 and (sizes > 1).any()
    # one class, sex and body per patient (follow-ups share the patient's anatomy)
    assert (per_patient["label"].nunique() == 1).all()
    assert (per_patient["sex"].nunique() == 1).all()


def test_same_seed_gives_identical_bytes(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d, seed in ((a, 7), (b, 7), (c, 8)):
        generate_phantoms(d, "paper_a", 10, seed=seed, image_size=48, shortcut_strength=0.5)
    assert (a / "manifest.csv").read_bytes() == (b / "manifest.csv").read_bytes()
    df = read_manifest(a / "manifest.csv")
    for rel in list(df["path"]) + list(df["mask_path"]):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    other = read_manifest(c / "manifest.csv")
    differs = [(a / p).read_bytes() != (c / p).read_bytes() for p in df["path"] if (c / p).is_file()]
    assert any(differs) or list(other["patient_id"]) != list(df["patient_id"])


def test_rerun_with_fewer_images_removes_stale_files(tmp_path):
    generate_phantoms(tmp_path, "paper_b", 12, image_size=32)
    generate_phantoms(tmp_path, "paper_b", 5, image_size=32)
    df = read_manifest(tmp_path / "manifest.csv")
    assert sorted(p.name for p in (tmp_path / "images").glob("*.png")) == sorted(p.split("/")[1] for p in df["path"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(task="paper_c"), "unknown task"),
    (dict(n=0), "n must be"),
    (dict(conspicuity=0), "conspicuity must be"),
    (dict(shortcut_strength=1.5), "shortcut_strength"),
    (dict(images_per_patient=(3, 1)), "images_per_patient"),
    (dict(shortcut_class="Pneumonia"), "shortcut_class"),
    (dict(image_size=16), "image_size"),
])
def test_bad_arguments_fail_before_any_work(tmp_path, kwargs, match):
    args = dict(out_dir=tmp_path / "out", task="paper_b", n=4, image_size=32) | kwargs
    with pytest.raises(ValueError, match=match):
        generate_phantoms(**args)
    assert not (tmp_path / "out" / "manifest.csv").exists()


# ----------------------------------------------------------------------------- masks and labels
def test_normal_has_empty_mask_and_disease_has_lesion(paper_b):
    root, df = paper_b
    for _, row in df.iterrows():
        m = _load(root, row["mask_path"]) > 0
        if row["label"] == "normal":
            assert not m.any() and row["findings"] == NO_FINDING, row["path"]
        else:
            assert m.sum() > 10, row["path"]
    assert set(df.loc[df["label"] == "covid19", "findings"]) == {"COVID-19"}
    assert set(df.loc[df["label"] == "pneumonia", "subtype"]) <= {"bacterial", "viral"}


def _centroid(mask):
    rows, cols = np.nonzero(mask)
    return rows.mean(), cols.mean()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_covid_mask_is_bilateral_peripheral_lower_zone(seed):
    _, covid = _pair(["COVID-19"], seed)
    _, viral = _pair(["Pneumonia"], seed, subtype="viral")
    m, lungs = covid.mask, covid.lung_mask
    S = m.shape[1]
    left, right = m[:, : S // 2].sum(), m[:, S // 2:].sum()
    assert min(left, right) > 0.2 * m.sum()  # both lungs
    lung_rows = np.nonzero(lungs.any(axis=1))[0]
    mid = (lung_rows.min() + lung_rows.max()) / 2
    assert _centroid(m)[0] > mid  # lower zones
    # peripheral: further from the midline than the (perihilar) viral pattern of the same patient
    dist = lambda mk: np.abs(np.nonzero(mk)[1] - (S - 1) / 2).mean()  # noqa: E731
    assert dist(m) > dist(viral.mask)
    # and the opacity is really drawn: brighter inside the mask than without the disease
    base = _pair([], seed)[0].image.astype(float)
    assert covid.image[m].mean() > base[m].mean() + 2


# direction in which each finding changes the image inside its own mask
_BRIGHTER = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
             "Consolidation", "Edema", "Fibrosis", "Pleural_Thickening", "COVID-19"]
_DARKER = ["Pneumothorax", "Emphysema"]


@pytest.mark.parametrize("finding", _BRIGHTER + _DARKER + ["Hernia"])
def test_each_finding_has_a_mask_and_changes_the_image_there(finding):
    diffs = []
    for seed in range(3):
        base, ill = _pair([finding], seed, domain="source")
        assert not base.mask.any()
        assert ill.mask.sum() >= 4, finding
        d = ill.image.astype(float) - base.image.astype(float)
        diffs.append(d[ill.mask].mean())
        assert np.abs(d[ill.mask]).mean() > 2 * max(np.abs(d[~ill.mask]).mean(), 0.25), finding  # local
    if finding in _BRIGHTER:
        assert np.mean(diffs) > 2, (finding, diffs)
    elif finding in _DARKER:
        assert np.mean(diffs) < -2, (finding, diffs)


def test_cardiomegaly_enlarges_heart_beyond_ctr_half():
    for seed in range(5):
        rng = np.random.default_rng(seed)
        patient, view = sample_patient(rng), sample_view(rng, view="PA")
        normal = render_phantom(patient, view, [], 64, seed=seed)
        big = render_phantom(patient, view, ["Cardiomegaly"], 64, seed=seed)
        assert normal.ctr < 0.5 < big.ctr
        # the drawn heart (the mask) really is wider than half of the thorax
        cols = np.nonzero(big.mask.any(axis=0))[0]
        thorax_px = 2 * patient["thorax_hw"] * view["zoom"] * 64 / 2
        assert (cols.max() - cols.min() + 1) / thorax_px > 0.5


def test_effusion_fills_the_lung_base():
    for seed in range(3):
        _, eff = _pair(["Effusion"], seed)
        assert _centroid(eff.mask)[0] > _centroid(eff.lung_mask)[0] + 5


def test_lungs_darker_than_mediastinum():
    for seed in range(6):
        rng = np.random.default_rng(seed)
        domain = "source" if seed % 2 else "target"
        ph = render_phantom(sample_patient(rng, domain), sample_view(rng, domain), [], 64, seed=seed)
        rows = np.nonzero(ph.lung_mask.any(axis=1))[0]
        centre = ph.image[rows.min():rows.max() + 1, 30:34]
        lungs = ph.image[ph.lung_mask]
        assert ph.lung_mask.sum() > 0.15 * 64 * 64
        assert lungs.mean() + 40 < centre.mean()


def test_ap_view_magnifies_heart():
    rng = np.random.default_rng(5)
    patient = sample_patient(rng)
    pa = render_phantom(patient, sample_view(np.random.default_rng(1), view="PA"), [], 48)
    ap = render_phantom(patient, sample_view(np.random.default_rng(1), view="AP"), [], 48)
    assert ap.ctr == pytest.approx(pa.ctr * 1.12, rel=0.05)


def test_source_task_is_multilabel_nih(tmp_path):
    generate_phantoms(tmp_path, "source", 70, seed=1, image_size=32)
    df = read_manifest(tmp_path / "manifest.csv")
    assert validate_manifest(df, root=tmp_path) == []
    assert (df["label"] == "").all()
    found = [f for cell in df["findings"] for f in split_findings(cell)]
    assert set(found) <= set(NIH_FINDINGS) | {NO_FINDING}
    assert "COVID-19" not in found
    assert set(NIH_FINDINGS) <= set(found)  # every finding appears (balanced prevalence)
    for _, row in df.iterrows():
        m = _load(tmp_path, row["mask_path"]) > 0
        assert m.any() == (row["findings"] != NO_FINDING), row["path"]


def test_paper_a_other_disease_uses_non_pneumonia_findings(tmp_path):
    generate_phantoms(tmp_path, "paper_a", 24, seed=2, image_size=32)
    df = read_manifest(tmp_path / "manifest.csv")
    assert validate_manifest(df, root=tmp_path, classes=task_classes("paper_a"), require_label=True) == []
    other = df[df["label"] == "other_disease"]
    assert len(other) >= 4
    for cell in other["findings"]:
        fs = split_findings(cell)
        assert fs and set(fs) <= set(NIH_FINDINGS) - {"Pneumonia"}
    assert set(df.loc[df["label"] == "pneumonia", "findings"]) == {"Pneumonia"}


# ----------------------------------------------------------------------------- shortcut
def _phi(a, b):
    return float(np.corrcoef(np.asarray(a, float), np.asarray(b, float))[0, 1])


@pytest.mark.parametrize("strength", [0.0, 0.6])
def test_shortcut_correlation_matches_strength(tmp_path, strength):
    generate_phantoms(tmp_path, "paper_b", 240, seed=11, image_size=32, shortcut_strength=strength)
    df = read_manifest(tmp_path / "manifest.csv")
    marker = df["shortcut"] == "1"
    covid = df["label"] == "covid19"
    # phi = strength in expectation; with n = 240 its standard error is about 0.06
    assert _phi(marker, covid) == pytest.approx(strength, abs=0.15)
    assert marker.mean() == pytest.approx(covid.mean(), abs=0.1)  # marker rate stays the prevalence
    assert (df.loc[marker, "text_box"] != "").all() and (df.loc[~marker, "text_box"] == "").all()
    for box in df.loc[marker, "text_box"]:  # the letters are shrunk to fit even a 32 px image
        x, y, w, h = map(int, box.split(","))
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 32 and y + h <= 32


def test_full_shortcut_is_perfect_and_visible(paper_b):
    root, df = paper_b
    assert ((df["shortcut"] == "1") == (df["label"] == "covid19")).all()
    for _, row in df[df["shortcut"] == "1"].head(5).iterrows():
        x, y, w, h = map(int, row["text_box"].split(","))
        im = _load(root, row["path"])
        assert 0 <= x and x + w <= 64 and 0 <= y and y + h <= 64 and w > h > 0
        assert im[y:y + h, x:x + w].max() >= 230  # burnt-in bright letters


def test_shortcut_strength_changes_only_the_marker(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate_phantoms(a, "paper_b", 12, seed=4, image_size=48, shortcut_strength=0.0)
    generate_phantoms(b, "paper_b", 12, seed=4, image_size=48, shortcut_strength=1.0)
    da, db = read_manifest(a / "manifest.csv"), read_manifest(b / "manifest.csv")
    assert list(da["label"]) == list(db["label"]) and list(da["lr_box"]) == list(db["lr_box"])
    for (_, ra), (_, rb) in zip(da.iterrows(), db.iterrows()):
        ia, ib = _load(a, ra["path"]).copy(), _load(b, rb["path"]).copy()
        for box in (ra["text_box"], rb["text_box"]):
            if box:
                x, y, w, h = map(int, box.split(","))
                ia[y:y + h, x:x + w] = ib[y:y + h, x:x + w] = 0
        assert (ia == ib).all(), ra["path"]


def test_class_fractions_and_viral_task(tmp_path):
    generate_phantoms(tmp_path / "f", "paper_b", 40, image_size=32, images_per_patient=(1, 1),
                      class_fractions={"normal": 2, "pneumonia": 1, "covid19": 1})
    counts = read_manifest(tmp_path / "f" / "manifest.csv")["label"].value_counts()
    assert counts["normal"] == 20 and counts["pneumonia"] == 10 and counts["covid19"] == 10
    with pytest.raises(ValueError, match="class_fractions"):
        generate_phantoms(tmp_path / "g", "paper_b", 4, image_size=32, class_fractions={"flu": 1})
    generate_phantoms(tmp_path / "v", "paper_b_viral", 9, image_size=32)
    df = read_manifest(tmp_path / "v" / "manifest.csv")
    assert validate_manifest(df, root=tmp_path / "v", classes=task_classes("paper_b_viral")) == []
    assert set(df.loc[df["label"] == "viral_pneumonia", "subtype"]) == {"viral"}


def test_target_domain_differs_from_source():
    """Domain extension must be a real transfer: targets are cropped tighter, exposed differently."""
    def stats(domain):
        zooms, means = [], []
        for seed in range(40):
            rng = np.random.default_rng(seed)
            patient, view = sample_patient(rng, domain), sample_view(rng, domain)
            zooms.append(view["zoom"])
            means.append(render_phantom(patient, view, [], 32, seed=seed).image.mean())
        return np.array(zooms), np.array(means)

    z_src, m_src = stats("source")
    z_tgt, m_tgt = stats("target")
    assert z_tgt.mean() > z_src.mean() + 0.08  # chest fills more of the frame
    assert m_tgt.std() > 1.3 * m_src.std()  # wider spread of exposure / contrast


def test_shortcut_twin_differs_only_in_the_text(tmp_path):
    clean = tmp_path / "clean"
    generate_phantoms(clean, "paper_b", 12, seed=4, image_size=48, shortcut_strength=0.0, conspicuity=2.0)
    twin = shortcut_twin(clean, tmp_path / "twin", shortcut_strength=1.0)
    dc, dt = read_manifest(clean / "manifest.csv"), read_manifest(twin)
    assert list(dc["path"]) == list(dt["path"]) and list(dc["label"]) == list(dt["label"])
    assert (dt["shortcut"] == "1").tolist() == (dt["label"] == "covid19").tolist()  # p = 1: text iff COVID-19
    meta = json.loads((tmp_path / "twin" / "phantoms.json").read_text())
    assert meta["shortcut_strength"] == 1.0 and meta["conspicuity"] == 2.0
    for (_, rc), (_, rt) in zip(dc.iterrows(), dt.iterrows()):
        ic, it = _load(clean, rc["path"]).copy(), _load(tmp_path / "twin", rt["path"]).copy()
        for box in (rc["text_box"], rt["text_box"]):
            if box:
                x, y, w, h = map(int, box.split(","))
                ic[y:y + h, x:x + w] = it[y:y + h, x:x + w] = 0
        assert (ic == it).all(), rc["path"]
    with pytest.raises(ValueError, match="another folder"):
        shortcut_twin(clean, clean)
    with pytest.raises(ValueError, match="unknown change"):
        shortcut_twin(clean, tmp_path / "t2", colour="red")
    with pytest.raises(FileNotFoundError, match="phantoms.json"):
        shortcut_twin(tmp_path / "nothing", tmp_path / "t3")


def test_conspicuity_scales_lesions_only():
    rng = np.random.default_rng(5)
    patient, v = sample_patient(rng, "target"), sample_view(rng, "target", view="PA")
    base = render_phantom(patient, v, [], 64, seed=5)
    assert (render_phantom(patient, v, [], 64, seed=5, conspicuity=3.0).image == base.image).all()  # normal: unchanged
    weak = render_phantom(patient, v, ["COVID-19"], 64, seed=5)
    strong = render_phantom(patient, v, ["COVID-19"], 64, seed=5, conspicuity=3.0)
    assert (weak.mask == strong.mask).all() and weak.mask.any()
    m = weak.mask
    gain = lambda ph: float(ph.image[m].astype(float).mean() - base.image[m].astype(float).mean())  # noqa: E731
    assert gain(strong) > 1.5 * gain(weak) > 0


@pytest.mark.parametrize("domain", ["source", "target"])
def test_sampled_parameters_are_the_documented_typed_ones(domain):
    rng = np.random.default_rng(0)
    a, v = sample_patient(rng, domain), sample_view(rng, domain)
    assert set(a) == set(PatientAnatomy.__annotations__)
    assert set(v) == set(ViewParams.__annotations__)
    assert a["sex"] in ("F", "M") and v["view"] in ("PA", "AP") and len(v["jitter"]) == 2
