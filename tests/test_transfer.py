"""Transfer: head replacement, output neuron keeping (bit for bit), freezing schedules."""

from __future__ import annotations

import numpy as np
import pytest
from tensorflow import keras

from cxrlib import models, transfer
from cxrlib.data.taxonomy import NIH_FINDINGS, task_classes

SHAPE = (32, 32, 3)


@pytest.fixture(scope="module")
def source_h5(tmp_path_factory):
    """A 14-finding sigmoid source model with a non-trivial head, saved as .h5."""
    m = models.build_model("compact_densenet", SHAPE, 14, "sigmoid")
    k, b = m.get_layer("head").get_weights()
    rng = np.random.default_rng(1)
    m.get_layer("head").set_weights([rng.normal(size=k.shape).astype(np.float32),
                                     rng.normal(size=b.shape).astype(np.float32)])
    return models.save_model(m, tmp_path_factory.mktemp("src") / "model.h5")


def test_output_neuron_keeping_copies_kernel_column_and_bias_bit_for_bit(source_h5):
    src = models.load_model(source_h5)
    sk, sb = src.get_layer("head").get_weights()
    classes = list(task_classes("paper_b_viral"))
    model, info = transfer.init_model("twice", "compact_densenet", SHAPE, classes, source_model=source_h5,
                                      source_classes=NIH_FINDINGS,
                                      keep_neurons={"Pneumonia": "viral_pneumonia"})
    tk, tb = model.get_layer("head").get_weights()
    i, j = NIH_FINDINGS.index("Pneumonia"), classes.index("viral_pneumonia")
    assert info["kept_neurons"] == [{"source": "Pneumonia", "target": "viral_pneumonia",
                                     "source_index": i, "target_index": j}]
    assert tk[:, j].tobytes() == sk[:, i].tobytes()  # bit for bit
    assert tb[j].tobytes() == sb[i].tobytes()
    others = [c for c in range(len(classes)) if c != j]
    assert (tb[others] == 0).all()  # fresh neurons: zero bias, new glorot kernel
    for c in others:
        assert not any(np.allclose(tk[:, c], sk[:, s]) for s in range(14))
    assert model.get_layer("head").activation is keras.activations.softmax
    # the backbone weights are the source's
    for name in ("conv1/conv", "conv5_block2_2_conv"):
        np.testing.assert_array_equal(model.get_layer(name).get_weights()[0],
                                      src.get_layer(name).get_weights()[0])


def test_without_keeping_the_whole_head_is_fresh(source_h5):
    model, info = transfer.init_model("domain_extension", "compact_densenet", SHAPE, ["a", "b", "c", "d"],
                                      source_model=source_h5)
    assert info["kept_neurons"] == [] and model.output_shape == (None, 4)
    assert (model.get_layer("head").get_weights()[1] == 0).all()


def test_keep_neurons_errors_name_the_class(source_h5):
    with pytest.raises(ValueError, match="'Pneumonitis' is not a source output"):
        transfer.init_model("twice", "compact_densenet", SHAPE, ["normal", "pneumonia"], source_model=source_h5,
                            source_classes=NIH_FINDINGS, keep_neurons={"Pneumonitis": "pneumonia"})
    with pytest.raises(ValueError, match="'flu' is not a target class"):
        transfer.init_model("twice", "compact_densenet", SHAPE, ["normal", "pneumonia"], source_model=source_h5,
                            source_classes=NIH_FINDINGS, keep_neurons={"Pneumonia": "flu"})
    with pytest.raises(ValueError, match="only applies"):
        transfer.init_model("scratch", "plain_cnn", SHAPE, ["a", "b"], keep_neurons={"Pneumonia": "a"})
    with pytest.raises(ValueError, match="input"):
        transfer.init_model("twice", "compact_densenet", (64, 64, 3), ["a", "b"], source_model=source_h5)


def test_imagenet_fallback_is_recorded(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("CXR_NO_DOWNLOAD", "1")
    with pytest.raises(models.ImageNetWeightsUnavailable):
        transfer.init_model("imagenet", "vgg16", SHAPE, ["a", "b"])
    _, info = transfer.init_model("imagenet", "vgg16", SHAPE, ["a", "b"], allow_scratch_fallback=True)
    assert info["init"] == "scratch (imagenet unavailable)"
    assert info["imagenet_weights"].startswith("unavailable")


def _trainable_names(model):
    return {layer.name for layer in model.layers if layer.trainable and layer.weights}


def test_freezing_schedules_select_the_right_layers():
    m = models.build_model("compact_densenet", SHAPE, 3)
    blocks = models.layer_blocks(m)
    bn = {layer.name for layer in m.layers if isinstance(layer, keras.layers.BatchNormalization)}

    s = transfer.set_trainable(m, "head")
    assert _trainable_names(m) == {"head"} and s["trainable_blocks"] == []
    assert s["trainable_params"] == sum(int(np.prod(w.shape)) for w in m.get_layer("head").weights)

    s = transfer.set_trainable(m, 2, bn="frozen")
    top = {layer.name for _, layers in blocks[-2:] for layer in layers if layer.weights}
    assert _trainable_names(m) == (top - bn) | {"head"}
    assert s["trainable_blocks"] == [blocks[-2][0], blocks[-1][0]] == ["conv5_block1", "conv5_block2"]
    assert "relu" in {layer.name for layer in blocks[-1][1]}  # final bn/relu join the last block

    transfer.set_trainable(m, 2, bn="train")
    assert _trainable_names(m) == top | {"head"}

    transfer.set_trainable(m, "all", bn="frozen")
    all_w = {layer.name for layer in m.layers if layer.weights}
    assert _trainable_names(m) == all_w - bn
    transfer.set_trainable(m, "all", bn="train")
    assert _trainable_names(m) == all_w
    transfer.set_trainable(m, "all")  # bn="auto": BN trains when everything trains (scratch)
    assert _trainable_names(m) == all_w
    s = transfer.set_trainable(m, 2)  # bn="auto": partial fine-tuning keeps BN frozen
    assert _trainable_names(m) == (top - bn) | {"head"} and s["bn"] == "frozen"
    transfer.set_trainable(m, "none")
    assert _trainable_names(m) == set() and not m.trainable_weights
    with pytest.raises(ValueError):
        transfer.set_trainable(m, "some")


def test_phase_parsing():
    phases = transfer.warmup_then_finetune(1, 2, lr=1e-3, finetune_lr=1e-5, top_blocks=3)
    assert [(p.epochs, p.trainable, p.lr) for p in phases] == [(1, "head", 1e-3), (2, 3, 1e-5)]
    parsed = transfer.parse_phases([{"epochs": 2, "trainable": "head"}], epochs=9, lr=0.01)
    assert parsed[0].lr == 0.01 and parsed[0].epochs == 2
    assert transfer.parse_phases(None, epochs=4, lr=0.1)[0].trainable == "all"
    with pytest.raises(ValueError, match="bn"):
        transfer.parse_phases([{"epochs": 1, "bn": "maybe"}], 1, 0.1)
