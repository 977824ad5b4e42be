"""The embedded phantom dataset: fundus-like images rendered from procedural trees."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from retinasynth.errors import ConfigError
from retinasynth.synth.phantom import render_phantom, write_phantom_dataset


def test_render_phantom_shapes_and_appearance():
    img, mask, fov, info = render_phantom(96, np.random.default_rng(0))
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    assert mask.dtype == bool and fov.dtype == bool and not (mask & ~fov).any()
    assert (img[~fov] == 0).all()
    inside = img[fov & ~mask].reshape(-1, 3).astype(float).mean(axis=0)
    assert inside[0] > inside[1] > inside[2]  # orange-red background
    assert img[mask].astype(float).mean() < img[fov & ~mask].astype(float).mean()  # vessels darker
    oy, ox = (int(round(v)) for v in info["optic_disc_center"])
    fy, fx = (int(round(v)) for v in info["fovea_center"])
    assert img[oy, ox].astype(int).sum() > img[fy, fx].astype(int).sum()  # bright disc, dark macula
    json.dumps(info)


def test_render_phantom_deterministic():
    a = render_phantom(64, np.random.default_rng(4))
    b = render_phantom(64, np.random.default_rng(4))
    c = render_phantom(64, np.random.default_rng(5))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[3] == b[3]
    assert not np.array_equal(a[0], c[0])


def _read_all(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_write_phantom_dataset_layout_and_determinism(tmp_path):
    out = write_phantom_dataset(tmp_path / "a", n=3, size=64, seed=1, progress=False)
    for sub in ("images", "masks", "fov"):
        names = sorted(p.name for p in (out / sub).iterdir())
        assert names == ["phantom_0000.png", "phantom_0001.png", "phantom_0002.png"]
    img = cv2.imread(str(out / "images" / "phantom_0001.png"), cv2.IMREAD_UNCHANGED)
    mask = cv2.imread(str(out / "masks" / "phantom_0001.png"), cv2.IMREAD_UNCHANGED)
    fov = cv2.imread(str(out / "fov" / "phantom_0001.png"), cv2.IMREAD_UNCHANGED)
    assert img.shape == (64, 64, 3) and mask.shape == (64, 64) and fov.shape == (64, 64)
    assert set(np.unique(mask)) <= {0, 255} and set(np.unique(fov)) == {0, 255}
    assert mask.any() and not ((mask > 0) & (fov == 0)).any()
    meta = json.loads((out / "phantom.json").read_text())
    assert meta["n"] == 3 and meta["size"] == 64 and meta["seed"] == 1 and len(meta["samples"]) == 3

    again = write_phantom_dataset(tmp_path / "b", n=3, size=64, seed=1, progress=False)
    assert _read_all(out) == _read_all(again)
    other = write_phantom_dataset(tmp_path / "c", n=1, size=64, seed=2, progress=False)
    assert (other / "images" / "phantom_0000.png").read_bytes() != (out / "images" / "phantom_0000.png").read_bytes()


def test_sample_does_not_depend_on_n(tmp_path):
    a = write_phantom_dataset(tmp_path / "a", n=1, size=48, seed=3, progress=False)
    b = write_phantom_dataset(tmp_path / "b", n=2, size=48, seed=3, progress=False)
    assert (a / "images" / "phantom_0000.png").read_bytes() == (b / "images" / "phantom_0000.png").read_bytes()


@pytest.mark.parametrize("kw", [{"n": 0}, {"n": -2}, {"n": 2, "size": 16}])
def test_write_phantom_dataset_rejects_bad_options(tmp_path, kw):
    with pytest.raises(ConfigError):
        write_phantom_dataset(tmp_path / "x", progress=False, **kw)
    assert not (tmp_path / "x").exists()
