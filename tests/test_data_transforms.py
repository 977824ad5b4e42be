"""Preprocessing (resize, pad, FOV crop) and paired augmentation keep image, mask and FOV aligned."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage

from retinasynth.data.preprocess import fov_bbox, prepare, resize_mask
from retinasynth.data.transforms import apply_paired, gan_augmentation, segmentation_augmentation

EIGHT = np.ones((3, 3), bool)  # 8-connectivity


def _thin_line(size: int = 160) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    cv2.line(m, (5, 10), (150, 70), 1, 1)  # 1 pixel wide, shallow slope: never grid-aligned
    return m.astype(bool)


# --- resize_mask ----------------------------------------------------------------------------------


def test_thin_vessel_survives_4x_downscale_where_nearest_breaks_it():
    line = _thin_line()
    small = resize_mask(line, (40, 40))
    assert small.dtype == bool and small.shape == (40, 40)
    _, n = ndimage.label(small, EIGHT)
    assert n == 1  # one connected vessel
    assert set(np.nonzero(small)[1]) >= set(range(5 // 4, 150 // 4 + 1))  # present over its whole length
    assert small.sum() <= 2 * 40  # and still thin, not smeared
    nearest = cv2.resize(line.astype(np.uint8), (40, 40), interpolation=cv2.INTER_NEAREST).astype(bool)
    _, n_nearest = ndimage.label(nearest, EIGHT)
    assert n_nearest > 3 and nearest.sum() < small.sum() / 2  # nearest-neighbour shatters it
    assert not resize_mask(line, (40, 40), thin=False).any()  # a plain 0.5 threshold loses it entirely


def test_resize_mask_upscale_and_identity():
    line = _thin_line(40)
    np.testing.assert_array_equal(resize_mask(line, (40, 40)), line)
    big = resize_mask(line, (80, 80))
    assert big.shape == (80, 80) and ndimage.label(big, EIGHT)[1] == 1
    assert 3 * line.sum() <= big.sum() <= 5 * line.sum()  # twice as long and twice as wide


# --- prepare ------------------------------------------------------------------------------------


def test_pad_centres_a_wide_image():
    image = np.full((20, 40, 3), 200, np.uint8)
    fov = np.ones((20, 40), bool)
    mask = np.zeros((20, 40), bool)
    mask[10, :] = True
    img, m, f = prepare(image, mask, fov, size=20, fit="pad")
    assert img.shape == (20, 20, 3) and m.shape == f.shape == (20, 20)
    assert (img[:5] == 0).all() and (img[15:] == 0).all()  # 10 rows of padding above, 10 below
    assert (img[5:15] == 200).all()
    assert f[5:15].all() and not f[:5].any() and not f[15:].any()
    assert m.any() and not (m & ~f).any()
    # squash fills the whole frame instead
    img, _, f = prepare(image, mask, fov, size=20, fit="squash")
    assert (img == 200).all() and f.all()


def test_crop_fov_crops_to_the_fov_bbox(make_fundus):
    image, mask, fov = make_fundus(h=40, w=48)
    y0, y1, x0, x1 = fov_bbox(fov)
    ys, xs = np.nonzero(fov)
    assert (y0, y1, x0, x1) == (ys.min() - 2, ys.max() + 3, xs.min() - 2, xs.max() + 3)
    img, m, f = prepare(image, mask, fov, size=None, crop_fov=True)
    assert img.shape == (y1 - y0, x1 - x0, 3) and img.shape[:2] != image.shape[:2]
    np.testing.assert_array_equal(img, image[y0:y1, x0:x1])
    np.testing.assert_array_equal(m, mask[y0:y1, x0:x1])
    assert f[2].any() and not f[:2].any() and f[:, 2].any() and not f[:, :2].any()  # 2-pixel margin
    img, m, f = prepare(image, mask, fov, size=32, fit="pad", crop_fov=True)
    assert img.shape == (32, 32, 3) and m.shape == f.shape == (32, 32)
    assert f.mean() > 0.6  # the disc fills the frame: pi/4 * (36/40)^2 of it, against 0.44 uncropped
    assert prepare(image, mask, fov, size=32, fit="pad")[2].mean() < 0.5


@pytest.mark.parametrize("fit", ["squash", "pad"])
@pytest.mark.parametrize("crop_fov", [False, True])
@pytest.mark.parametrize("size", [16, 32, 96])
def test_vessels_stay_inside_the_fov(make_fundus, fit, crop_fov, size):
    image, _, fov = make_fundus(h=40, w=48)
    mask = np.zeros_like(fov)
    mask[18:21, :] = True  # a vessel running out of the FOV
    img, m, f = prepare(image, mask, fov, size=size, fit=fit, crop_fov=crop_fov)
    assert img.dtype == np.uint8 and img.shape == (size, size, 3)
    assert m.dtype == bool and f.dtype == bool and m.shape == f.shape == (size, size)
    assert m.any() and not (m & ~f).any()


def test_prepare_rejects_unknown_fit(make_fundus):
    image, mask, fov = make_fundus()
    with pytest.raises(ValueError, match="fit"):
        prepare(image, mask, fov, size=32, fit="stretch")


# --- paired augmentation --------------------------------------------------------------------------


def _red_is_mask(size: int = 192):
    """An image whose red channel is exactly 255 * mask (three 7-pixel vessels), green = 255 * FOV.

    192 pixels, so that the edge pixels, where interpolation followed by the pipeline's colour changes
    can legitimately tip (red > 127) either way, stay well under 1% of the crop.
    """
    yy, xx = np.mgrid[:size, :size]
    fov = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= (0.45 * size) ** 2
    lines = np.zeros((size, size), np.uint8)
    for p0, p1 in (((15, 30), (180, 120)), ((90, 6), (60, 186)), ((6, 150), (186, 165))):
        cv2.line(lines, p0, p1, 1, 7)
    mask = lines.astype(bool)
    image = np.zeros((size, size, 3), np.uint8)
    image[..., 0] = mask * 255
    image[..., 1] = fov * 255
    image[..., 2] = np.random.default_rng(0).integers(0, 60, (size, size))
    return image, mask, fov


PIPELINES = {
    "gan": lambda: gan_augmentation(crop=160, size=192),
    "segmentation": lambda: segmentation_augmentation(patch=160, size=192),
}


@pytest.mark.parametrize("name", PIPELINES)
def test_paired_transforms_keep_mask_aligned_with_image(name):
    image, mask, fov = _red_is_mask()
    pipe = PIPELINES[name]()
    for seed in range(8):
        img, m, f = apply_paired(pipe, image, mask, fov, seed)
        assert img.dtype == np.uint8 and img.shape == (160, 160, 3)
        assert m.dtype == bool and f.dtype == bool and m.shape == f.shape == (160, 160)
        red = img[..., 0] > 127
        assert m.any() and red.any()
        agree = (m == red).mean()
        assert agree >= 0.99, (name, seed, agree)
        # the check has teeth: the same mask shifted by one pixel would fail it
        assert min((np.roll(m, 1, axis=a) == red).mean() for a in (0, 1)) < 0.99, (name, seed)
        if name == "gan":  # geometry only: the green channel still marks the FOV
            assert (f == (img[..., 1] > 127)).mean() >= 0.99, seed


@pytest.mark.parametrize("name", PIPELINES)
def test_paired_transforms_are_seeded(name):
    image, mask, fov = _red_is_mask()
    a = apply_paired(PIPELINES[name](), image, mask, fov, 3)
    pipe = PIPELINES[name]()
    apply_paired(pipe, image, mask, fov, 11)  # the pipeline's history must not matter
    b = apply_paired(pipe, image, mask, fov, 3)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    outs = [apply_paired(pipe, image, mask, fov, s) for s in range(5)]
    assert len({o[0].tobytes() for o in outs}) == 5  # different seeds, different images
    assert len({o[1].tobytes() for o in outs}) == 5  # and different masks


def test_each_transform_draws_its_own_probability():
    """albumentations' Compose.set_random_seed gives every transform the same seed: under 'light' both flips and
    the rotation came all together or not at all (2 of 16 combinations). Seeded per transform, all 16 occur, each
    transform at its own rate; the shared seed stays reachable for the GAN's recorded runs."""
    import albumentations as A

    from retinasynth.data.transforms import seed_pipeline

    pipe = segmentation_augmentation(16, 32, "light")
    pipe = A.Compose(pipe.transforms, save_applied_params=True, additional_targets={"fov": "mask"})
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)

    def combos(independent: bool) -> dict:
        seen: dict = {}
        for seed in range(400):
            seed_pipeline(pipe, seed, independent=independent)
            names = tuple(n for n, _ in pipe(image=image)["applied_transforms"] if n != "RandomCrop")
            seen[names] = seen.get(names, 0) + 1
        return seen

    shared, own = combos(False), combos(True)
    assert len(shared) == 2 and len(own) == 16
    hflips = sum(v for k, v in own.items() if "HorizontalFlip" in k)
    assert 160 < hflips < 240  # p = 0.5 on its own
    out1 = apply_paired(pipe, image, np.zeros((32, 32), bool), np.ones((32, 32), bool), seed=5)
    out2 = apply_paired(pipe, image, np.zeros((32, 32), bool), np.ones((32, 32), bool), seed=5)
    assert np.array_equal(out1[0], out2[0])
