"""Reading images and masks in every format datasets ship, and one-line DataErrors for bad input."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
from PIL import Image

from retinasynth.data import DataConfig, derive_fov, load_dataset, read_image, read_mask
from retinasynth.errors import DataError

NATIVE = DataConfig(size=None)


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _one_line_error(excinfo, *names: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for n in names:
        assert n in msg, (n, msg)
    return msg


# --- image conversions --------------------------------------------------------------------------


def _rgb(seed=0, h=40, w=48):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", [".png", ".tif", ".bmp", ".ppm", ".ppm.gz"])
def test_rgb_lossless_formats_round_trip(tmp_path, save_image, ext, no_warnings):
    rgb = _rgb()
    out = read_image(save_image(tmp_path / f"x{ext}", rgb))
    assert out.dtype == np.uint8 and out.shape == (40, 48, 3)
    np.testing.assert_array_equal(out, rgb)  # RGB order, not OpenCV's BGR


def test_rgba_drops_alpha(tmp_path, no_warnings):
    rgb = _rgb()
    alpha = np.full((40, 48, 1), 7, np.uint8)
    Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA").save(tmp_path / "x.png")
    out = read_image(tmp_path / "x.png")
    assert out.dtype == np.uint8 and out.shape == (40, 48, 3)
    np.testing.assert_array_equal(out, rgb)


def test_16bit_rgb_and_grey_scaled_to_uint8(tmp_path, no_warnings):
    rng = np.random.default_rng(1)
    rgb16 = rng.integers(0, 65536, (40, 48, 3)).astype(np.uint16)
    assert cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16[:, :, ::-1])
    out = read_image(tmp_path / "rgb16.png")
    assert out.dtype == np.uint8 and out.shape == (40, 48, 3)
    assert np.abs(out.astype(int) - np.round(rgb16 / 257.0)).max() <= 1
    grey16 = rng.integers(0, 65536, (40, 48)).astype(np.uint16)
    for name in ("g16.png", "g16.tif"):
        Image.fromarray(grey16).save(tmp_path / name)
        out = read_image(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (40, 48, 3)
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
        assert np.abs(out[..., 0].astype(int) - np.round(grey16 / 257.0)).max() <= 1


@pytest.mark.parametrize("ext", [".pgm", ".ppm"])
def test_16bit_netpbm_grey_scaled_to_uint8(tmp_path, ext, no_warnings):
    """Pillow reads 16-bit PGM as int32 mode "I"; it must scale by 65535, not by 2**31 - 1."""
    grey16 = np.random.default_rng(4).integers(0, 65536, (40, 48)).astype(np.uint16)
    ok, buf = cv2.imencode(".pgm", grey16)
    assert ok
    (tmp_path / f"g16{ext}").write_bytes(buf.tobytes())
    out = read_image(tmp_path / f"g16{ext}")
    assert out.dtype == np.uint8 and out.shape == (40, 48, 3)
    assert np.abs(out[..., 0].astype(int) - np.round(grey16 / 257.0)).max() <= 1


@pytest.mark.parametrize("ext", [".png", ".jpg", ".gif", ".tif"])
def test_grey_image_becomes_three_equal_channels(tmp_path, save_image, ext, no_warnings):
    grey = np.tile(np.arange(48, dtype=np.uint8) * 5, (40, 1))
    out = read_image(save_image(tmp_path / f"g{ext}", grey))
    assert out.dtype == np.uint8 and out.shape == (40, 48, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert np.abs(out[..., 0].astype(int) - grey).max() <= (3 if ext == ".jpg" else 0)


@pytest.mark.parametrize("ext", [".png", ".gif"])
def test_palette_image_becomes_its_colours(tmp_path, ext, no_warnings):
    pal = Image.fromarray(_rgb(2)).quantize(16)
    pal.save(tmp_path / f"p{ext}")
    out = read_image(tmp_path / f"p{ext}")
    assert out.dtype == np.uint8 and out.shape == (40, 48, 3)
    np.testing.assert_array_equal(out, np.asarray(pal.convert("RGB")))


# --- masks ------------------------------------------------------------------------------------


def test_binary_masks_0_255_and_0_1_read_without_warning(tmp_path, make_fundus, save_image, no_warnings):
    _, mask, _ = make_fundus()
    for name, arr in (("a.png", mask), ("b.png", mask.astype(np.uint8)), ("c.gif", mask), ("d.tif", mask)):
        out = read_mask(save_image(tmp_path / name, arr))
        assert out.dtype == bool
        np.testing.assert_array_equal(out, mask, err_msg=name)


def test_palette_gif_mask_with_grey_levels_3_and_253(tmp_path, make_fundus):
    """Like DRIVE's 2nd_manual: palette indices 0/1 whose colours are (3,3,3) and (253,253,253)."""
    _, mask, _ = make_fundus()
    im = Image.fromarray(mask.astype(np.uint8), "P")
    im.putpalette([3, 3, 3, 253, 253, 253] + [0, 0, 0] * 254)
    im.save(tmp_path / "01_manual2.gif")
    with pytest.warns(UserWarning, match=r"not binary \(values \[3, 253\]\)"):
        out = read_mask(tmp_path / "01_manual2.gif")
    assert out.dtype == bool
    np.testing.assert_array_equal(out, mask)


