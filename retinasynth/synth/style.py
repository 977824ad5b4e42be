"""Rendering in the look of the user's own camera, from unlabelled photographs (``synthesize --style DIR``).

No label of the target camera is used. For each photograph in ``DIR`` the colour distribution inside its field
of view is kept as one cumulative histogram per RGB channel. Each rendered pair draws one of them
(seeded by the run's seed and the pair's index) and has its colours mapped onto it, inside its own FOV
(histogram matching per channel, blended with the render by ``strength``). The vessel structure of the render
stays as the generator drew it; brightness, contrast, colour cast and their spread become the target camera's.

The photographs' ids and near-duplicate signatures are recorded in ``synth.json``; the benchmark refuses a
synthetic set whose style photographs are evaluated images (take the style from images that are not scored).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retinasynth.errors import DataError

STATS_SIDE = 256  # photographs are reduced to this side for their statistics


@dataclass(frozen=True)
class Style:
    """One target photograph's colour distribution: ``cdf`` (3, 256), the share of FOV pixels <= each value."""

    id: str
    cdf: np.ndarray


def _image_files(folder: Path) -> list[Path]:
    from retinasynth.data.layouts import IMAGE_EXTS

    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_EXTS)
                  and not p.name.startswith("."))


def channel_cdfs(image: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """(3, 256) cumulative histograms of the RGB channels inside ``fov``."""
    px = image[fov.astype(bool)]
    if px.size == 0:
        px = image.reshape(-1, 3)
    out = np.empty((3, 256))
    for c in range(3):
        hist = np.bincount(px[:, c], minlength=256).astype(np.float64)
        out[c] = np.cumsum(hist) / hist.sum()
    return out


def read_photographs(folder: Path, what: str):
    """(path, RGB image, derived FOV) of every photograph under ``folder`` (any supported format, sub-folders
    included), in name order; a one-line DataError starting with ``what`` (e.g. '--style DIR') when there is
    none, or naming the file that is unreadable."""
    from retinasynth.data.io import derive_fov, read_image

    files = _image_files(folder)
    if not files:
        raise DataError(f"{what}: no image files found (png, jpg, tif, gif, ppm[.gz], bmp); pass a folder "
                        "of unlabelled photographs from the target camera.")
    for p in files:
        img = read_image(p)  # a damaged file is a one-line RetinaSynthError naming it
        yield p, img, derive_fov(img)


def load_styles(folder: str | Path) -> tuple[list[Style], list]:
    """The styles of every photograph under ``folder`` (any supported format, sub-folders included), and their
    near-duplicate signatures (for the leakage guard). A one-line DataError when there is none or one is
    unreadable."""
    from retinasynth.data.preprocess import resize_image, resize_mask
    from retinasynth.data.similarity import image_signature

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--style {folder}: not a folder; pass a folder of unlabelled photographs from the target "
                        "camera.")
    styles, sigs = [], []
    for p, img, fov in read_photographs(folder, f"--style {folder}"):
        small = resize_image(img, (STATS_SIDE, STATS_SIDE))
        sfov = resize_mask(fov, (STATS_SIDE, STATS_SIDE), thin=False)
        styles.append(Style(str(p.relative_to(folder)), channel_cdfs(small, sfov)))
        sigs.append(image_signature(img, fov))
    return styles, sigs


def match_style(image: np.ndarray, fov: np.ndarray, style: Style, strength: float = 1.0) -> np.ndarray:
    """``image`` with each channel's distribution inside ``fov`` mapped onto ``style``'s (outside: unchanged),
    blended with the original by ``strength`` (0: unchanged, 1: fully matched)."""
    src = channel_cdfs(image, fov)
    out = image.copy()
    inside = fov.astype(bool)
    for c in range(3):
        # each source level's mid-quantile, then the smallest target level whose CDF reaches it
        q = (src[c] + np.concatenate([[0.0], src[c][:-1]])) / 2
        lut = np.minimum(np.searchsorted(style.cdf[c], q, side="left"), 255).astype(np.float64)
        mapped = lut[image[..., c][inside]]
        out[..., c][inside] = np.clip(np.round((1 - strength) * image[..., c][inside] + strength * mapped), 0, 255)
    return out


def pick(styles: list[Style], seed: int, pair: int) -> tuple[int, Style]:
    """The style of pair ``pair``: a pure function of the run's seed and the pair's index."""
    i = int(np.random.default_rng([seed, pair, 7]).integers(len(styles)))
    return i, styles[i]
