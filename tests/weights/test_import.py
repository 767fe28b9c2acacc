"""Importing torchvision-layout DenseNet checkpoints into Keras (issue 13).

The fixtures (tests/weights/fixtures, made by make_fixture.py with PyTorch) hold tiny
DenseNets (growth 4, blocks 1-2-2-1) with random weights and BatchNorm statistics and the
logits PyTorch computed for fixed inputs; these tests need no torch.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from cxrlib.data.taxonomy import NIH_FINDINGS
from cxrlib.weights import (CheckpointError, NotADenseNet, WeightsUnavailable, import_densenet,
                            read_checkpoint, registry, source_model_from_spec)
from cxrlib.weights.checkpoint import LEGACY_MAGIC
from cxrlib.weights.densenet import feature_logits, infer_spec, normalise_keys

FIX = Path(__file__).parent / "fixtures"
RGB = FIX / "densenet_tiny_rgb14.pt"
GRAY = FIX / "densenet_tiny_gray14_legacy.pt"
REF = np.load(FIX / "reference.npz")


@pytest.mark.parametrize("name,path,fmt,channels", [("rgb14", RGB, "zip", 3),
                                                    ("gray14", GRAY, "legacy", 1)])
def test_fixture_logits_match_pytorch(name, path, fmt, channels):
    x, want = REF[f"x_{name}"], REF[f"logits_{name}"]
    imported = import_densenet(path, classes="nih14", image_size=x.shape[1])
    assert imported.info["format"] == fmt
    assert imported.spec.in_channels == channels and imported.spec.growth_rate == 4
    assert imported.spec.blocks == (1, 2, 2, 1) and imported.spec.n_classes == 14
    assert imported.model.input_shape[1:] == (48, 48, channels)
    assert imported.classes == list(NIH_FINDINGS)
    got = feature_logits(imported.model, x)
    assert np.abs(got - want).max() < 1e-4
    # the sigmoid head gives the probabilities of those logits
    prob = imported.model.predict(x, verbose=0)
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-want)), atol=1e-5)


def test_gray_input_into_rgb_stem_repeats_the_plane():
    x = REF["x_rgb14"][..., :1]  # one grey plane
    imported = import_densenet(RGB, image_size=48, channels=1)
    assert imported.model.get_layer("gray_to_rgb")
    rgb = import_densenet(RGB, image_size=48)
    np.testing.assert_allclose(feature_logits(imported.model, x),
                               feature_logits(rgb.model, np.repeat(x, 3, axis=-1)), atol=1e-5)


def test_layer_names_match_keras_densenet():
    """The any-growth builder names and shapes every weighted layer as keras' DenseNet does."""
    from keras.src.applications import densenet
    from tensorflow import keras

    from cxrlib.models import _densenet_any_growth

    blocks = (1, 2, 2, 1)
    ours = _densenet_any_growth(keras.Input((64, 64, 3)), blocks, growth_rate=32, init_features=64)
    ref = densenet.DenseNet(list(blocks), include_top=False, weights=None, input_shape=(64, 64, 3))
    weighted = lambda m: [(l.name, [w.shape for w in l.weights]) for l in m.layers if l.weights]  # noqa: E731
    assert weighted(ours) == weighted(ref)


def test_imported_model_has_torch_epsilon_and_a_head():
    from tensorflow import keras

    model = import_densenet(RGB, image_size=48).model
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and all(l.epsilon == 1e-5 for l in bns)
    assert model.layers[-1].name == "head" and model.get_layer("conv2_block1_1_conv")


