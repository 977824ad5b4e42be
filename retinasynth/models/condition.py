"""The generator's input: vessel mask, FOV and (optionally) full-frame coordinates, in [-1, 1]."""

from __future__ import annotations

import numpy as np
import torch


def coord_planes(h: int, w: int, y0: int = 0, x0: int = 0, full: tuple[int, int] | None = None) -> np.ndarray:
    """(2, h, w) float32 x/y positions in [-1, 1] of a window at (y0, x0) in a frame of size ``full``."""
    fh, fw = full or (h, w)
    ys = (np.arange(y0, y0 + h, dtype=np.float32) + 0.5) / fh * 2 - 1
    xs = (np.arange(x0, x0 + w, dtype=np.float32) + 0.5) / fw * 2 - 1
    return np.stack([np.broadcast_to(xs[None, :], (h, w)), np.broadcast_to(ys[:, None], (h, w))])


def make_condition(mask: np.ndarray, fov: np.ndarray, coords: bool, y0: int = 0, x0: int = 0,
                   full: tuple[int, int] | None = None) -> np.ndarray:
    """(C, H, W) float32 condition for one sample."""
    planes = [mask.astype(np.float32) * 2 - 1, fov.astype(np.float32) * 2 - 1]
    out = np.stack(planes)
    if coords:
        out = np.concatenate([out, coord_planes(mask.shape[0], mask.shape[1], y0, x0, full)])
    return out


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(127.5).sub_(1.0)


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (B, 3, H, W) in [-1, 1] -> uint8 (H, W, 3) / (B, H, W, 3), rounded."""
    t = t.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).cpu()
    return t.movedim(-3, -1).numpy()