def test_jpeg_noisy_mask_thresholds_to_the_drawn_vessels(tmp_path, make_fundus, save_image):
    _, mask, _ = make_fundus(thickness=3)
    save_image(tmp_path / "noisy" / "m.jpg", mask)
    raw = np.asarray(Image.open(tmp_path / "noisy" / "m.jpg"))
    assert len(np.unique(raw)) > 2  # JPEG really added grey levels
    with pytest.warns(UserWarning, match="not binary"):
        out = read_mask(tmp_path / "noisy" / "m.jpg")
    np.testing.assert_array_equal(out, mask)


def test_colour_mask_uses_max_channel(tmp_path, make_fundus, save_image, no_warnings):
    _, mask, _ = make_fundus()
    red = np.zeros((*mask.shape, 3), np.uint8)
    red[mask] = (255, 0, 0)
    np.testing.assert_array_equal(read_mask(save_image(tmp_path / "r.png", red)), mask)


def test_non_binary_masks_warn_once_per_folder_and_are_thresholded(tmp_path, make_fundus, save_image):
    root = tmp_path / "mine"
    rng = np.random.default_rng(0)
    truth = {}
    for k in range(4):
        image, mask, _ = make_fundus(seed=k)
        grey = np.where(mask, rng.integers(128, 256, mask.shape), rng.integers(0, 128, mask.shape))
        save_image(root / "images" / f"{k}.png", image)
        save_image(root / "masks" / f"{k}.png", grey.astype(np.uint8))
        truth[str(k)] = mask
    with pytest.warns(UserWarning, match="not binary") as rec:
        ds = load_dataset(root, "all", NATIVE)
    msgs = [str(w.message) for w in rec if "not binary" in str(w.message)]
    assert len(msgs) == 1, msgs
    assert str(root / "masks") in msgs[0] and "> 127" in msgs[0]
    for s in ds:
        np.testing.assert_array_equal(s.mask, truth[s.id])


def test_derive_fov_finds_the_disc(make_fundus):
    image, _, disc = make_fundus(h=80, w=96)
    noisy = image.copy()
    noisy[~disc] = np.random.default_rng(0).integers(0, 6, (int((~disc).sum()), 3))  # JPEG-like surround
    for img in (image, noisy):
        fov = derive_fov(img)
        assert fov.dtype == bool and fov.shape == disc.shape
        assert (fov & disc).sum() / (fov | disc).sum() > 0.95
        assert fov[40, 48] and not fov[0, 0]


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("reader", [read_image, read_mask])
def test_missing_file_is_one_line_dataerror(tmp_path, reader):
    with pytest.raises(DataError) as e:
        reader(tmp_path / "nope.png")
    _one_line_error(e, "nope.png", "not found")


@pytest.mark.parametrize("name", ["x.png", "x.tif", "x.jpg", "x.gif", "x.ppm", "x.ppm.gz"])
def test_garbage_file_is_named(tmp_path, name):
    (tmp_path / name).write_bytes(b"this is not an image\n" * 20)
    with pytest.raises(DataError) as e:
        read_image(tmp_path / name)
    _one_line_error(e, name, "corrupt")


@pytest.mark.parametrize("ext", [".png", ".tif", ".jpg", ".gif"])
def test_truncated_file_is_named(tmp_path, save_image, ext):
    full = save_image(tmp_path / f"full{ext}", _rgb(3, 64, 64)).read_bytes()
    (tmp_path / f"cut{ext}").write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError) as e:
        read_image(tmp_path / f"cut{ext}")
    _one_line_error(e, f"cut{ext}", "truncated")


