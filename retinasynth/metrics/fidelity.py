"""Fidelity of rendered fundus images. Each measure is computed the same way on the real photograph of the same
mask, whose value is the target: a render should look like a real image, not cleaner and not fainter.

- :func:`stripe_index`: the share of the background's high-frequency power on the spectrum's rows and columns at
  the frequencies of stride-2 upsampling (periods 2, 4 and 8 px). Transposed-convolution stripes and
  checkerboards put power there; a photograph has only its share of that band.
- :func:`vessel_contrast`: vessel-to-background contrast of the green channel along the mask's centre lines,
  by the vessel's width in the mask (1, 2, 3-4, 5+ px), so that faint thin vessels show as a low ratio.
- :func:`disc_offset`: the distance between the brightest region (the optic disc) and the point where the
  mask's large vessels converge, relative to the FOV's diameter.
- :func:`disc_brightness`: how far the brightest spot near that convergence point (where a photograph's optic
  disc is) stands above the FOV's median lightness; a render that paints the disc dark or red reads low.
- :func:`kid`: kernel inception distance (unbiased polynomial-kernel MMD², averaged over subsets, with a
  percentile interval) between feature sets, e.g. a real-trained segmenter's encoder features
  (:func:`encoder_features`).
"""

from __future__ import annotations

import cv2
import numpy as np

from retinasynth.masks.ops import convergence_point, vessel_widths

WIDTH_BINS: tuple[tuple[str, float, float], ...] = (("1", 0.0, 1.5), ("2", 1.5, 2.5), ("3-4", 2.5, 4.5),
                                                    ("5+", 4.5, float("inf")))
STRIPE_PERIODS = (2, 4, 8)


def _green(image: np.ndarray) -> np.ndarray:
    g = image[..., 1] if image.ndim == 3 else image
    return g.astype(np.float32) / 255.0


def _erode(mask: np.ndarray, r: int) -> np.ndarray:
    if r <= 0:
        return mask.astype(bool)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.erode(mask.astype(np.uint8), k).astype(bool)


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask.astype(np.uint8), k).astype(bool)


def stripe_frequencies(periods=STRIPE_PERIODS) -> list[float]:
    """Frequencies (cycles per pixel, folded into (0, 0.5]) of patterns with the given periods and harmonics."""
    return sorted({min(k / p, 1 - k / p) for p in periods for k in range(1, p)})


def stripe_index(image: np.ndarray, fov: np.ndarray, vessels: np.ndarray | None = None,
                 periods=STRIPE_PERIODS) -> float:
    """Share of the background's high-pass power on the spectrum rows/columns at :func:`stripe_frequencies`.

    The green channel minus a Gaussian blur (sigma 3) is kept inside the FOV eroded by 8 px and away from the
    mask's vessels (dilated by 2 px), tapered by a blurred copy of that region, and Fourier transformed. The
    index is the power within one frequency bin of those rows and columns over all power but DC."""
    g = _green(image)
    region = _erode(fov, 8)
    if vessels is not None:
        region &= ~_dilate(vessels, 2)
    hp = g - cv2.GaussianBlur(g, (0, 0), 3)
    win = cv2.GaussianBlur(region.astype(np.float32), (0, 0), 4) * region
    power = np.abs(np.fft.fft2(hp * win)) ** 2
    power[0, 0] = 0.0
    h, w = g.shape
    fy, fx = np.abs(np.fft.fftfreq(h)), np.abs(np.fft.fftfreq(w))
    on_y = np.zeros(h, bool)
    on_x = np.zeros(w, bool)
    for f in stripe_frequencies(periods):
        on_y |= np.abs(fy - f) <= 1.0 / h
        on_x |= np.abs(fx - f) <= 1.0 / w
    on = on_y[:, None] | on_x[None, :]
    total = float(power.sum())
    return float(power[on].sum() / total) if total > 0 else float("nan")


def vessel_contrast(image: np.ndarray, mask: np.ndarray, fov: np.ndarray, bins=WIDTH_BINS) -> dict[str, dict]:
    """Mean vessel contrast (background - vessel) / background of the green channel on the mask's centre lines,
    per width bin: {bin: {"contrast", "pixels"}}. The background is a grey closing (15 px disc), which fills
    the dark vessels with their surroundings."""
    g = _green(image)
    bg = cv2.morphologyEx(g, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15)))
    contrast = (bg - g) / np.maximum(bg, 1e-3)
    skel, width = vessel_widths(mask)
    inside = skel & _erode(fov, 4)
    out = {}
    for name, lo, hi in bins:
        sel = inside & (width >= lo) & (width < hi)
        n = int(sel.sum())
        out[name] = {"contrast": float(contrast[sel].mean()) if n else float("nan"), "pixels": n}
    return out


def _argmax_yx(a: np.ndarray) -> tuple[int, int]:
    y, x = np.unravel_index(int(np.argmax(a)), a.shape)
    return int(y), int(x)


