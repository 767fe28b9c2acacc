"""Training loop: validation metrics per epoch, best-weights restore, schedules, determinism,
MirroredStrategy over two logical CPU devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from cxrlib import evaluation, models, training

CLASSES = ["normal", "pneumonia", "covid19"]


def _data(n=36, seed=0):
    rng = np.random.default_rng(seed)
    y = np.eye(3, dtype=np.float32)[np.arange(n) % 3]
    x = rng.normal(size=(n, 32, 32, 1)).astype(np.float32)
    x[:, :8, :8, 0] += 3 * y[:, :1, None]  # class 0 has a bright corner: learnable
    return (x[:24], y[:24]), (x[24:], y[24:])


def _fit(tmp_path=None, **cfg):
    train, val = _data()
    base = dict(epochs=2, lr=3e-3, verbose=0, tensorboard=tmp_path is not None, early_stopping=0)
    base.update(cfg)
    return training.fit(lambda: models.build_model("plain_cnn", (32, 32, 1), 3), train, val, CLASSES,
                        base, out_dir=tmp_path)


def test_history_csv_and_best_weights_restored(tmp_path):
    res = _fit(tmp_path, epochs=3, monitor="val_loss", lr_schedule="plateau")
    hist = pd.read_csv(tmp_path / "history.csv")
    for col in ["epoch", "phase", "lr", "loss", "accuracy", "val_loss", "val_accuracy", "val_macro_f1",
                "val_recall_normal", "val_recall_pneumonia", "val_recall_covid19"]:
        assert col in hist.columns, col
    assert list(hist["epoch"]) == [1, 2, 3]
    assert res.best_value == pytest.approx(hist["val_loss"].min())
    assert res.best_epoch == int(hist.loc[hist["val_loss"].idxmin(), "epoch"])
    # the returned model carries the best epoch's weights
    _, (xv, yv) = _data()
    logs = evaluation.epoch_metrics(yv, res.model.predict(xv, verbose=0), CLASSES)
    assert logs["val_loss"] == pytest.approx(res.best_value, rel=1e-5)
    assert (tmp_path / "best.h5").is_file()
    assert any((tmp_path / "tensorboard").rglob("events.out.tfevents*"))


def test_phases_cosine_sgd_and_macro_f1_monitor():
    res = _fit(optimizer="sgd", lr_schedule="cosine", monitor="val_macro_f1", class_weight=True,
               phases=[{"epochs": 1, "trainable": "head", "lr": 0.01}, {"epochs": 2, "trainable": 2, "lr": 0.001}])
    h = res.history
    assert list(h["phase"]) == [0, 1, 1]
    assert h["lr"].iloc[0] == pytest.approx(0.01) and h["lr"].iloc[1] == pytest.approx(0.001)
    assert h["lr"].iloc[2] == pytest.approx(0.0005)  # cosine: half-way through phase 1
    assert res.phases[0]["trainable_blocks"] == [] and res.phases[1]["trainable_blocks"] == ["block3", "block4"]
    assert res.best_value == pytest.approx(h["val_macro_f1"].max())


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="unknown training option"):
        training.TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="monitor"):
        training.TrainConfig.from_dict({"monitor": "val_auc"})


def test_same_config_gives_identical_numbers():
    a = _fit(epochs=2).history.drop(columns=["seconds"])
    b = _fit(epochs=2).history.drop(columns=["seconds"])
    pd.testing.assert_frame_equal(a, b, check_exact=True)


MIRRORED = textwrap.dedent("""
    import json, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    import numpy as np
    from cxrlib import models, training
    strategy = training.get_strategy("mirrored")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 32, 32, 1)).astype("float32")
    y = np.eye(2, dtype="float32")[np.arange(32) % 2]
    ds = tf.data.Dataset.from_tensor_slices((x[:24], y[:24])).batch(8)
    res = training.fit(lambda: models.build_model("plain_cnn", (32, 32, 1), 2), ds, (x[24:], y[24:]),
                       ["a", "b"], {"epochs": 1, "verbose": 0, "tensorboard": False, "distribute": "mirrored"})
    print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                      "variable_type": type(res.model.get_layer("head").kernel).__name__,
                      "val_loss": res.history["val_loss"].tolist()}))
""")


def _run_distributed(name: str) -> dict:
    # logical devices / collective ops must be configured before TF initialises: fresh process
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    out = subprocess.run([sys.executable, "-c", MIRRORED.replace('"mirrored"', repr(name))],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_mirrored_strategy_over_two_logical_cpus():
    r = _run_distributed("mirrored")
    assert r["replicas"] == 2
    assert r["variable_type"] == "MirroredVariable"
    assert np.isfinite(r["val_loss"]).all()


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CXR_TEST_MULTIWORKER"),
                    reason="~2 min of collective-ops set-up on 2 shared cores; set CXR_TEST_MULTIWORKER=1")
def test_multiworker_strategy_single_worker_without_tf_config():
    # without TF_CONFIG, MultiWorkerMirroredStrategy is one worker; on a CPU-only worker it
    # places one replica on the CPU (it spreads over local GPUs, not logical CPU devices)
    r = _run_distributed("multiworker")
    assert r["replicas"] == 1
    assert r["variable_type"] != "ResourceVariable"  # distributed (collective) variables
    assert np.isfinite(r["val_loss"]).all()
