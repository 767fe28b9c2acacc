"""tf.data pipeline (cxrlib/data/pipeline.py): decode, geometry, targets, cache, shuffle, weights."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlib.data import pipeline as P
from cxrlib.data.images import BadImageError, read_image
from cxrlib.data.manifest import ManifestError, new_manifest
from cxrlib.data.taxonomy import NIH_FINDINGS, task_classes

from test_images import GRAY16, write_mode_files  # tests/data is on sys.path (rootdir import mode)

CLASSES = ("normal", "pneumonia", "covid19")


def _manifest(names, labels=None, findings=None) -> pd.DataFrame:
    labels = labels or ["normal"] * len(names)
    findings = findings or [""] * len(names)
    return new_manifest([dict(path=n, patient_id=f"p{i}", source="t", view="PA", findings=f, label=lab)
                         for i, (n, lab, f) in enumerate(zip(names, labels, findings))])


def _constant_images(folder, n, size=(8, 12)):
    """n gray PNGs, image i filled with the value 10*i+5 (identifies it after shuffling)."""
    names = []
    for i in range(n):
        name = f"c{i}.png"
        Image.fromarray(np.full(size, 10 * i + 5, np.uint8)).save(folder / name)
        names.append(name)
    return names


def _ids(ds) -> list[int]:
    """Image ids (see _constant_images) in dataset order, from the raw (backbone=None) values."""
    return [int(round((float(x.max()) - 5) / 10)) for xb, _ in ds for x in xb.numpy()]


def test_every_mode_matches_pil_reader(tmp_path):
    files = write_mode_files(tmp_path)
    df = _manifest(list(files))
    # stretch to the native 6x5 size: resize is the identity, so we compare decoders
    x = P.load_images(df, tmp_path, image_size=(6, 5), channels=3, resize_mode="stretch")
    assert x.shape == (len(files), 6, 5, 3) and x.dtype == np.float32
    for img, name in zip(x, files):
        ref = read_image(tmp_path / name, channels=3).astype(np.float64)
        if ref.dtype == np.uint16 or "gray16" in name:
            ref = ref / 257.0
        tol = 1.0 if name.endswith(("jpg", "jpeg")) else 1e-3  # TF and PIL JPEG decoders may differ
        assert np.abs(img - ref).mean() <= tol, name
    gray = P.load_images(df, tmp_path, image_size=(6, 5), channels=1, resize_mode="stretch")
    assert gray.shape == (len(files), 6, 5, 1)


def test_16bit_precision_survives_the_pipeline(tmp_path):
    Image.fromarray(GRAY16).save(tmp_path / "g16.png")
    x = P.load_images(_manifest(["g16.png"]), tmp_path, image_size=(6, 5), channels=1, resize_mode="stretch")
    np.testing.assert_allclose(x[0, ..., 0], GRAY16 / 257.0, atol=1e-3)
    assert len(np.unique(np.round(x, 4))) == 30  # 8-bit decoding would merge these levels


def test_make_dataset_shapes_dtypes_targets(tmp_path):
    names = _constant_images(tmp_path, 5)
    labels = ["normal", "covid19", "pneumonia", "covid19", "normal"]
    ds = P.make_dataset(_manifest(names, labels), tmp_path, CLASSES, image_size=16, batch_size=2)
    batches = list(ds)
    assert [len(b[0]) for b in batches] == [2, 2, 1]
    x, y = batches[0]
    assert x.dtype.name == "float32" and x.shape == (2, 16, 16, 3)
    assert y.dtype.name == "float32" and y.shape == (2, 3)
    targets = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(targets, P.encode_targets(_manifest(names, labels), CLASSES))
    np.testing.assert_array_equal(targets.argmax(1), [0, 2, 1, 2, 0])


def test_backbone_preprocessing_applied(tmp_path):
    names = _constant_images(tmp_path, 2)
    raw = next(iter(P.make_dataset(_manifest(names), tmp_path, CLASSES, 8, backbone=None, resize_mode="stretch")))[0]
    plain = next(iter(P.make_dataset(_manifest(names), tmp_path, CLASSES, 8, backbone="plain_cnn", resize_mode="stretch")))[0]
    dense = next(iter(P.make_dataset(_manifest(names), tmp_path, CLASSES, 8, resize_mode="stretch")))[0]
    np.testing.assert_allclose(raw.numpy()[0], 5.0, atol=1e-4)
    np.testing.assert_allclose(plain.numpy(), raw.numpy() / 255.0, atol=1e-6)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(dense.numpy()[0, 0, 0], (5 / 255 - mean) / std, atol=1e-5)


def test_preprocess_for_known_modes():
    x = np.full((1, 2, 2, 3), 255.0, np.float32)
    x[..., 0] = 0.0  # R = 0, G = B = 255
    vgg = P.preprocess_for("vgg16")(x).numpy()
    np.testing.assert_allclose(vgg[0, 0, 0], [255 - 103.939, 255 - 116.779, 0 - 123.68], atol=1e-4)  # BGR
    one = P.preprocess_for("densenet121")(np.full((1, 2, 2, 1), 255.0, np.float32)).numpy()
    assert one.shape == (1, 2, 2, 1)
    with pytest.raises(ValueError, match="unknown backbone"):
        P.preprocess_for("alexnet")


def test_pad_vs_crop_vs_stretch_geometry(tmp_path):
    # 20 x 40 image: black left and right quarters, white centre square
    img = np.zeros((20, 40), np.uint8)
    img[:, 10:30] = 255
    Image.fromarray(img).save(tmp_path / "wide.png")
    df = _manifest(["wide.png"])
    pad = P.load_images(df, tmp_path, 16, channels=1, resize_mode="pad")[0, ..., 0]
    crop = P.load_images(df, tmp_path, 16, channels=1, resize_mode="crop")[0, ..., 0]
    stretch = P.load_images(df, tmp_path, 16, channels=1, resize_mode="stretch")[0, ..., 0]
    # pad: 40 -> 16 wide, 20 -> 8 high, 4 black rows above and below
    assert np.all(pad[:4] == 0) and np.all(pad[-4:] == 0)
    assert pad[8, 8] > 250 and pad[8, 0] < 5 and pad[8, 15] < 5
    # crop: the centred 20 x 20 square is all white
    assert crop.min() > 250
    # stretch: no black rows, black left/right quarters remain
    assert stretch[0, 8] > 250 and stretch[8, 0] < 5


def test_disk_cache_is_written_reused_and_invalidated(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    names = _constant_images(data, 3)
    df = _manifest(names)
    cache = tmp_path / "cache"

    def ids():
        return _ids(P.make_dataset(df, data, CLASSES, 8, backbone=None, cache=cache))

    assert ids() == [0, 1, 2]
    written = sorted(os.listdir(cache))
    assert sum(f.endswith(".npy") for f in written) == 1
    assert len((cache / P.SCAN_MEMO).read_text().splitlines()) == 3  # scan results remembered
    # a complete cache of the same files is not scanned again (nothing is decoded)
    monkeypatch.setattr(P.cxr_images, "scan_images", lambda *a, **k: pytest.fail("scanned again"))
    P.make_dataset(df, data, CLASSES, 8, cache=cache, check=True)
    monkeypatch.undo()
    # overwrite image 0 with image 2's pixels but keep size and mtime: the cache is read
    st = os.stat(data / names[0])
    (data / names[0]).write_bytes((data / names[2]).read_bytes())
    os.utime(data / names[0], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(data / names[0]).st_size == st.st_size  # constant PNGs compress alike
    assert ids() == [0, 1, 2]
    # a new mtime changes the fingerprint: a new cache with the new pixels
    os.utime(data / names[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert ids() == [2, 1, 2]
    assert len([f for f in os.listdir(cache) if f.endswith(".npy")]) == 2


def test_memory_cache_and_seeded_shuffle_are_deterministic(tmp_path):
    names = _constant_images(tmp_path, 8)
    df = _manifest(names)
    for cache in (None, "memory"):
        ds = P.make_dataset(df, tmp_path, CLASSES, 8, backbone=None, shuffle=True, seed=3, cache=cache, batch_size=3)
        again = P.make_dataset(df, tmp_path, CLASSES, 8, backbone=None, shuffle=True, seed=3, cache=cache, batch_size=3)
        other = P.make_dataset(df, tmp_path, CLASSES, 8, backbone=None, shuffle=True, seed=4, cache=cache, batch_size=3)
        e1, e2 = _ids(ds), _ids(ds)
        assert sorted(e1) == list(range(8))  # every image exactly once per epoch
        assert e1 != e2  # reshuffled each epoch
        assert [e1, e2] == [_ids(again), _ids(again)]  # same seed, same orders
        assert _ids(other) != e1


def test_augmentation_is_seeded_and_varies_per_epoch(tmp_path):
    img = np.zeros((16, 16), np.uint8)
    img[4:12, 2:8] = 200
    Image.fromarray(img).save(tmp_path / "a.png")
    df = _manifest(["a.png"] * 1)

    def epochs(seed):
        ds = P.make_dataset(df, tmp_path, CLASSES, 16, backbone=None, augment=True, seed=seed)
        return [next(iter(ds))[0].numpy() for _ in range(2)]

    a1, a2 = epochs(0)
    b1, b2 = epochs(0)
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)
    assert not np.allclose(a1, a2)
    assert a1.shape == (1, 16, 16, 3) and a1.min() >= 0 and a1.max() <= 255
    assert P.Augmentation().horizontal_flip is False


def test_zero_augmentation_is_identity_and_flip_only_when_asked(tmp_path):
    img = np.zeros((16, 16), np.uint8)
    img[2:14, 1:5] = 250  # bright band on the left only
    Image.fromarray(img).save(tmp_path / "left.png")
    df = _manifest(["left.png"] * 12)
    still = dict(rotation=0.0, shift=0.0, zoom=0.0, brightness=0.0, contrast=0.0)
    raw = P.load_images(df[:1], tmp_path, 16, channels=1)[0]

    def batch(**aug):
        ds = P.make_dataset(df, tmp_path, CLASSES, 16, channels=1, backbone=None, batch_size=12, augment=aug)
        return next(iter(ds))[0].numpy()

    np.testing.assert_allclose(batch(**still), np.repeat(raw[None], 12, 0), atol=1e-3)  # no flip by default
    flipped = [x[8, 2, 0] < 10 and x[8, 13, 0] > 200 for x in batch(**still, horizontal_flip=True)]
    assert 0 < sum(flipped) < 12


def test_bad_image_stops_before_training(tmp_path):
    names = _constant_images(tmp_path, 2)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(BadImageError, match="broken.png"):
        P.make_dataset(_manifest(names + ["broken.png"]), tmp_path, CLASSES, 8)


def test_single_label_errors_name_the_line():
    with pytest.raises(ManifestError, match="line 3.*'flu'"):
        P.encode_targets(_manifest(["a", "b"], ["normal", "flu"]), CLASSES)
    with pytest.raises(ManifestError, match="line 2.*empty label"):
        P.encode_targets(_manifest(["a"], [""]), CLASSES)


def test_multi_label_encoding():
    df = _manifest(["a", "b", "c"], findings=["Effusion|Mass", "No Finding", "Hernia"])
    y = P.encode_targets(df, NIH_FINDINGS, multi_label=True)
    assert y.shape == (3, 14)
    assert y[0].sum() == 2 and y[0, NIH_FINDINGS.index("Effusion")] == 1 and y[0, NIH_FINDINGS.index("Mass")] == 1
    assert y[1].sum() == 0 and y[2, NIH_FINDINGS.index("Hernia")] == 1
    bad = _manifest(["a"], findings=["Effusion|COVID-19"])
    with pytest.raises(ManifestError, match="COVID-19"):
        P.encode_targets(bad, NIH_FINDINGS, multi_label=True)
    assert P.encode_targets(bad, NIH_FINDINGS, multi_label=True, unknown="ignore").sum() == 1


def test_multi_label_dataset_targets(tmp_path):
    names = _constant_images(tmp_path, 2)
    df = _manifest(names, labels=["", ""], findings=["Effusion|Mass", "No Finding"])
    _, y = next(iter(P.make_dataset(df, tmp_path, NIH_FINDINGS, 8, multi_label=True)))
    np.testing.assert_array_equal(y.numpy(), P.encode_targets(df, NIH_FINDINGS, multi_label=True))


def test_class_weights():
    df = _manifest(list("abcdef"), labels=["normal"] * 3 + ["pneumonia"] * 2 + ["covid19"])
    w = P.class_weights(df, CLASSES)
    np.testing.assert_allclose([w[0], w[1], w[2]], [6 / (3 * 3), 6 / (3 * 2), 6 / (3 * 1)])
    with pytest.raises(ValueError, match="covid19"):
        P.class_weights(df.iloc[:5], CLASSES)
    ml = _manifest(list("abcd"), findings=["A|B", "A", "No Finding", "B"])
    pos = P.class_weights(ml, ["A", "B"], multi_label=True)
    assert pos == {0: 1.0, 1: 1.0}
    ml2 = _manifest(list("abcd"), findings=["A", "No Finding", "No Finding", "A|B"])
    assert P.class_weights(ml2, ["A", "B"], multi_label=True) == {0: 1.0, 1: 3.0}


def test_paper_task_classes_work(tmp_path):
    names = _constant_images(tmp_path, 4)
    classes = task_classes("paper_a")
    ds = P.make_dataset(_manifest(names, list(classes)), tmp_path, classes, 8, batch_size=4)
    assert next(iter(ds))[1].numpy().argmax(1).tolist() == [0, 1, 2, 3]


@pytest.mark.shared_data
def test_real_fullres_images(fullres_root):
    files = sorted(p for p in fullres_root.rglob("*") if p.is_file())
    assert len(files) >= 8
    df = _manifest([str(p.relative_to(fullres_root)) for p in files])
    ds = P.make_dataset(df, fullres_root, CLASSES, image_size=32, backbone=None, batch_size=64)
    x, y = next(iter(ds))
    assert x.shape == (len(files), 32, 32, 3) and y.shape == (len(files), 3)
    x = x.numpy()
    assert np.isfinite(x).all() and x.min() >= 0 and x.max() <= 255
    assert all(img.std() > 5 for img in x)  # every radiograph decoded to a real image
    # same decode/resize path as load_images
    np.testing.assert_allclose(P.load_images(df, fullres_root, 32, check=False), x, atol=1e-4)
    # non-square originals get black pad bands, square ones do not
    for img, p in zip(x, files):
        w, h = Image.open(p).size
        if h / w > 1.1:
            assert img[:, 0].max() == 0 and img[:, -1].max() == 0, p.name
        elif w / h > 1.1:
            assert img[0].max() == 0 and img[-1].max() == 0, p.name


# ----------------------------------------------------------------------------- bounded memory (issue 9)
def _noise_images(folder, n, bits=8, size=(20, 14), rgb=False):
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        name = f"n{bits}_{i}.png"
        if bits == 16:
            Image.fromarray(rng.integers(0, 65536, size, dtype=np.uint16)).save(folder / name)
        else:
            shape = size + (3,) if rgb else size
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / name)
        names.append(name)
    return names


def _all(ds) -> np.ndarray:
    return np.concatenate([x.numpy() for x, _ in ds])


def test_16bit_cache_keeps_16bit_values_and_gray_is_one_plane(tmp_path):
    from cxrlib.data import cache as C

    data = tmp_path / "data"
    data.mkdir()
    names = _noise_images(data, 3, bits=16)
    df = _manifest(names)
    x = _all(P.make_dataset(df, data, CLASSES, (20, 14), channels=3, backbone=None, cache=tmp_path / "c",
                            resize_mode="stretch"))
    [npy] = list((tmp_path / "c").glob("*.npy"))
    stored = np.load(npy)
    assert stored.dtype == np.uint16 and stored.shape == (3, 20, 14, 1)  # one plane for gray sources
    raw = np.stack([np.asarray(Image.open(data / n)) for n in names])
    np.testing.assert_array_equal(stored[..., 0], raw)  # every one of the 65,536 levels kept
    np.testing.assert_allclose(x[..., 1], raw / 257.0, rtol=0, atol=1e-4)  # replicated after the cache
    assert len(np.unique(x)) > 256


def test_cached_and_uncached_pipelines_give_identical_tensors(tmp_path):
    names = _noise_images(tmp_path, 4, bits=8, rgb=True) + _noise_images(tmp_path, 3, bits=16)
    names += _constant_images(tmp_path, 2)
    df = _manifest(names)
    kw = dict(image_size=9, channels=3, backbone="densenet121", batch_size=3, resize_mode="pad")
    ref = _all(P.make_dataset(df, tmp_path, CLASSES, **kw))
    for cache in ("memory", tmp_path / "cache"):
        np.testing.assert_array_equal(_all(P.make_dataset(df, tmp_path, CLASSES, cache=cache, **kw)), ref)
    np.testing.assert_array_equal(_all(P.make_dataset(df, tmp_path, CLASSES, cache=tmp_path / "cache", **kw)), ref)
    # heatmaps read the same pixels as training (load_images), whatever set the image sits in
    one = P.load_images(df[:1], tmp_path, 9, channels=3, backbone="densenet121")
    np.testing.assert_array_equal(one[0], ref[0])


def test_memory_caches_reuse_pixels_decoded_in_this_process(tmp_path, monkeypatch):
    """A fold's splits are filled from the pixels an earlier split decoded; a rewritten file, another
    geometry or a full memo decode again, and the tensors never change."""
    import os

    from cxrlib.data import cache as C

    C.clear_decoded()
    names = _noise_images(tmp_path, 6, bits=8)
    df = _manifest(names)
    kw = dict(image_size=9, channels=3, backbone=None, batch_size=4, cache="memory", check=False)
    decoded = []
    real = C.stored_dataset
    monkeypatch.setattr(C, "stored_dataset", lambda paths, *a: decoded.append(len(paths)) or real(paths, *a))
    first = _all(P.make_dataset(df.iloc[:4], tmp_path, CLASSES, **kw))      # "train": 4 decoded
    second = _all(P.make_dataset(df, tmp_path, CLASSES, **kw))              # all 6: only the 2 new ones
    assert decoded == [4, 2]
    np.testing.assert_array_equal(second[:4], first)
    monkeypatch.setattr(C, "stored_dataset", real)
    np.testing.assert_array_equal(second, _all(P.make_dataset(df, tmp_path, CLASSES, **{**kw, "cache": None})))
    monkeypatch.setattr(C, "stored_dataset", lambda paths, *a: decoded.append(len(paths)) or real(paths, *a))
    # a file rewritten in place (new pixels, new mtime) is decoded again, with its new pixels
    Image.fromarray(np.full((20, 14), 7, np.uint8)).save(tmp_path / names[0])
    os.utime(tmp_path / names[0], ns=(1, 1))
    third = _all(P.make_dataset(df.iloc[:1], tmp_path, CLASSES, **kw))
    assert decoded[-1] == 1 and third.max() == 7.0  # its new pixels (7, and the padding's 0)
    _all(P.make_dataset(df, tmp_path, CLASSES, **{**kw, "image_size": 11}))   # other geometry: all 6
    assert decoded[-1] == 6
    C.clear_decoded()
    monkeypatch.setattr(C, "DECODED_LIMIT", 0)  # nothing kept: every build decodes
    _all(P.make_dataset(df, tmp_path, CLASSES, **kw))
    _all(P.make_dataset(df, tmp_path, CLASSES, **kw))
    assert decoded[-2:] == [6, 6]


def test_cache_is_one_byte_per_pixel_and_memory_cache_refused_when_too_big(tmp_path, monkeypatch):
    from cxrlib.data import cache as C

    names = _constant_images(tmp_path, 4)
    df = _manifest(names)
    infos = P.cxr_cache.probe_images([tmp_path / n for n in names])
    spec = C.cache_spec(infos, (224, 224), channels=3)
    assert spec.bytes_per_image == 224 * 224  # gray, uint8: 1 byte per pixel, not 12
    monkeypatch.setattr(C, "available_memory", lambda: 10_000)
    with pytest.raises(C.CacheTooLarge, match="on-disk cache") as e:
        P.make_dataset(df, tmp_path, CLASSES, 224, cache="memory", check=False)
    assert "GB" in str(e.value) and "stage.cache" in str(e.value)
    P.make_dataset(df, tmp_path, CLASSES, 224, cache=tmp_path / "c", check=False)  # disk: allowed

