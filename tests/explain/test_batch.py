import numpy as np
import pandas as pd
import pytest

from cxrlib.explain.batch import explain_manifest, read_heatmaps, save_overlay


@pytest.fixture(scope="module")
def phantom_model(tmp_path_factory):
    """8 phantom images, an untrained flat plain_cnn saved as .h5 (cxrlib.models)."""
    from cxrlib.data.manifest import read_manifest
    from cxrlib.data.phantoms import generate_phantoms
    from cxrlib.models import build_model, save_model

    root = tmp_path_factory.mktemp("ph")
    df = read_manifest(generate_phantoms(root, "paper_b", n=8, image_size=64, seed=1))
    path = save_model(build_model("plain_cnn", (32, 32, 3), 3, "softmax"), root / "run1" / "model.h5")
    return root, df, path


def test_overlay_png(tmp_path):
    from PIL import Image

    out = save_overlay(np.random.rand(16, 16), np.random.randn(16, 16), tmp_path / "o.png", "t", signed=True)
    im = Image.open(out)
    assert im.width > 2 * im.height  # three panels side by side


@pytest.mark.slow
def test_explain_manifest_writes_arrays_overlays_index_and_resumes(phantom_model, tmp_path):
    from cxrlib.data.pipeline import load_images
    from cxrlib.explain.gradcam import CamExplainer
    from cxrlib.models import load_model

    root, df, model_path = phantom_model
    classes = ["normal", "pneumonia", "covid19"]
    kw = dict(classes=classes, image_size=32, backbone="plain_cnn", progress=False)
    index = explain_manifest(df.head(3), root, model_path, tmp_path, methods=("gradcam", "lrp.epsilon"), **kw)
    assert len(index) == 6 and set(index["method"]) == {"gradcam", "lrp.epsilon"}
    for method in ("gradcam", "lrp.epsilon"):
        folder = tmp_path / "run1" / method
        idx, maps = read_heatmaps(folder)
        assert maps.shape == (3, 32, 32) and np.isfinite(maps).all()
        assert all((folder / p).is_file() for p in idx["png"])
        assert set(idx["class"]) <= set(classes)
    # the stored Grad-CAM maps are the in-process API's maps
    x = load_images(df.head(3), root, 32, backbone="plain_cnn")
    direct = CamExplainer(load_model(model_path)).explain(x).maps
    np.testing.assert_allclose(read_heatmaps(tmp_path / "run1" / "gradcam")[1], direct, atol=1e-6)
    # rerun on more rows: the 3 finished images are kept, 2 new ones added
    mtime = (tmp_path / "run1" / "gradcam" / index["npy"][0]).stat().st_mtime_ns
    again = explain_manifest(df.head(5), root, model_path, tmp_path, methods=("gradcam",), **kw)
    assert len(again) == 5
    assert (tmp_path / "run1" / "gradcam" / index["npy"][0]).stat().st_mtime_ns == mtime
    # asked for another class than the stored map explains: that image is explained again
    other = (int(again["class_index"][0]) + 1) % 3
    wanted = again["class_index"].to_numpy().copy()
    wanted[0] = other
    kept = (tmp_path / "run1" / "gradcam" / index["npy"][1]).stat().st_mtime_ns
    third = explain_manifest(df.head(5), root, model_path, tmp_path, methods=("gradcam",), class_index=wanted, **kw)
    assert third["class_index"].tolist() == wanted.tolist()
    assert (tmp_path / "run1" / "gradcam" / index["npy"][0]).stat().st_mtime_ns != mtime
    assert (tmp_path / "run1" / "gradcam" / index["npy"][1]).stat().st_mtime_ns == kept  # same class: kept
    direct = CamExplainer(load_model(model_path)).explain(x[:1], class_index=[other]).maps
    np.testing.assert_allclose(read_heatmaps(tmp_path / "run1" / "gradcam")[1][:1], direct, atol=1e-6)


def test_missing_model_and_bad_image_fail_before_work(phantom_model, tmp_path):
    root, df, model_path = phantom_model
    with pytest.raises(FileNotFoundError):
        explain_manifest(df, root, tmp_path / "none.h5", tmp_path)
    bad = df.head(2).copy()
    bad.loc[1, "path"] = "images/missing.png"
    with pytest.raises(Exception, match="missing.png"):
        explain_manifest(bad, root, model_path, tmp_path, image_size=32, backbone="plain_cnn")
    assert not (tmp_path / "run1").exists()


@pytest.mark.slow
def test_explain_models_keys_by_model_and_method_in_row_order(phantom_model, tmp_path):
    from cxrlib.explain.batch import explain_models

    root, df, model_path = phantom_model
    rows = df.head(4)
    kw = dict(classes=["normal", "pneumonia", "covid19"], image_size=32, backbone="plain_cnn", progress=False)
    explain_manifest(rows.iloc[[2]], root, model_path, tmp_path, methods=("gradcam",), model_name="a", **kw)
    got = explain_models({"a": model_path.parent, "b": model_path}, rows, root, tmp_path,
                         ["gradcam", "lrp.epsilon"], min_cam_size=4, **kw)
    assert set(got) == {(m, k) for m in "ab" for k in ("gradcam", "lrp.epsilon")}
    for (model, method), h in got.items():
        index, maps = read_heatmaps(tmp_path / model / method)
        assert h.maps.shape == (4, 32, 32) and h.signed == method.startswith("lrp")
        for i, p in enumerate(rows["path"]):  # resumed file order differs; maps follow the rows
            np.testing.assert_array_equal(h.maps[i], maps[list(index["path"]).index(p)])
    # LRP ran in a second thread beside Grad-CAM: the maps are those each explainer gives alone
    from cxrlib.explain.batch import load_for_explaining
    from cxrlib.explain.factory import make_explainer

    x, _ = load_for_explaining(rows, root, 32, 3, "plain_cnn")
    for method in ("gradcam", "lrp.epsilon"):
        with make_explainer(method, model_path, min_cam_size=4) as alone:
            np.testing.assert_allclose(got[("b", method)].maps, alone.explain(x).maps, rtol=1e-5, atol=1e-6)
    # images the caller loaded already are used as they are (not loaded again), same maps
    import cxrlib.explain.batch as B

    images = load_for_explaining(rows, root, 32, 3, "plain_cnn")
    real, B.load_for_explaining = B.load_for_explaining, None  # a second load would fail
    try:
        again = explain_models({"b": model_path}, rows, root, tmp_path / "again", ["gradcam"], min_cam_size=4,
                               images=images, **kw)
    finally:
        B.load_for_explaining = real
    np.testing.assert_allclose(again[("b", "gradcam")].maps, got[("b", "gradcam")].maps, rtol=1e-5, atol=1e-6)
