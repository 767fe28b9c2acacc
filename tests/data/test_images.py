"""Decoding of every image mode and the bad-image report (cxrlib/data/images.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from cxrlib.data.images import (
    DECODER_JPEG, DECODER_PIL, DECODER_PNG, BadImageError, decode_bytes, read_image,
    scan_images, sniff_format, to_channels,
)
from cxrlib.data.manifest import new_manifest, validate_manifest

RNG = np.random.default_rng(0)
GRAY = RNG.integers(0, 256, (6, 5), dtype=np.uint8)           # [H, W]
RGB = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)         # [H, W, 3]
ALPHA = RNG.integers(0, 256, (6, 5), dtype=np.uint8)
GRAY16 = (np.arange(30, dtype=np.uint16).reshape(6, 5) * 7 + 40000)  # steps < 1/257 of 8 bits


def write_mode_files(folder) -> dict[str, tuple[str, np.ndarray]]:
    """One tiny file per real-world mode -> (file name, expected RGB pixels uint8/uint16)."""
    files = {}

    def save(name, im, expected, **kw):
        im.save(folder / name, **kw)
        files[name] = expected

    rgb_of_gray = np.repeat(GRAY[..., None], 3, axis=-1)
    save("gray8.png", Image.fromarray(GRAY, "L"), rgb_of_gray)
    save("gray16.png", Image.fromarray(GRAY16), np.repeat(GRAY16[..., None], 3, axis=-1))
    save("rgb.png", Image.fromarray(RGB, "RGB"), RGB)
    save("rgba.png", Image.fromarray(np.dstack([RGB, ALPHA]), "RGBA"), RGB)  # alpha dropped
    save("la.png", Image.fromarray(np.dstack([GRAY, ALPHA]), "LA"), rgb_of_gray)
    pal = Image.fromarray(RGB, "RGB").quantize(colors=16)
    save("palette.png", pal, np.asarray(pal.convert("RGB")))
    save("palette_trns.png", pal, np.asarray(pal.convert("RGB")), transparency=0)
    bw = GRAY > 128
    save("bilevel.png", Image.fromarray(bw), np.repeat((bw * 255).astype(np.uint8)[..., None], 3, -1))
    save("gray.jpg", Image.fromarray(GRAY, "L"), None, quality=100)  # lossy: compare loosely
    save("rgb.jpeg", Image.fromarray(RGB, "RGB"), None, quality=100, subsampling=0)
    save("cmyk.jpg", Image.fromarray(RGB, "RGB").convert("CMYK"), None, quality=100, subsampling=0)
    save("gray.bmp", Image.fromarray(GRAY, "L"), rgb_of_gray)
    save("gray16.tif", Image.fromarray(GRAY16), np.repeat(GRAY16[..., None], 3, axis=-1))
    return files


@pytest.fixture()
def mode_files(tmp_path):
    return tmp_path, write_mode_files(tmp_path)


def test_every_mode_decodes_to_requested_channels(mode_files):
    folder, files = mode_files
    for name, expected in files.items():
        for channels in (1, 3):
            arr = read_image(folder / name, channels=channels)
            assert arr.shape == (6, 5, channels), name
            assert arr.dtype == (np.uint16 if "gray16" in name else np.uint8), name
        rgb = read_image(folder / name, channels=3)
        if expected is not None:
            np.testing.assert_array_equal(rgb, expected, err_msg=name)
        else:  # JPEG at quality 100: close to the source
            src = GRAY[..., None] if name == "gray.jpg" else RGB
            assert np.abs(rgb.astype(int) - src.astype(int)).mean() < 6, name


def test_16bit_gray_keeps_precision_beyond_8_bits(mode_files):
    folder, _ = mode_files
    arr = read_image(folder / "gray16.png", channels=1)[..., 0]
    np.testing.assert_array_equal(arr, GRAY16)
    assert len(np.unique(arr)) == 30 and len(np.unique(arr >> 8)) < 30  # 8 bits would merge them
    floats = decode_bytes((folder / "gray16.png").read_bytes())[..., 0]  # pipeline fallback scale
    np.testing.assert_allclose(floats, GRAY16 / 257.0, atol=1e-4)


def test_alpha_is_dropped_not_composited(mode_files):
    folder, _ = mode_files
    np.testing.assert_array_equal(read_image(folder / "rgba.png", channels=3), RGB)
    np.testing.assert_array_equal(read_image(folder / "la.png", channels=1)[..., 0], GRAY)


def test_rgb_to_gray_uses_luma_weights_of_tensorflow():
    import tensorflow as tf

    ours = to_channels(RGB, 1).astype(int)
    theirs = tf.image.rgb_to_grayscale(tf.constant(RGB.astype(np.float32))).numpy()
    assert ours.shape == (6, 5, 1)
    assert np.abs(ours - np.rint(theirs)).max() <= 1


def test_sniff_format_ignores_extension(tmp_path):
    Image.fromarray(GRAY).save(tmp_path / "x.jpg", format="PNG")
    assert sniff_format((tmp_path / "x.jpg").read_bytes()[:16]) == "PNG"
    assert sniff_format(b"hello world, not an image") is None


def _bad_files(folder):
    """A manifest of good and bad files; returns (df, set of bad names)."""
    Image.fromarray(GRAY).save(folder / "good.png")
    Image.fromarray(RGB).save(folder / "good.jpg", quality=90)
    Image.fromarray(GRAY).save(folder / "png_named.jpg", format="PNG")  # usable: warning only
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "blank.png")  # usable: warning only
    big = Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    big.save(folder / "full.jpg", quality=90)
    data = (folder / "full.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    big.save(folder / "full.png")
    data = (folder / "full.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    crc = bytearray(data)
    crc[40] ^= 0xFF  # flip a byte inside the IDAT chunk: CRC mismatch
    (folder / "bad_crc.png").write_bytes(bytes(crc))
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("<html>404 Not Found</html>")
    names = ["good.png", "good.jpg", "png_named.jpg", "blank.png", "truncated.jpg", "truncated.png",
             "bad_crc.png", "empty.png", "text.png", "missing.png"]
    df = new_manifest([dict(path=n, patient_id=str(i), source="t", view="PA", findings="", label="normal")
                       for i, n in enumerate(names)])
    bad = {"truncated.jpg", "truncated.png", "bad_crc.png", "empty.png", "text.png", "missing.png"}
    return df, bad


def test_scan_reports_every_bad_image_with_path_and_reason(tmp_path):
    df, bad = _bad_files(tmp_path)
    report = scan_images(df, tmp_path, workers=2)
    assert {b.path.rsplit("/", 1)[-1] for b in report.bad} == bad
    assert report.n_ok == 4 and report.n_total == 10
    reasons = {b.path.rsplit("/", 1)[-1]: b.reason for b in report.bad}
    assert "0 bytes" in reasons["empty.png"]
    assert "not an image" in reasons["text.png"]
    assert "not found" in reasons["missing.png"]
    assert "truncated" in reasons["truncated.jpg"].lower()
    for b in report.bad:  # index is the manifest row
        assert df.at[b.index, "path"] in b.path
    warned = {w.path.rsplit("/", 1)[-1]: w.reason for w in report.warnings}
    assert set(warned) == {"png_named.jpg", "blank.png"}
    assert "content is PNG" in warned["png_named.jpg"]
    # decoder route by content: the PNG named .jpg goes to the PNG decoder
    assert report.decoders[2] == DECODER_PNG and report.decoders[1] == DECODER_JPEG
    assert report.decoders[0] == DECODER_PNG


def test_raise_if_bad_lists_paths(tmp_path):
    df, bad = _bad_files(tmp_path)
    with pytest.raises(BadImageError) as err:
        scan_images(df, tmp_path).raise_if_bad()
    msg = str(err.value)
    assert "6 of 10" in msg
    for name in bad:
        assert str(tmp_path / name) in msg
    ok = new_manifest([dict(path="good.png", patient_id="1", source="t", view="", findings="", label="")])
    assert scan_images(ok, tmp_path).raise_if_bad().n_ok == 1


def test_validate_manifest_check_images_names_line(tmp_path):
    df, bad = _bad_files(tmp_path)
    problems = validate_manifest(df, root=tmp_path, check_images=True)
    unreadable = [p for p in problems if "unreadable image" in p.message]
    assert {p.line for p in unreadable} == {i + 2 for i, n in enumerate(df["path"]) if n in bad - {"missing.png"}} | {11}


def test_non_tf_formats_route_to_pil(mode_files):
    folder, files = mode_files
    df = new_manifest([dict(path=n, patient_id="1", source="t", view="", findings="", label="") for n in files])
    report = scan_images(df, folder)
    assert report.bad == []
    routes = dict(zip(files, report.decoders))
    assert routes["gray.bmp"] == DECODER_PIL and routes["gray16.tif"] == DECODER_PIL
    assert routes["cmyk.jpg"] == DECODER_JPEG and routes["palette.png"] == DECODER_PNG
    assert "PNG I;16 5x6" in report.modes


def test_scan_memo_skips_known_good_files_only(tmp_path, monkeypatch):
    from cxrlib.data import images

    for n in ("a.png", "b.png"):
        Image.fromarray(GRAY).save(tmp_path / n)
    (tmp_path / "c.png").write_bytes(b"")
    df = new_manifest([dict(path=n, patient_id="1", source="t", view="", findings="", label="")
                       for n in ("a.png", "b.png", "c.png")])
    memo = tmp_path / "memo" / "scan-ok.tsv"
    first = scan_images(df, tmp_path, memo=memo)
    assert first.n_ok == 2 and len(memo.read_text().splitlines()) == 2  # bad files are never memoised
    decoded = []
    real = images._check_one
    monkeypatch.setattr(images, "_check_one", lambda p: decoded.append(p.name) or real(p))
    again = scan_images(df, tmp_path, memo=memo)
    assert decoded == ["c.png"] and again.n_ok == 2 and [b.index for b in again.bad] == [2]
    assert again.decoders[:2] == [DECODER_PNG, DECODER_PNG]
    st = (tmp_path / "b.png").stat()
    os.utime(tmp_path / "b.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # changed file
    decoded.clear()
    scan_images(df, tmp_path, memo=memo)
    assert sorted(decoded) == ["b.png", "c.png"]
