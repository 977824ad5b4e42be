"""Source images in a target camera's look, from its unlabelled photographs: the two classic input-level
domain-adaptation controls, as pure functions on uint8 RGB arrays (each with its FOV).

- :func:`fda`: Fourier domain adaptation (Yang & Soatto, CVPR 2020): the low-frequency amplitude spectrum of
  the source image, a centred square of side ``2 * beta * min(H, W)``, replaced by the target's, the phase
  kept. Illumination, colour cast and the broad shading change; the vessels (phase, high frequencies) stay.
- :func:`histogram_match`: each RGB channel's distribution inside the source FOV mapped onto the target's
  inside its FOV (the matching ``synthesize --style`` applies to renders: :func:`retinasynth.synth.style.match_style`).

Both leave pixels outside the source FOV as they were and return a new array.
"""

from __future__ import annotations

import numpy as np

from retinasynth.data.preprocess import resize_image, resize_mask
from retinasynth.synth.style import Style, channel_cdfs, match_style

ADAPT_METHODS = ("fda", "hist")


def _to_shape(image: np.ndarray, fov: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    if image.shape[:2] == tuple(shape):
        return image, fov
    return resize_image(image, shape), resize_mask(fov, shape, thin=False)


def fda(image: np.ndarray, fov: np.ndarray, target: np.ndarray, target_fov: np.ndarray,
        beta: float = 0.01) -> np.ndarray:
    """``image`` with the low-frequency amplitudes of ``target`` (resized to ``image``'s frame), inside ``fov``.
    ``beta`` in (0, 0.5]: the half side of the swapped square as a share of the shorter side."""
    if not 0.0 < beta <= 0.5:
        raise ValueError(f"beta must lie in (0, 0.5], got {beta}")
    h, w = image.shape[:2]
    tgt, _ = _to_shape(target, target_fov, (h, w))
    src_f = np.fft.fftshift(np.fft.fft2(image.astype(np.float64), axes=(0, 1)), axes=(0, 1))
    tgt_f = np.fft.fftshift(np.fft.fft2(tgt.astype(np.float64), axes=(0, 1)), axes=(0, 1))
    amp, phase = np.abs(src_f), np.angle(src_f)
    b = max(1, int(np.floor(beta * min(h, w))))
    cy, cx = h // 2, w // 2
    sl = np.s_[max(0, cy - b):cy + b + 1, max(0, cx - b):cx + b + 1]
    amp[sl] = np.abs(tgt_f)[sl]
    out_f = np.fft.ifftshift(amp * np.exp(1j * phase), axes=(0, 1))
    out = np.real(np.fft.ifft2(out_f, axes=(0, 1)))
    res = image.copy()
    inside = fov.astype(bool)
    res[inside] = np.clip(np.round(out[inside]), 0, 255).astype(np.uint8)
    return res


def histogram_match(image: np.ndarray, fov: np.ndarray, target: np.ndarray, target_fov: np.ndarray) -> np.ndarray:
    """``image`` with each channel's distribution inside ``fov`` mapped onto ``target``'s inside ``target_fov``."""
    return match_style(image, fov, Style("target", channel_cdfs(target, target_fov.astype(bool))))


def adapt_image(method: str, image: np.ndarray, fov: np.ndarray, target: np.ndarray, target_fov: np.ndarray,
                beta: float = 0.01) -> np.ndarray:
    """One source image in one target photograph's look by ``method`` ('fda' or 'hist')."""
    if method == "fda":
        return fda(image, fov, target, target_fov, beta)
    if method == "hist":
        return histogram_match(image, fov, target, target_fov)
    raise KeyError(f"unknown adaptation method {method!r}; valid: {', '.join(ADAPT_METHODS)}")