DISC_BLUR = 0.03  # the blur that turns a fundus photograph's brightness into its disc: sigma, share of the side


def _disc_blur(a: np.ndarray) -> np.ndarray:
    """``a`` (H, W) float32 blurred at the optic disc's scale (sigma = ``DISC_BLUR`` x the image side)."""
    return cv2.GaussianBlur(a, (0, 0), DISC_BLUR * max(a.shape))


def disc_offset(image: np.ndarray, mask: np.ndarray, fov: np.ndarray) -> dict:
    """Where the disc is and where the mask's large vessels converge, and their distance relative to the FOV's
    diameter. Disc: the maximum of the luminance blurred with sigma = 3% of the image side, inside the FOV.
    Convergence: the maximum of the large vessels' density (centre lines of the widest third, blurred with
    sigma = 8% of the side)."""
    lum = image.astype(np.float32).mean(axis=2) if image.ndim == 3 else image.astype(np.float32)
    blur = _disc_blur(lum)
    blur[~_erode(fov, 4)] = -np.inf
    disc = _argmax_yx(blur)
    conv = convergence_point(mask)
    diameter = 2.0 * np.sqrt(max(float(fov.sum()), 1.0) / np.pi)
    dist = float(np.hypot(disc[0] - conv[0], disc[1] - conv[1]))
    return {"disc_yx": list(disc), "convergence_yx": list(conv), "distance_px": dist,
            "distance_rel": dist / diameter}


def disc_brightness(image: np.ndarray, mask: np.ndarray, fov: np.ndarray, radius_rel: float = 0.15) -> dict:
    """How bright the optic disc is, found from the vessels rather than from the brightness: the maximum of the
    Lab lightness (0-255, blurred with sigma = 3% of the image side, as :func:`disc_offset`) inside the FOV within
    ``radius_rel`` of the FOV's diameter from the point where the mask's large vessels converge, minus the FOV's
    median lightness. A bright blotch away from the vessels' hub does not count; a disc painted red or dark
    reads low. On a photograph, pass a segmenter's mask (pseudo-labels) when no label exists."""
    f = np.asarray(fov).astype(bool)
    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    light = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32)
    if not f.any():
        return {"brightness": float("nan"), "convergence_yx": [0, 0]}
    h, w = light.shape
    blur = _disc_blur(light)
    cy, cx = convergence_point(mask)
    diameter = 2.0 * np.sqrt(float(f.sum()) / np.pi)
    yy, xx = np.mgrid[:h, :w]
    near = f & ((yy - cy) ** 2 + (xx - cx) ** 2 <= (radius_rel * diameter) ** 2)
    peak = float(blur[near].max()) if near.any() else float(np.median(light[f]))
    return {"brightness": peak - float(np.median(light[f])), "convergence_yx": [int(cy), int(cx)]}


def kid(x: np.ndarray, y: np.ndarray, n_subsets: int = 100, subset_size: int | None = None,
        seed: int = 0) -> dict:
    """Kernel inception distance between feature sets ``x`` (n, d) and ``y`` (m, d): the unbiased MMD² with the
    kernel (x.y / d + 1)^3, on ``n_subsets`` random subsets of ``subset_size`` rows of each (default: the
    half the smaller set, at least 2), averaged; with the 2.5/97.5 percentiles of the subset values as an
    interval (subset-to-subset spread: the sampling uncertainty of the estimate)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d = x.shape[1]
    m = max(2, min(len(x), len(y)) // 2) if subset_size is None else min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError("kid needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_subsets):
        a = x[rng.choice(len(x), m, replace=False)]
        b = y[rng.choice(len(y), m, replace=False)]
        kxx, kyy, kxy = ((a @ a.T) / d + 1) ** 3, ((b @ b.T) / d + 1) ** 3, ((a @ b.T) / d + 1) ** 3
        off = ~np.eye(m, dtype=bool)
        vals.append(kxx[off].mean() + kyy[off].mean() - 2 * kxy.mean())
    v = np.asarray(vals)
    lo, hi = np.percentile(v, [2.5, 97.5])
    return {"kid": float(v.mean()), "ci95": [float(lo), float(hi)], "subset_size": m, "n_subsets": n_subsets}


def encoder_features(model, images: list[np.ndarray], device, preprocess: str = "rgb",
                     precision: str = "fp32") -> np.ndarray:
    """Global-average-pooled deepest encoder features of an smp segmenter for each image (n, channels)."""
    import torch

    from retinasynth.data.preprocess import enhance
    from retinasynth.precision import autocast
    from retinasynth.segmenter.sampling import to_tensor

    out = []
    model.eval()
    with torch.no_grad():
        for img in images:
            x = to_tensor(enhance(img, preprocess))[None].to(device)
            with autocast(precision, device):
                feats = model.encoder(x)
            out.append(feats[-1].float().mean(dim=(2, 3))[0].cpu().numpy())
    return np.stack(out)
