"""Bringing images, vessel masks and FOV masks to a square working resolution, together."""

from __future__ import annotations

import cv2
import numpy as np

FIT_MODES = ("squash", "pad")


def fov_bbox(fov: np.ndarray, margin: int = 2) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the FOV's bounding box, with a small margin."""
    ys, xs = np.nonzero(fov)
    if ys.size == 0:
        return 0, fov.shape[0], 0, fov.shape[1]
    h, w = fov.shape
    return (max(0, ys.min() - margin), min(h, ys.max() + 1 + margin),
            max(0, xs.min() - margin), min(w, xs.max() + 1 + margin))


def pad_to_square(arr: np.ndarray) -> np.ndarray:
    h, w = arr.shape[:2]
    s = max(h, w)
    top, left = (s - h) // 2, (s - w) // 2
    pad = [(top, s - h - top), (left, s - w - left)] + [(0, 0)] * (arr.ndim - 2)
    return np.pad(arr, pad)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area interpolation when shrinking (no aliasing), cubic when enlarging. size is (h, w)."""
    h, w = size
    shrink = h * w < image.shape[0] * image.shape[1]
    out = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return np.clip(out, 0, 255).astype(np.uint8) if out.dtype != np.uint8 else out


def resize_mask(mask: np.ndarray, size: tuple[int, int], thin: bool = True) -> np.ndarray:
    """Resize a binary mask by area interpolation of its coverage, then threshold.

    Nearest-neighbour breaks thin vessels. With ``thin=True`` the threshold is scaled with the
    shrink factor, so a one-pixel vessel (coverage ~= scale) survives any downscale.
    """
    h, w = size
    scale = min(h / mask.shape[0], w / mask.shape[1])
    cov = cv2.resize(mask.astype(np.float32), (w, h),
                     interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    thr = 0.5 * min(1.0, scale) if thin else 0.5
    return cov > thr * 0.999


def prepare(image: np.ndarray, mask: np.ndarray | None, fov: np.ndarray, size: int | None,
            fit: str = "squash", crop_fov: bool = False):
    """Crop (optional), square (squash or pad) and resize image, vessel mask and FOV together. With ``size``
    None the frame keeps its resolution (padded square with ``fit='pad'``)."""
    if fit not in FIT_MODES:
        raise ValueError(f"fit must be one of {FIT_MODES}, got {fit!r}")
    if crop_fov:
        y0, y1, x0, x1 = fov_bbox(fov)
        image, fov = image[y0:y1, x0:x1], fov[y0:y1, x0:x1]
        mask = mask[y0:y1, x0:x1] if mask is not None else None
    if fit == "pad":
        image, fov = pad_to_square(image), pad_to_square(fov)
        mask = pad_to_square(mask) if mask is not None else None
    if size is None:
        return image, mask, fov
    image = resize_image(image, (size, size))
    fov = resize_mask(fov, (size, size), thin=False)
    if mask is not None:
        mask = resize_mask(mask, (size, size)) & fov
    return image, mask, fov


def green_clahe(image: np.ndarray, clip: float = 2.0, tiles: int = 8) -> np.ndarray:
    """The green channel (where vessels contrast most) equalised with CLAHE, returned as grey RGB.

    The tile grid is a fixed count per side, not a pixel size, so the result does not depend on the
    image's resolution.
    """
    g = np.ascontiguousarray(image[..., 1]) if image.ndim == 3 else image
    eq = cv2.createCLAHE(clipLimit=clip, tileGridSize=(tiles, tiles)).apply(g.astype(np.uint8))
    return np.repeat(eq[..., None], 3, axis=2)


def enhance(image: np.ndarray, mode: str) -> np.ndarray:
    """Segmenter input preprocessing: 'rgb' (unchanged) or 'green_clahe'."""
    if mode == "rgb":
        return image
    if mode == "green_clahe":
        return green_clahe(image)
    raise ValueError(f"unknown preprocessing {mode!r}; valid: rgb, green_clahe")
