"""``cxr predict`` / ``cxr evaluate`` on a tiny stage: every format, corrupt files named and counted."""

import json

import numpy as np
import pandas as pd
import pytest

from cxrlib.cli import main

CLASSES = ["normal", "pneumonia", "covid19"]


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """A finished stage folder: tiny CNN (16 px, plain_cnn preprocessing) + config/metrics."""
    from tensorflow import keras

    from cxrlib import io, models

    d = tmp_path_factory.mktemp("stage")
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    models.save_model(keras.Model(inp, out), d / "model.h5")
    io.write_json(d / "config.json", {"config": {"name": "tiny", "image_size": 16, "channels": 3,
                                                 "backbone": "plain_cnn", "resize_mode": "pad"},
                                      "classes": CLASSES, "multi_label": False})
    io.write_json(d / "metrics.json", {"test": {"accuracy": 0.9, "per_class": {c: {"recall": 0.9} for c in CLASSES}}})
    return d


def _images(folder):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arr = (rng.random((40, 30)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(folder / "a.png")
    Image.fromarray(arr).convert("RGB").save(folder / "b.jpg", quality=90)
    Image.fromarray(arr).save(folder / "c.jfif", format="JPEG")
    (folder / "sub").mkdir()
    Image.fromarray(arr).save(folder / "sub" / "d.webp", format="WEBP")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)  # corrupt
    (folder / "notes.txt").write_text("not an image, not collected")
    return ["a.png", "b.jpg", "c.jfif", "sub/d.webp"]


def test_predict_folder_of_formats_names_the_corrupt_file(stage, tmp_path, capsys):
    good = _images(tmp_path / "imgs")
    out = tmp_path / "out"
    assert main(["predict", str(stage), str(tmp_path / "imgs"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "broken.png" in printed and "4 image(s) predicted, 1 unreadable" in printed
    table = pd.read_csv(out / "predictions.csv")
    assert sorted(p.split("imgs/")[1] for p in table["path"]) == sorted(good)
    probs = table[[f"prob_{c}" for c in CLASSES]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (table["pred"] == [CLASSES[i] for i in probs.argmax(1)]).all()
    assert pd.read_csv(out / "unreadable.csv")["path"].str.endswith("broken.png").tolist() == [True]


def test_predict_matches_the_stage_preprocessing(stage, tmp_path):
    from cxrlib.data.pipeline import load_images
    from cxrlib.models import load_model
    from cxrlib.predict import load_predictor, predict_files

    _images(tmp_path / "imgs")
    res = predict_files(load_predictor(stage), [tmp_path / "imgs" / "a.png"], tmp_path / "o", explain="gradcam")
    x = load_images(pd.DataFrame({"path": [str(tmp_path / "imgs" / "a.png")]}), "/", 16, channels=3,
                    backbone="plain_cnn")
    direct = load_model(stage / "model.h5").predict(x, verbose=0)[0]
    assert np.allclose(res.table[[f"prob_{c}" for c in CLASSES]].to_numpy()[0], direct, atol=1e-6)
    assert (tmp_path / "o" / res.table["gradcam_png"][0]).is_file()


def test_evaluate_writes_metrics_and_page(stage, tmp_path, capsys):
    _images(tmp_path / "imgs")
    rows = [("imgs/a.png", "normal"), ("imgs/b.jpg", "covid19"), ("imgs/c.jfif", "normal"),
            ("imgs/broken.png", "pneumonia"), ("imgs/sub/d.webp", "dog")]
    m = pd.DataFrame([{"path": p, "patient_id": str(i), "source": "s", "view": "PA", "findings": "", "label": lab}
                      for i, (p, lab) in enumerate(rows)])
    m.to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "ev"
    assert main(["evaluate", str(stage), "--manifest", str(tmp_path / "m.csv"), "--root", str(tmp_path),
                 "--out", str(out), "--bootstrap", "50"]) == 0
    printed = capsys.readouterr().out
    assert "line 6, field 'label': 'dog'" in printed and "broken.png" in printed
    rec = json.loads((out / "metrics.json").read_text())
    assert rec["n_evaluated"] == 3 and rec["n_unreadable"] == 1 and rec["unreadable"][0].endswith("broken.png")
    pred = pd.read_csv(out / "predictions.csv")
    assert rec["metrics"]["accuracy"] == pytest.approx((pred["label"] == pred["pred"]).mean())
    assert "NOT checked" in (out / "index.html").read_text()


def test_evaluate_checks_overlap_with_the_stages_own_manifest(stage, tmp_path):
    import shutil

    from cxrlib import io
    from cxrlib.predict_cli import evaluate_stage

    from PIL import Image

    _images(tmp_path / "imgs")
    Image.fromarray((np.random.default_rng(5).random((40, 30)) * 255).astype(np.uint8)).save(tmp_path / "imgs/e.png")
    rows = [{"path": p, "patient_id": pid, "source": "s", "view": "PA", "findings": "", "label": "normal"}
            for p, pid in (("imgs/a.png", "1"), ("imgs/c.jfif", "3"), ("imgs/e.png", "4"))]
    pd.DataFrame(rows[:1]).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    own = tmp_path / "own_stage"
    shutil.copytree(stage, own)
    cfg = io.read_json(own / "config.json")
    cfg["config"].update(manifest=str(tmp_path / "train.csv"), root=str(tmp_path))
    io.write_json(own / "config.json", cfg)
    rec = evaluate_stage(own, tmp_path / "m.csv", tmp_path, tmp_path / "ev", n_boot=0)
    # a.png trained on; the JFIF is a re-encoding of the same pixels as a.png (near copy): both removed
    assert rec["removed"] == {"duplicates a training image": 1, "same file as a training image": 1}
    assert rec["n_evaluated"] == 1 and "stage config" in " ".join(rec["notes"])
