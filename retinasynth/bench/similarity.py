"""Near-duplicate detection for the leakage guards: small normalised signatures of images and masks.

A signature is a 128x128 map of one eye, resampled from the field of view's *circle* (fitted to the
FOV's rim where it lies inside the frame), so resolution, aspect, padding and crops that cut into the
FOV do not move it. It keeps what identifies an eye: for photographs, the green channel's fine detail
(the image minus a blur of sigma 3 px, so illumination, colour balance, contrast, gamma and JPEG
re-encoding drop out, and the vessel pattern stays); for vessel masks, the vessel coverage with the same
high-pass. Both are lightly blurred (tolerance to small shifts and elastic deformation). The similarity
of two signatures is their correlation over the pixels valid in both, maximised over flips, small
rotations and scalings of the evaluated side (``variants``), so a mirrored, rotated or rescaled copy is
found. Thresholds (``IMAGE_THRESHOLD``, ``MASK_THRESHOLD``) were set from ``benchmarks/guard_margins.py``
on DRIVE and two phantom datasets (RESULTS.md section 8): different eyes stay below them, disguised
copies and perturbed masks above.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SIZE = 128
IMAGE_THRESHOLD = 0.5
MASK_THRESHOLD = 0.5
ANGLES = (-10.0, -5.0, 0.0, 5.0, 10.0)
SCALES = (0.95, 1.0, 1.05)


@dataclass
class Signature:
    values: np.ndarray  # (SIZE, SIZE) float32, zero where not valid
    valid: np.ndarray  # (SIZE, SIZE) float32 in {0, 1}


def fov_circle(fov: np.ndarray) -> tuple[float, float, float]:
    """(cy, cx, r) of the circle through the FOV's rim, ignoring rim pixels on the frame's edge (where a
    crop cut the FOV); falls back to the FOV's bounding box."""
    f = fov.astype(np.uint8)
    h, w = f.shape
    if not f.any():
        return (h - 1) / 2, (w - 1) / 2, max(h, w) / 2
    rim = (f > 0) & (cv2.erode(f, np.ones((3, 3), np.uint8)) == 0)
    rim[:2, :] = rim[-2:, :] = False
    rim[:, :2] = rim[:, -2:] = False
    ys, xs = np.nonzero(rim)
    if ys.size >= 20:
        # Kasa least-squares circle fit: x^2 + y^2 + a x + b y + c = 0
        A = np.stack([xs, ys, np.ones_like(xs)], axis=1).astype(np.float64)
        rhs = -(xs.astype(np.float64) ** 2 + ys.astype(np.float64) ** 2)
        (a, b, c), *_ = np.linalg.lstsq(A, rhs, rcond=None)
        cx, cy = -a / 2, -b / 2
        r2 = cx * cx + cy * cy - c
        if r2 > 0 and 0.1 * max(h, w) < np.sqrt(r2) < 2 * max(h, w):
            return float(cy), float(cx), float(np.sqrt(r2))
    yy, xx = np.nonzero(f)
    return (yy.min() + yy.max()) / 2, (xx.min() + xx.max()) / 2, max(yy.max() - yy.min(), xx.max() - xx.min()) / 2


