"""Near-duplicate detection for the leakage guards: small normalised signatures of images and masks.

A signature is a 128x128 map of one eye, resampled from the field of view's ellipse (fitted to the FOV's
rim where it lies inside the frame), so resolution, aspect (squashing), padding and crops that cut into
the FOV do not move it. It keeps what identifies an eye: for photographs, the green channel's fine detail
(the image minus a blur of sigma 2 px, so illumination, colour balance, contrast, gamma and JPEG
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
IMAGE_THRESHOLD = 0.75
MASK_THRESHOLD = 0.42
ANGLES = (-10.0, -5.0, 0.0, 5.0, 10.0)
SCALES = (0.95, 1.0, 1.05)
IMAGE_BLUR = 1.0
HIGHPASS = 2.0
# Perturbed masks are also shifted and elastically deformed by a few pixels: a wider blur tolerates that.
MASK_BLUR = 2.0


@dataclass
class Signature:
    values: np.ndarray  # (SIZE, SIZE) float32, zero where not valid
    valid: np.ndarray  # (SIZE, SIZE) float32 in {0, 1}


def fov_ellipse(fov: np.ndarray) -> tuple[float, float, float, float]:
    """(cy, cx, ry, rx) of the axis-aligned ellipse through the FOV's rim (a circle unless the frame was
    squashed), ignoring rim pixels on the frame's edge (where a crop cut the FOV); falls back to the
    FOV's bounding box."""
    f = fov.astype(np.uint8)
    h, w = f.shape
    if not f.any():
        return (h - 1) / 2, (w - 1) / 2, h / 2, w / 2
    rim = (f > 0) & (cv2.erode(f, np.ones((3, 3), np.uint8)) == 0)
    rim[:2, :] = rim[-2:, :] = False
    rim[:, :2] = rim[:, -2:] = False
    ys, xs = (v.astype(np.float64) for v in np.nonzero(rim))
    if ys.size >= 20:
        # least squares: x^2 + b y^2 + c x + d y + e = 0
        A = np.stack([ys * ys, xs, ys, np.ones_like(xs)], axis=1)
        (b, c, d, e), *_ = np.linalg.lstsq(A, -(xs * xs), rcond=None)
        if b > 0:
            cx, cy = -c / 2, -d / (2 * b)
            r2 = cx * cx + b * cy * cy - e
            rx, ry = np.sqrt(max(r2, 0.0)), np.sqrt(max(r2, 0.0) / b)
            if 0.1 * max(h, w) < min(rx, ry) and max(rx, ry) < 2 * max(h, w):
                return float(cy), float(cx), float(ry), float(rx)
    yy, xx = np.nonzero(f)
    return ((yy.min() + yy.max()) / 2, (xx.min() + xx.max()) / 2, (yy.max() - yy.min() + 1) / 2,
            (xx.max() - xx.min() + 1) / 2)


def _resample(channel: np.ndarray, fov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The box around the FOV's ellipse, resampled to SIZE x SIZE (pre-blurred to the target scale),
    and the pixels that lie inside both the frame and the FOV."""
    cy, cx, ry, rx = fov_ellipse(fov)
    sx, sy = SIZE / (2 * rx), SIZE / (2 * ry)
    src = channel.astype(np.float32)
    if min(sx, sy) < 1:
        src = cv2.GaussianBlur(src, (0, 0), 0.5 / min(sx, sy))
    c = (SIZE - 1) / 2  # the FOV's centre maps to the map's centre, so a flip of the map = the map of a flip
    M = np.array([[sx, 0, c - sx * cx], [0, sy, c - sy * cy]], np.float32)
    out = cv2.warpAffine(src, M, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderValue=0)
    inside = cv2.warpAffine(fov.astype(np.float32), M, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderValue=0) > 0.5
    inside = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # the rim's edge is not content
    return out, inside


def _signature(c: np.ndarray, inside: np.ndarray, blur: float) -> Signature:
    if not inside.any():
        return Signature(np.zeros((SIZE, SIZE), np.float32), np.zeros((SIZE, SIZE), np.float32))
    c = np.where(inside, c, c[inside].mean()).astype(np.float32)
    v = cv2.GaussianBlur(c - cv2.GaussianBlur(c, (0, 0), HIGHPASS), (0, 0), blur)
    return Signature(np.where(inside, v, 0).astype(np.float32), inside.astype(np.float32))


def image_signature(image: np.ndarray, fov: np.ndarray | None) -> Signature:
    """Signature of a photograph (uint8 RGB or grey) with its FOV."""
    g = image[..., 1] if image.ndim == 3 else image
    fov = fov if fov is not None and fov.any() else np.ones(g.shape, bool)
    return _signature(*_resample(g, fov), IMAGE_BLUR)


def mask_signature(mask: np.ndarray, fov: np.ndarray | None) -> Signature:
    """Signature of a vessel mask (bool) with its FOV."""
    fov = fov if fov is not None and fov.any() else np.ones(mask.shape, bool)
    return _signature(*_resample(mask.astype(np.float32), fov), MASK_BLUR)


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


def encode_signature(sig: Signature) -> str:
    """Compact text form for JSON (int8 values + packed validity bits, base64): ~25 kB per image."""
    import base64

    v = sig.values
    peak = float(np.abs(v).max()) or 1.0
    q = np.round(v / peak * 127).astype(np.int8)  # correlation is scale-free: the peak need not be kept
    return base64.b64encode(q.tobytes() + np.packbits(sig.valid > 0.5).tobytes()).decode()


def decode_signature(text: str) -> Signature:
    import base64

    raw = base64.b64decode(text.encode(), validate=True)
    n = SIZE * SIZE
    if len(raw) != n + n // 8:
        raise ValueError(f"signature of {len(raw)} bytes, expected {n + n // 8}")
    values = np.frombuffer(raw[:n], np.int8).astype(np.float32).reshape(SIZE, SIZE)
    valid = np.unpackbits(np.frombuffer(raw[n:], np.uint8))[:n].astype(np.float32).reshape(SIZE, SIZE)
    return Signature(values * valid, valid)


def mask_digest(mask: np.ndarray) -> str:
    """sha256 of a binary mask's content (shape and bits), independent of the file it came from."""
    import hashlib

    m = np.asarray(mask, dtype=bool)
    return hashlib.sha256(str(m.shape).encode() + np.packbits(m).tobytes()).hexdigest()