def test_cli_import_writes_h5_and_json_that_reload_exactly(tmp_path):
    from cxrlib.cli import main
    from cxrlib.models import load_model

    out = tmp_path / "model.h5"
    assert main(["weights", "import", str(GRAY), "-o", str(out), "--image-size", "48",
                 "--classes", "nih14"]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["classes"] == list(NIH_FINDINGS) and meta["format"] == "legacy"
    assert meta["architecture"]["in_channels"] == 1
    model = load_model(out)
    got = feature_logits(model, REF["x_gray14"])
    assert np.abs(got - REF["logits_gray14"]).max() < 1e-4  # epsilon 1e-5 survives the .h5


def test_output_neuron_keeping_finds_pneumonia(tmp_path):
    from cxrlib import transfer

    model, classes, pre = source_model_from_spec(f"checkpoint:{RGB}", 48, 3, classes="nih14")
    target = transfer.replace_head(model, 3, "softmax")
    kept = transfer.keep_output_neurons(model.get_layer("head"), target, classes,
                                        ["normal", "pneumonia", "covid19"],
                                        transfer.DEFAULT_KEEP_NEURONS["paper_b"])
    assert kept[0]["source"] == "Pneumonia" and kept[0]["target"] == "pneumonia"
    k_src, b_src = model.get_layer("head").get_weights()
    k_tgt, b_tgt = target.get_layer("head").get_weights()
    i = classes.index("Pneumonia")
    np.testing.assert_array_equal(k_tgt[:, 1], k_src[:, i])
    assert b_tgt[1] == b_src[i]
    assert pre.name == "imagenet" and pre.keras_backbone == "densenet121"


def test_known_weight_set_is_read_from_the_keras_cache_and_selected_by_name(tmp_path, monkeypatch):
    """A cached published set (here: the fixture under a fake name) with its own output order."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("CXR_NO_DOWNLOAD", "1")
    order = tuple(reversed(NIH_FINDINGS))
    ws = registry.WeightSet("tiny-test", "https://example.invalid/tiny.pt", "tiny-test.pt", order,
                            registry.XRV, channels=3, image_size=48)
    monkeypatch.setitem(registry.WEIGHT_SETS, "tiny-test", ws)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny-test.pt").write_bytes(RGB.read_bytes())
    imported = import_densenet("tiny-test", classes="nih14")
    assert imported.classes == list(NIH_FINDINGS) and imported.preprocessing.name == "xrv"
    got = feature_logits(imported.model, REF["x_rgb14"])
    np.testing.assert_allclose(got, REF["logits_rgb14"][:, ::-1], atol=1e-4)  # reordered by name
    assert imported.info["weight_set"] == "tiny-test"


def test_offline_error_names_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("CXR_NO_DOWNLOAD", "1")
    with pytest.raises(WeightsUnavailable) as err:
        import_densenet("chexnet")
    msg = str(err.value)
    assert "reproduce-chexnet-checkpoint" in msg
    assert str(tmp_path / "models" / "reproduce-chexnet-checkpoint") in msg
    assert "https://github.com/jrzech/reproduce-chexnet" in msg


def test_registry_classes_keep_pneumonia_named():
    for name in ("chexnet", "chexnet-arnoweng", "densenet121-res224-nih", "densenet121-res224-all",
                 "densenet121-res224-chex", "densenet121-res224-rsna"):
        ws = registry.get_weight_set(name)
        assert "Pneumonia" in ws.classes, name
    nih = registry.get_weight_set("densenet121-res224-nih")
    assert len(nih.classes) == 18 and set(NIH_FINDINGS) <= set(nih.classes)
    assert nih.channels == 1 and nih.preprocessing.name == "xrv"
    with pytest.raises(KeyError, match="known: chexnet"):
        registry.get_weight_set("chexnet-typo")


def test_wrong_class_count_is_an_error():
    with pytest.raises(ValueError, match="14 outputs but 3 class names"):
        import_densenet(RGB, classes="a,b,c", image_size=48)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        import_densenet(tmp_path / "nope.pt")


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "image.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(CheckpointError, match="image.png"):
        read_checkpoint(bad)


def _write_legacy(path: Path, obj) -> None:
    """A legacy torch.save file of plain Python objects (no tensors)."""
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        pickle.dump(obj, f, protocol=2)
        pickle.dump([], f, protocol=2)


def test_state_dict_with_missing_and_unexpected_keys_is_named(tmp_path):
    sd = normalise_keys(read_checkpoint(RGB).state_dict)
    sd.pop("features.denseblock2.denselayer1.conv1.weight")
    sd["features.extra.weight"] = np.zeros(3, np.float32)
    from cxrlib.weights.densenet import check_keys

    with pytest.raises(NotADenseNet) as err:
        check_keys(sd, infer_spec(normalise_keys(read_checkpoint(RGB).state_dict)))
    msg = str(err.value)
    assert "missing (1): features.denseblock2.denselayer1.conv1.weight" in msg
    assert "unexpected (1): features.extra.weight" in msg


def test_resnet_like_state_dict_is_not_a_densenet():
    from cxrlib.weights.densenet import infer_spec as spec_of

    with pytest.raises(NotADenseNet, match="conv1.weight"):
        spec_of({"conv1.weight": np.zeros((64, 3, 7, 7)), "fc.weight": np.zeros((10, 64))})


def test_restricted_unpickler_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    _write_legacy(path, {"state_dict": Evil()})
    with pytest.raises(CheckpointError, match="no weights found"):
        read_checkpoint(path)
    assert not marker.exists()


def test_truncated_legacy_file(tmp_path):
    data = GRAY.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="cut.pt"):
        read_checkpoint(cut)
    assert struct.calcsize("<q") == 8


def test_verify_against_pytorch():
    pytest.importorskip("torch")
    from cxrlib.weights.verify import verify

    result = verify(GRAY, image_size=48, n_images=2)
    assert result["max_abs_logit_diff"] < 1e-4 and result["in_channels"] == 1


def test_arnoweng_and_dataparallel_key_styles_are_normalised():
    """arnoweng/CheXNet: module.densenet121.features...norm.1.weight, classifier.0.weight."""
    import re

    sd = normalise_keys(read_checkpoint(RGB).state_dict)
    old = {}
    for k, v in sd.items():
        k2 = re.sub(r"\.(norm|conv)([12])\.", r".\1.\2.", k).replace("classifier.", "classifier.0.")
        old[f"module.densenet121.{k2}"] = v
    assert any(".norm.1." in k for k in old)
    back = normalise_keys(old)
    assert set(back) == set(sd)
    assert all(np.array_equal(back[k], sd[k]) for k in sd)


@pytest.mark.parametrize("args,message", [
    (["missing.pt"], "checkpoint not found"),
    ([str(FIX / "reference.npz")], "without data.pkl is not a torch.save checkpoint"),
    ([str(RGB), "--classes", "a,b"], "14 outputs but 2 class names"),
    ([str(GRAY), "--channels", "3"], "1-channel stem"),
])
def test_cli_import_errors_exit_2_with_the_reason(tmp_path, capsys, args, message):
    from cxrlib.cli import main

    assert main(["weights", "import", *args, "-o", str(tmp_path / "m.h5")]) == 2
    err = capsys.readouterr().err
    assert "cxr weights import: error:" in err and message in err
    assert not (tmp_path / "m.h5").exists()


def test_tensor_views_outside_their_storage_are_refused():
    from cxrlib.weights.checkpoint import _Storage, _TensorRef

    st = _Storage(np.dtype(np.float32), 6, "0", data=np.arange(6, dtype=np.float32))
    np.testing.assert_array_equal(_TensorRef(st, 2, (2, 2), (2, 1)).array(), [[2, 3], [4, 5]])
    with pytest.raises(CheckpointError, match="exceeds its 6 elements"):
        _TensorRef(st, 3, (2, 2), (2, 1)).array()
