"""The fidelity measures of `evaluate` on hand-made images whose answer is known."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from retinasynth.metrics.fidelity import (
    disc_brightness,
    disc_offset,
    kid,
    stripe_frequencies,
    stripe_index,
    vessel_contrast,
)

N = 128


def _fov(n: int = N) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    return (yy - n / 2) ** 2 + (xx - n / 2) ** 2 < (0.45 * n) ** 2


def _smooth_background(seed: int = 0, n: int = N) -> np.ndarray:
    """A fundus-like background: smooth shading plus faint sensor noise (float, 0..255)."""
    rng = np.random.default_rng(seed)
    g = cv2.GaussianBlur(rng.random((n, n)).astype(np.float32), (0, 0), 6)
    g = 120 + 15 * (g - g.mean()) / g.std() + rng.normal(0, 1.0, (n, n))
    return np.repeat(g[:, :, None], 3, axis=2)


def test_stripe_frequencies_are_the_stride_two_harmonics():
    assert stripe_frequencies((2, 4, 8)) == [0.125, 0.25, 0.375, 0.5]


def test_stripe_index_sees_transposed_convolution_stripes():
    fov = _fov()
    bg = _smooth_background()
    clean = np.clip(bg, 0, 255).astype(np.uint8)
    striped = bg.copy()
    striped[:, ::2] += 3  # faint period-2 vertical stripes, as a stride-2 transposed convolution leaves them
    striped = np.clip(striped, 0, 255).astype(np.uint8)
    a, b = stripe_index(clean, fov), stripe_index(striped, fov)
    assert 0 < a < 0.3 and b > 2 * a
    # the same pattern, shifted by one column, is the same stripe
    assert stripe_index(np.roll(striped, 1, axis=1), fov) == pytest.approx(b, rel=0.05)


def test_vessel_contrast_by_width_reads_what_was_drawn():
    fov = _fov()
    img = np.full((N, N, 3), 180, np.uint8)
    mask = np.zeros((N, N), bool)
    for y, width, depth in ((30, 1, 30), (50, 2, 60), (75, 3, 90), (100, 6, 120)):
        mask[y:y + width, 25:103] = True  # a horizontal vessel exactly `width` pixels wide
        img[y:y + width, 25:103] = 180 - depth
    c = vessel_contrast(img, mask, fov)
    assert all(c[b]["pixels"] > 0 for b in ("1", "2", "3-4", "5+")), c
    values = [c[b]["contrast"] for b in ("1", "2", "3-4", "5+")]
    assert values == sorted(values)  # deeper (wider) vessels drawn darker: more contrast
    for b, depth in (("1", 30), ("2", 60), ("3-4", 90), ("5+", 120)):
        assert c[b]["contrast"] == pytest.approx(depth / 180, abs=0.02), (b, c)
    faint = img.copy()
    faint[mask & (np.arange(N)[:, None] < 40)] = 175  # the 1-px vessel almost gone
    assert vessel_contrast(faint, mask, fov)["1"]["contrast"] == pytest.approx(5 / 180, abs=0.02)


HUB = (40, 64)  # (y, x) where the hand-drawn vessels of _hub_mask meet


def _hub_mask(fov: np.ndarray) -> np.ndarray:
    """Eight wide vessels radiating from HUB, each ending in a thin twig, inside the FOV."""
    mask = np.zeros((N, N), np.uint8)
    for angle in np.linspace(0, 2 * np.pi, 9)[:-1]:
        end = (int(HUB[1] + 50 * np.cos(angle)), int(HUB[0] + 50 * np.sin(angle)))
        cv2.line(mask, (HUB[1], HUB[0]), end, 1, 5)
        cv2.line(mask, end, (end[0] + 5, end[1] + 5), 1, 1)
    return (mask & fov.astype(np.uint8)).astype(bool)


def _with_disc(y: int, x: int, colour=(230, 230, 230)) -> np.ndarray:
    img = np.full((N, N, 3), 90, np.uint8)
    cv2.circle(img, (x, y), 8, colour, -1)
    return img


def test_disc_offset_is_small_when_the_disc_sits_where_the_vessels_meet():
    fov = _fov()
    mask, hub = _hub_mask(fov), HUB
    near = disc_offset(_with_disc(*hub), mask, fov)
    far = disc_offset(_with_disc(100, 64), mask, fov)
    assert near["distance_rel"] < 0.1 < far["distance_rel"]
    assert abs(near["disc_yx"][0] - hub[0]) <= 2 and abs(near["disc_yx"][1] - hub[1]) <= 2


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 16)), rng.normal(size=(60, 16))
    z = rng.normal(loc=1.0, size=(60, 16))
    same, diff = kid(x, y), kid(x, z)
    assert abs(same["kid"]) < 0.2 * diff["kid"] and diff["ci95"][0] > 0
    assert same["subset_size"] == 30 and kid(x, y)["kid"] == same["kid"]  # seeded
    with pytest.raises(ValueError):
        kid(x[:1], y[:1])


def test_disc_brightness_reads_the_disc_at_the_vessels_hub_not_a_blotch_elsewhere():
    fov = _fov()
    mask, hub = _hub_mask(fov), HUB
    bright = disc_brightness(_with_disc(*hub), mask, fov)
    red = disc_brightness(_with_disc(*hub, (200, 40, 40)), mask, fov)
    elsewhere = disc_brightness(_with_disc(105, 64), mask, fov)  # a bright blotch 65 px from the hub
    assert abs(bright["convergence_yx"][0] - hub[0]) <= 3 and abs(bright["convergence_yx"][1] - hub[1]) <= 3
    assert bright["brightness"] > 80  # Lab lightness 0-255: grey 90 reads ~97, white 230 ~232 (blurred)
    assert 0 < red["brightness"] < bright["brightness"] - 40
    assert abs(elsewhere["brightness"]) < 2  # uniform background within 0.15 FOV diameters of the hub