def _resample(channel: np.ndarray, fov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The square around the FOV circle, resampled to SIZE x SIZE (area-like: pre-blurred to the
    target scale), and the pixels that lie inside both the frame and the FOV."""
    cy, cx, r = fov_circle(fov)
    scale = SIZE / (2 * r)
    src = channel.astype(np.float32)
    if scale < 1:
        src = cv2.GaussianBlur(src, (0, 0), 0.5 / scale)
    M = np.array([[scale, 0, SIZE / 2 - scale * cx], [0, scale, SIZE / 2 - scale * cy]], np.float32)
    out = cv2.warpAffine(src, M, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderValue=0)
    inside = cv2.warpAffine(fov.astype(np.float32), M, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderValue=0) > 0.5
    inside = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # the rim's edge is not content
    return out, inside


def _signature(c: np.ndarray, inside: np.ndarray) -> Signature:
    if not inside.any():
        return Signature(np.zeros((SIZE, SIZE), np.float32), np.zeros((SIZE, SIZE), np.float32))
    c = np.where(inside, c, c[inside].mean()).astype(np.float32)
    v = cv2.GaussianBlur(c - cv2.GaussianBlur(c, (0, 0), 3.0), (0, 0), 1.0)
    return Signature(np.where(inside, v, 0).astype(np.float32), inside.astype(np.float32))


def image_signature(image: np.ndarray, fov: np.ndarray | None) -> Signature:
    """Signature of a photograph (uint8 RGB or grey) with its FOV."""
    g = image[..., 1] if image.ndim == 3 else image
    fov = fov if fov is not None and fov.any() else np.ones(g.shape, bool)
    return _signature(*_resample(g, fov))


def mask_signature(mask: np.ndarray, fov: np.ndarray | None) -> Signature:
    """Signature of a vessel mask (bool) with its FOV."""
    fov = fov if fov is not None and fov.any() else np.ones(mask.shape, bool)
    return _signature(*_resample(mask.astype(np.float32), fov))


def variants(sig: Signature) -> list[Signature]:
    """The signature flipped (4 ways), rotated by ANGLES and scaled by SCALES about the FOV's centre."""
    out = []
    c = ((SIZE - 1) / 2, (SIZE - 1) / 2)
    for flip in (None, 1, 0, -1):
        v = sig.values if flip is None else cv2.flip(sig.values, flip)
        m = sig.valid if flip is None else cv2.flip(sig.valid, flip)
        for a in ANGLES:
            for s in SCALES:
                if a == 0 and s == 1:
                    out.append(Signature(v, m))
                    continue
                M = cv2.getRotationMatrix2D(c, a, s)
                wm = cv2.warpAffine(m, M, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderValue=0) > 0.99
                wv = cv2.warpAffine(v, M, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderValue=0)
                out.append(Signature(np.where(wm, wv, 0).astype(np.float32), wm.astype(np.float32)))
    return out


def _masked_corr(qa: list[Signature], cb: list[Signature]) -> np.ndarray:
    """(len(qa), len(cb)) correlation over the pixels valid in both, by matrix products."""
    A = np.stack([s.values.ravel() for s in qa]).astype(np.float64)
    Va = np.stack([s.valid.ravel() for s in qa]).astype(np.float64)
    B = np.stack([s.values.ravel() for s in cb]).astype(np.float64)
    Vb = np.stack([s.valid.ravel() for s in cb]).astype(np.float64)
    n = Va @ Vb.T
    sab, sa, sb = A @ B.T, A @ Vb.T, Va @ B.T
    saa, sbb = (A * A) @ Vb.T, Va @ (B * B).T
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = sab - sa * sb / n
        var = (saa - sa * sa / n) * (sbb - sb * sb / n)
        r = cov / np.sqrt(var)
    r[(n < 0.25 * SIZE * SIZE) | ~np.isfinite(r)] = 0.0  # too little overlap to say anything
    return r


def similarity_matrix(evaluated: list[Signature], candidates: list[Signature], chunk: int = 256) -> np.ndarray:
    """(len(evaluated), len(candidates)): best correlation of each candidate with any variant of each
    evaluated signature."""
    out = np.zeros((len(evaluated), len(candidates)), np.float32)
    if not evaluated or not candidates:
        return out
    for i, e in enumerate(evaluated):
        var = variants(e)
        for j in range(0, len(candidates), chunk):
            out[i, j:j + chunk] = _masked_corr(var, candidates[j:j + chunk]).max(axis=0)
    return out


def similarity(a: Signature, b: Signature) -> float:
    return float(similarity_matrix([a], [b])[0, 0])
