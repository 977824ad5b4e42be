"""The generator's disc plane (``model.disc_prior``): where the mask's large vessels converge, moved with the
training augmentation, fed as a fifth condition channel in training and in rendering."""

from __future__ import annotations

import json
from types import SimpleNamespace

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from conftest import TINY_FIT

from retinasynth.data.transforms import apply_paired, gan_augmentation
from retinasynth.errors import ConfigError
from retinasynth.masks.ops import convergence_point
from retinasynth.metrics.fidelity import disc_offset
from retinasynth.models.condition import DISC_SIGMA, disc_plane, full_condition, make_condition
from retinasynth.models.factory import ModelConfig
from retinasynth.rundir import load_generator
from retinasynth.train.config import build_fit_config
from retinasynth.train.fit import augment_pair, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def _tree(h: int = 128, w: int = 160, yx: tuple[int, int] = (60, 40)) -> np.ndarray:
    """Five thick vessels leaving (y, x), and thin ones far from it."""
    m = np.zeros((h, w), np.uint8)
    y, x = yx
    for ang in np.linspace(-1.2, 1.2, 5):
        cv2.line(m, (x, y), (int(x + 150 * np.cos(ang)), int(y + 150 * np.sin(ang))), 1, 7)
    for yy in (10, 115):
        cv2.line(m, (100, yy), (155, yy + 5), 1, 1)
    return m.astype(bool)


def test_convergence_point_and_disc_plane():
    m = _tree()
    cy, cx = convergence_point(m)
    # the blurred density (sigma 8% of the side, 12.8 px) of the thick centre lines peaks where they meet, a little
    # into the fan they open
    assert np.hypot(cy - 60, cx - 40) < 16 and cx >= 40
    assert convergence_point(np.zeros((30, 50), bool)) == (15, 25)
    p = disc_plane(m)
    assert p.shape == m.shape and p.dtype == np.float32
    assert np.unravel_index(int(np.argmax(p)), p.shape) == (cy, cx) and p.max() == pytest.approx(1.0)
    s = DISC_SIGMA * 160  # one sigma away along x: exp(-1/2)
    assert p[cy, cx + int(round(s))] == pytest.approx(np.exp(-0.5 * (round(s) / s) ** 2), rel=1e-5)
    # disc_offset measures against the same point
    img = np.zeros((*m.shape, 3), np.uint8)
    assert disc_offset(img, m, np.ones_like(m))["convergence_yx"] == [cy, cx]


def test_condition_channels_and_config():
    m, fov = _tree(), np.ones((128, 160), bool)
    plane = disc_plane(m)
    c = make_condition(m, fov, True, disc=plane)
    assert c.shape == (5, 128, 160)
    np.testing.assert_array_equal(c[:4], make_condition(m, fov, True))
    np.testing.assert_allclose(c[4], plane * 2 - 1)
    assert full_condition(m, fov, False, True).shape == (3, 128, 160)
    np.testing.assert_array_equal(full_condition(m, fov, True, False), make_condition(m, fov, True))
    assert ModelConfig(disc_prior=True).in_channels == 5
    assert ModelConfig(disc_prior=True, coords=False).in_channels == 3
    with pytest.raises(ConfigError, match="model.disc_prior must be true or false"):
        ModelConfig(disc_prior="yes")
    assert build_fit_config("tiny", overrides=["model.disc_prior=true"]).model.disc_prior is True


def test_augment_pair_moves_the_plane_and_changes_nothing_else():
    rng = np.random.default_rng(0)
    m = _tree(64, 64, (30, 12))
    s = SimpleNamespace(image=rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), mask=m, fov=np.ones((64, 64), bool))
    plane = disc_plane(m)
    pipe = gan_augmentation(None, 64)
    for seed in range(8):
        a = apply_paired(pipe, s.image, s.mask, s.fov, seed, independent=False)
        b = augment_pair(pipe, s, seed, plane)
        assert augment_pair(pipe, s, seed)[3] is None and b[3].dtype == np.float32
        for x, y in zip(a, b[:3]):
            np.testing.assert_array_equal(x, y)
    flip = A.Compose([A.HorizontalFlip(p=1.0)], additional_targets={"fov": "mask"})
    out = augment_pair(flip, s, 0, plane)
    np.testing.assert_array_equal(out[0], s.image[:, ::-1])
    np.testing.assert_allclose(out[3], plane[:, ::-1], atol=1e-6)


def test_fit_and_render_with_disc_prior(tmp_path, data_root):
    cfg = build_fit_config("tiny", overrides=[*TINY_FIT, "model.disc_prior=true", "train.crop=32",
                                              "model.depth=5"])
    run = fit(cfg, data_root, tmp_path / "disc", progress=False)
    rec = json.loads((run / "config.json").read_text())
    assert rec["generator"]["in_channels"] == 5 and rec["config"]["model"]["disc_prior"] is True
    gen = load_generator(run)
    first = next(p for p in gen.net.parameters() if p.ndim == 4)
    assert first.shape[1] == 5
    m, fov = _tree(64, 64, (30, 12)), np.ones((64, 64), bool)
    out = gen.render(m, fov)
    gen.net.eval()
    with torch.no_grad():
        x = torch.from_numpy(full_condition(m, fov, True, True)[None])
        direct = gen.net(x)
        x_moved = x.clone()
        x_moved[0, 4] = torch.flip(x[0, 4], dims=[1])
        moved = gen.net(x_moved)
    expect = direct.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(out[0], expect)  # render feeds the disc plane of the mask it is given
    assert not torch.equal(direct, moved)  # and the generator reads that channel
