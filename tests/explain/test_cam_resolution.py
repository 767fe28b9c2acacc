"""The mechanism that makes the demo's Grad-CAM land: cell geometry and the CAM layer's resolution.

Issue 11 item 2. A CAM cell must end up over the input pixels it looks at (without a known
geometry: half-pixel upsampling, :func:`cxrlib.explain.gradcam.upsample_cam`; with it, the
receptive-field centres, ``tests/explain/test_receptive_field.py``), and the demo configs must give
Grad-CAM a map taken from the model's *last* feature map (the one the head reads) with at least
6x6 cells at the demo image size (``stage.compact_blocks``, ``heatmaps.min_cam_size``).
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
import yaml

from cxrlib.explain.gradcam import target_layer, upsample_cam


@pytest.mark.parametrize("cell", [(0, 0), (1, 4), (4, 2), (5, 5)])
def test_upsampled_cell_centred_on_its_footprint(cell):
    cam = np.zeros((1, 6, 6), np.float32)
    cam[0][cell] = 1.0  # one hot cell of a 6x6 map -> 48 px: footprint rows/cols [8i, 8i + 8)
    up = upsample_cam(cam, (48, 48))[0]  # [48, 48]
    assert up.shape == (48, 48) and up.max() == pytest.approx(1.0)
    peak = np.argwhere(up == up.max())  # every pixel at the maximum
    lo = np.array(cell) * 8
    assert ((peak >= lo) & (peak < lo + 8)).all(), (cell, peak.min(0), peak.max(0))
    if 0 < cell[0] < 5 and 0 < cell[1] < 5:  # interior cell: mass centred on the footprint's centre
        rr, cc = np.indices(up.shape)
        centroid = np.array([(rr * up).sum(), (cc * up).sum()]) / up.sum()
        assert np.allclose(centroid, lo + 3.5, atol=0.25), centroid  # corner-aligned zoom: 9.4 * i


def test_upsample_keeps_empty_maps_zero_and_scales_to_unit_range():
    cam = np.zeros((2, 3, 3), np.float32)
    cam[1] = np.arange(9).reshape(3, 3) - 4.0  # negative cells are no evidence (ReLU)
    up = upsample_cam(cam, (12, 12))
    assert np.isfinite(up).all() and (up[0] == 0).all()
    assert up[1].min() == 0.0 and up[1].max() == pytest.approx(1.0)


def _demo_stage(name: str) -> tuple[dict, dict]:
    path = resources.files("cxrlib") / "notebooks" / "experiments" / f"{name}.yaml"
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    return cfg["stage"], cfg["heatmaps"]


@pytest.mark.parametrize("name", ["paper_a", "paper_b"])
def test_demo_cam_is_the_last_feature_map_at_least_6x6(name):
    """The demo's CAM comes from the layer the head reads, with enough cells to land on a lesion."""
    from cxrlib.models import build_model, last_conv_layer_name

    stage, heat = _demo_stage(name)
    size = int(stage["image_size"])
    kw = {"compact_blocks": tuple(stage["compact_blocks"])} if stage.get("compact_blocks") else {}
    model = build_model(stage["backbone"], (size, size, 3), 3, "softmax", **kw)
    layer = target_layer(model, "auto", heat.get("min_cam_size"))
    side = model.get_layer(layer).output.shape[1]
    assert layer == last_conv_layer_name(model), (layer, last_conv_layer_name(model))
    assert side >= 6, f"{name}: Grad-CAM layer {layer} is {side}x{side} at {size} px"
    methods = [m.lower() for m in heat["methods"]]
    assert "gradcam" in methods and any(m.startswith("lrp") for m in methods), methods


def test_compact_blocks_stage_option_is_validated(tmp_path):
    from cxrlib.experiment import resolve_config

    base = {"manifest": str(tmp_path / "m.csv"), "task": "paper_b"}
    assert resolve_config(base, compact_blocks=[6])["compact_blocks"] == [6]
    assert resolve_config(base)["compact_blocks"] is None
    for bad in ([], [0], ["2"], 3):
        with pytest.raises(ValueError, match="compact_blocks"):
            resolve_config(base, compact_blocks=bad)
    with pytest.raises(ValueError, match="compact_densenet"):
        resolve_config(base, compact_blocks=[2], backbone="plain_cnn")


@pytest.mark.slow
def test_one_block_densenet_cam_lands_on_the_evidence():
    """A 12x12-last-map compact DenseNet trained to spot a bright blob at a random place: its
    Grad-CAM (and LRP z+) put >= 2x the chance mass on the blob and point into it."""
    import tensorflow as tf

    from cxrlib.explain.factory import make_explainer
    from cxrlib.explain.scoring import mass_inside, pointing_game
    from cxrlib.models import build_model

    rng = np.random.default_rng(0)
    n, s = 320, 48
    yy, xx = np.mgrid[:s, :s]
    x = rng.normal(0.5, 0.12, (n, s, s)).astype(np.float32)  # [N, S, S] textured background
    y = rng.integers(0, 2, n)
    masks = np.zeros((n, s, s), bool)
    for i in range(n):
        cy, cx = rng.integers(8, s - 8, 2)
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 <= 25  # r = 5 px: ~3 % of the image
        x[i][blob] += 0.6 if y[i] else -0.6  # class 1: bright blob, class 0: dark blob
        masks[i] = blob
    x = np.repeat(x[..., None], 3, axis=-1)  # [N, S, S, 3]
    tf.keras.utils.set_random_seed(0)
    model = build_model("compact_densenet", (s, s, 3), 2, "softmax", compact_blocks=(4,))
    model.compile(tf.keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:256], y[:256], epochs=6, batch_size=32, verbose=0)
    xt, mt = x[256:], masks[256:]
    assert (model.predict(xt, verbose=0).argmax(1) == y[256:]).mean() > 0.8
    chance = mt.mean()
    for method in ("gradcam", "lrp.alpha_1_beta_0"):
        maps = make_explainer(method, model, min_cam_size=4).explain(xt).maps  # [64, S, S]
        mass = np.nanmean([mass_inside(m, k) for m, k in zip(maps, mt)])
        hits = np.mean([pointing_game(m, k) for m, k in zip(maps, mt)])
        assert mass >= 2 * chance and hits >= 0.5, (method, mass / chance, hits)
