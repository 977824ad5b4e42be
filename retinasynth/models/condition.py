"""The generator's input: vessel mask, FOV and (optionally) full-frame coordinates and a disc plane, in [-1, 1]."""

from __future__ import annotations

import numpy as np
import torch

from retinasynth.masks.ops import convergence_point

DISC_SIGMA = 0.05  # the disc plane's Gaussian, as a share of the image side


def coord_planes(h: int, w: int, y0: int = 0, x0: int = 0, full: tuple[int, int] | None = None) -> np.ndarray:
    """(2, h, w) float32 x/y positions in [-1, 1] of a window at (y0, x0) in a frame of size ``full``."""
    fh, fw = full or (h, w)
    ys = (np.arange(y0, y0 + h, dtype=np.float32) + 0.5) / fh * 2 - 1
    xs = (np.arange(x0, x0 + w, dtype=np.float32) + 0.5) / fw * 2 - 1
    return np.stack([np.broadcast_to(xs[None, :], (h, w)), np.broadcast_to(ys[:, None], (h, w))])


def disc_plane(mask: np.ndarray, sigma: float = DISC_SIGMA) -> np.ndarray:
    """(H, W) float32 in [0, 1]: a Gaussian (sigma = ``sigma`` x the image side) at the point where the mask's
    large vessels converge (:func:`retinasynth.masks.ops.convergence_point`), where the optic disc belongs.
    A generator conditioned on it (``model.disc_prior``) is told where to draw the disc instead of guessing."""
    h, w = mask.shape
    cy, cx = convergence_point(mask)
    s = sigma * max(h, w)
    ys = (np.arange(h, dtype=np.float32) - cy) ** 2
    xs = (np.arange(w, dtype=np.float32) - cx) ** 2
    return np.exp(-(ys[:, None] + xs[None, :]) / (2 * s * s)).astype(np.float32)


def make_condition(mask: np.ndarray, fov: np.ndarray, coords: bool, y0: int = 0, x0: int = 0,
                   full: tuple[int, int] | None = None, disc: np.ndarray | None = None) -> np.ndarray:
    """(C, H, W) float32 condition for one sample: mask, FOV, then (``coords``) x/y positions, then ``disc``
    (a :func:`disc_plane` cropped like the mask) when given."""
    planes = [mask.astype(np.float32) * 2 - 1, fov.astype(np.float32) * 2 - 1]
    out = np.stack(planes)
    if coords:
        out = np.concatenate([out, coord_planes(mask.shape[0], mask.shape[1], y0, x0, full)])
    if disc is not None:
        out = np.concatenate([out, disc.astype(np.float32)[None] * 2 - 1])
    return out


def full_condition(mask: np.ndarray, fov: np.ndarray, coords: bool, disc_prior: bool) -> np.ndarray:
    """The condition of a whole frame, as :meth:`retinasynth.rundir.Generator.render` and the fit's sample grid
    build it."""
    return make_condition(mask, fov, coords, disc=disc_plane(mask) if disc_prior else None)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(127.5).sub_(1.0)


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (B, 3, H, W) in [-1, 1] -> uint8 (H, W, 3) / (B, H, W, 3), rounded."""
    t = t.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).cpu()
    return t.movedim(-3, -1).numpy()
