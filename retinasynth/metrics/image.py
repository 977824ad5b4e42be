"""Image similarity between generated and real fundus photographs, under two protocols.

``notebook_scores`` reproduces how the original notebook computed its reported numbers: each image
as float in [-1, 1] at 256x256, the whole frame (black surround included), scikit-image's MSE, SSIM
(channel-wise, uniform 7x7 window) and PSNR with the data range scikit-image then inferred for float
input, 2. MSE is therefore in [-1, 1] units (4x the [0, 1] value), and the black surround, trivially
matched, inflates SSIM and PSNR.

``sound_scores`` is what we report: [0, 1] range with an explicit data_range of 1, Gaussian-window
SSIM (sigma 1.5, Wang et al. 2004), and every score computed inside the field of view only.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

# What the original notebook reported on its test images (../shared/docs/original-notebook.md); the one
# place these numbers are written.
NOTEBOOK_REPORTED = {"mse": 0.0378, "ssim": 0.7295, "psnr": 21.13}


def beats_notebook(scores: dict[str, float]) -> bool:
    """Lower MSE, higher SSIM and higher PSNR than the notebook's reported numbers, all three."""
    r = NOTEBOOK_REPORTED
    return bool(scores["mse"] < r["mse"] and scores["ssim"] > r["ssim"] and scores["psnr"] > r["psnr"])


def _to_pm1(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64) / 127.5 - 1.0


def notebook_scores(fake: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """The notebook's protocol on one pair of uint8 RGB images (already at 256x256)."""
    a, b = _to_pm1(real), _to_pm1(fake)
    return {
        "mse": float(mean_squared_error(a, b)),
        "ssim": float(structural_similarity(a, b, channel_axis=-1, data_range=2.0)),
        "psnr": float(peak_signal_noise_ratio(a, b, data_range=2.0)),
    }


def sound_scores(fake: np.ndarray, real: np.ndarray, fov: np.ndarray) -> dict[str, float]:
    """MSE, PSNR and Gaussian SSIM in [0, 1] units, inside the FOV only, for one pair."""
    a = real.astype(np.float64) / 255.0
    b = fake.astype(np.float64) / 255.0
    m = fov.astype(bool)
    if not m.any():
        raise ValueError("empty FOV: nothing to score")
    mse = float(((a - b) ** 2)[m].mean())
    # SSIM windows near the FOV border reach outside it: give both images the same content there, so
    # only differences inside the FOV count.
    b = np.where(m[..., None], b, a)
    _, smap = structural_similarity(a, b, channel_axis=-1, data_range=1.0, gaussian_weights=True,
                                    sigma=1.5, use_sample_covariance=False, full=True)
    ssim = float(smap.mean(axis=-1)[m].mean())
    psnr = float(10 * np.log10(1.0 / mse)) if mse > 0 else float("inf")
    return {"mse": mse, "ssim": ssim, "psnr": psnr}


def summarize(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and (sample) standard deviation of each score over images."""
    out = {}
    for k in rows[0]:
        v = np.array([r[k] for r in rows], dtype=np.float64)
        out[k] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}
    return out