def _generic(root, make_fundus, save_image, stems="abc"):
    for k, stem in enumerate(stems):
        image, mask, _ = make_fundus(seed=k)
        save_image(root / "images" / f"{stem}.png", image)
        save_image(root / "masks" / f"{stem}.png", mask)
    return root


def test_missing_dataset_folder(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path / "nowhere", "train")
    _one_line_error(e, str(tmp_path / "nowhere"), "no such folder")
    with pytest.raises(DataError) as e:  # also with a forced layout
        load_dataset(tmp_path / "nowhere", "train", DataConfig(layout="drive"))
    _one_line_error(e, "no such folder")


def test_folder_matching_no_layout_says_what_was_tried_and_found(tmp_path, save_image):
    root = tmp_path / "odd"
    save_image(root / "pictures" / "a.png", _rgb())
    (root / "notes.txt").write_text("hi")
    with pytest.raises(DataError) as e:
        load_dataset(root, "all")
    msg = _one_line_error(e, str(root), "pictures/", "notes.txt", "--layout")
    for name in ("drive", "kaggle", "chase", "stare", "hrf", "generic"):
        assert f"{name}:" in msg


def test_orphan_images_and_masks_are_listed(tmp_path, make_fundus, save_image):
    root = _generic(tmp_path / "mine", make_fundus, save_image, "ab")
    save_image(root / "images" / "c.png", _rgb())
    save_image(root / "images" / "d.png", _rgb())
    save_image(root / "masks" / "zz.png", make_fundus()[1])
    with pytest.raises(DataError) as e:
        load_dataset(root, "all", NATIVE)
    msg = _one_line_error(e, "images/c.png", "images/d.png", "masks/zz.png")
    assert "images without vessel masks" in msg and "vessel masks without images" in msg


def test_corrupt_image_in_dataset_is_named(tmp_path, make_fundus, save_image):
    root = _generic(tmp_path / "mine", make_fundus, save_image)
    (root / "images" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError) as e:
        load_dataset(root, "all", NATIVE)
    _one_line_error(e, "b.png", "1 problem(s)")


def test_mask_size_mismatch_is_named(tmp_path, make_fundus, save_image):
    root = _generic(tmp_path / "mine", make_fundus, save_image)
    save_image(root / "masks" / "c.png", make_fundus(h=20, w=24)[1])
    with pytest.raises(DataError) as e:
        load_dataset(root, "all", NATIVE)
    _one_line_error(e, str(root / "masks" / "c.png"), "24x20", "48x40", "must match")


def test_empty_mask_is_named(tmp_path, make_fundus, save_image):
    root = _generic(tmp_path / "mine", make_fundus, save_image)
    save_image(root / "masks" / "a.png", np.zeros((40, 48), bool))
    with pytest.raises(DataError) as e:
        load_dataset(root, "all", NATIVE)
    _one_line_error(e, str(root / "masks" / "a.png"), "empty")


def test_drive_with_corrupt_tiff_and_missing_mask_reports_both(tmp_path, make_drive):
    root = make_drive(tmp_path / "DRIVE")
    full = (root / "training" / "images" / "23_training.tif").read_bytes()
    (root / "training" / "images" / "23_training.tif").write_bytes(full[:300])
    (root / "training" / "1st_manual" / "22_manual1.gif").unlink()
    with pytest.raises(DataError) as e:
        load_dataset(root, "all", NATIVE)
    _one_line_error(e, "2 problem(s)", "23_training.tif", "22_training.tif", "images without vessel masks")
    with pytest.raises(DataError) as e:  # the training problems are in the train split too
        load_dataset(root, "train", NATIVE)
    _one_line_error(e, "23_training.tif", "22_training.tif")
    assert load_dataset(root, "test", NATIVE).ids == ["01", "02"]  # the test split is fine


@pytest.mark.parametrize("parent", ["test", "training"])
def test_split_problems_do_not_leak_when_the_root_sits_under_a_split_named_folder(tmp_path, make_drive, parent):
    root = make_drive(tmp_path / parent / "DRIVE")
    (root / "training" / "1st_manual" / "22_manual1.gif").unlink()
    (root / "test" / "1st_manual" / "02_manual1.gif").unlink()
    for split, bad, good in (("train", "22_training.tif", "02_test.tif"), ("test", "02_test.tif", "22_training.tif")):
        with pytest.raises(DataError) as e:
            load_dataset(root, split, NATIVE)
        msg = _one_line_error(e, "1 problem(s)", bad)
        assert good not in msg
