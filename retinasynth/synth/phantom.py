"""Embedded demo dataset: procedural vessel trees rendered as fundus-like RGB "phantoms".

No real data needed: :func:`write_phantom_dataset` writes the generic ``images/ masks/ fov/`` layout
so every other part of the toolkit (loading, training, evaluation) can be exercised offline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage as ndi

from retinasynth.errors import ConfigError
from retinasynth.masks.ops import skeletonize
from retinasynth.masks.procedural import grow_vessel_tree
from retinasynth.provenance import write_json_atomic, write_png_atomic


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 1) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a ``cells`` x ``cells`` random grid upsampled bicubically."""
    coarse = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1, channels)).astype(np.float32)
    out = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    return out.reshape(size, size, channels)


def _gaussian_blob(size: int, center_yx: tuple[float, float], sigma: float) -> np.ndarray:
    yy, xx = np.ogrid[:size, :size]
    d2 = (yy - center_yx[0]) ** 2 + (xx - center_yx[1]) ** 2
    return np.exp(-d2 / (2.0 * sigma * sigma)).astype(np.float32)


def render_phantom(size: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Render one fundus-like phantom from a procedural vessel tree.

    Returns ``(image, mask, fov, info)``: HxWx3 uint8 RGB image (black outside the FOV), bool
    vessel mask, bool FOV and the tree's JSON-serialisable ``info`` plus the rendering colours.
    Deterministic for a given ``rng`` state.
    """
    mask, fov, info = grow_vessel_tree(size, rng)
    s = float(size)
    fov_c, fov_r = info["fov_center"], info["fov_radius"]
    od_c, od_r = info["optic_disc_center"], info["optic_disc_radius"]
    fovea = info["fovea_center"]

    base = np.array([180.0, 80.0, 40.0], dtype=np.float32) * rng.uniform(0.85, 1.1, size=3).astype(np.float32)
    img = np.broadcast_to(base, (size, size, 3)).astype(np.float32).copy()

    # illumination: a smooth linear gradient and vignetting towards the FOV border
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    ang = float(rng.uniform(0.0, 2.0 * np.pi))
    grad = ((xx - fov_c[1]) * np.cos(ang) + (yy - fov_c[0]) * np.sin(ang)) / fov_r
    rho = np.hypot(yy - fov_c[0], xx - fov_c[1]) / fov_r
    light = (1.0 + float(rng.uniform(0.05, 0.2)) * grad) * (1.0 - float(rng.uniform(0.35, 0.55)) * rho**2.5)
    img *= light[..., None]

    # low-frequency texture (choroid), slightly different per channel
    tex = _smooth_noise(rng, size, 6) * 0.08 + _smooth_noise(rng, size, 16, 3) * 0.04
    img *= 1.0 + tex

    # macula: darker and a little browner around the fovea
    mac = _gaussian_blob(size, fovea, 0.09 * s)
    img *= (1.0 - 0.35 * mac)[..., None] * np.array([1.0, 0.9, 0.9], dtype=np.float32)[None, None] ** mac[..., None]

    # optic disc: bright yellowish disc with a soft rim and a brighter cup
    yyd, xxd = yy - od_c[0], xx - od_c[1]
    d = np.hypot(yyd, xxd) / od_r
    disc = np.clip(1.0 - (d - 0.85) / 0.3, 0.0, 1.0)
    disc = cv2.GaussianBlur(disc.astype(np.float32), (0, 0), max(0.5, 0.08 * od_r))
    cup = _gaussian_blob(size, od_c, 0.35 * od_r)
    disc_col = np.array([250.0, 205.0, 120.0], dtype=np.float32) * float(rng.uniform(0.9, 1.05))
    img = img * (1.0 - 0.85 * disc[..., None]) + disc_col[None, None] * (0.85 * disc[..., None])
    img += (cup * 30.0)[..., None] * np.array([1.0, 1.0, 0.9], dtype=np.float32)[None, None]

    # vessels: darker and redder with width; smooth profile from the distance to the centre line
    sk = skeletonize(mask)
    edt = ndi.distance_transform_edt(mask)
    dist, (iy, ix) = ndi.distance_transform_edt(~sk, return_indices=True)
    r_near = edt[iy, ix].astype(np.float32)  # local vessel half-width + 0.5
    profile = np.clip(1.0 - (dist / np.maximum(r_near + 0.5, 1.0)) ** 2, 0.0, 1.0).astype(np.float32)
    profile *= ndi.binary_dilation(mask).astype(np.float32)
    strength = 0.25 + 0.35 * np.clip(r_near / 4.0, 0.0, 1.0)
    dark = profile * strength
    vessel_tint = np.array([0.75, 1.0, 1.0], dtype=np.float32)  # red falls least: vessels look dark red
    img *= 1.0 - dark[..., None] * vessel_tint[None, None]
    # a faint central light reflex on thick vessels
    reflex = np.clip(1.0 - dist / 0.8, 0.0, 1.0) * np.clip((r_near - 3.0) / 2.0, 0.0, 1.0) * 0.06
    img *= (1.0 + reflex)[..., None]
    img = cv2.GaussianBlur(img, (0, 0), 0.6 * max(1.0, s / 512.0))

    img += rng.normal(0.0, 2.5, size=img.shape).astype(np.float32)
    img[~fov] = 0.0
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    info = dict(info)
    info["base_rgb"] = [float(v) for v in base]
    return image, mask, fov, info


def write_phantom_dataset(out_dir: str | os.PathLike, n: int, size: int = 256, seed: int = 0,
                          progress: bool = True) -> Path:
    """Write ``n`` phantoms as ``out_dir/{images,masks,fov}/phantom_0000.png`` plus ``phantom.json``.

    Masks and FOVs are 0/255 uint8 PNGs. Sample ``i`` is drawn from its own generator seeded with
    ``(seed, i)``, so the same seed gives identical bytes and a sample does not depend on ``n``.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n <= 0:
        raise ConfigError(f"phantom dataset size n must be a positive integer, got {n!r}")
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 32:
        raise ConfigError(f"phantom image size must be an integer >= 32, got {size!r}")
    out = Path(out_dir)
    samples = []
    indices = range(int(n))
    if progress:
        from retinasynth.progress import progress as progress_bar

        indices = progress_bar(indices, desc="phantoms", unit="img")
    for i in indices:
        rng = np.random.default_rng([int(seed), i])
        image, mask, fov, info = render_phantom(int(size), rng)
        name = f"phantom_{i:04d}.png"
        write_png_atomic(out / "images" / name, image)
        write_png_atomic(out / "masks" / name, mask.astype(np.uint8) * 255)
        write_png_atomic(out / "fov" / name, fov.astype(np.uint8) * 255)
        samples.append({"file": name, **info})
    write_json_atomic(out / "phantom.json", {"n": int(n), "size": int(size), "seed": int(seed),
                                             "samples": samples})
    return out
