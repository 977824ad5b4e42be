"""What each training step sees: real-image subsets per regime and batches as a function of (seed, step).

Batches are a pure function of (seed, step, arm) and the sample lists: every element draws the same
three numbers in every arm (the synthetic/real coin, the pool position, the augmentation seed), so
the arms differ only in which pool an element comes from.
"""

from __future__ import annotations

import numpy as np
import torch

from retinasynth.data.dataset import Sample
from retinasynth.data.transforms import apply_paired, segmentation_augmentation
from retinasynth.errors import ConfigError

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
MAX_TRIES = 10


def real_subset(train: list[Sample], n: int, seed: int) -> list[Sample]:
    """``n`` real training images drawn with ``default_rng([seed, n])`` from the split sorted by id:
    the same subset for every arm of a (regime, seed)."""
    ordered = sorted(train, key=lambda s: s.id)
    if n > len(ordered):
        raise ConfigError(f"regime n={n} needs {n} real training images but the training split has "
                          f"{len(ordered)}; lower bench.regimes.")
    idx = np.random.default_rng([seed, n]).choice(len(ordered), size=n, replace=False)
    return [ordered[int(i)] for i in sorted(idx)]


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 (or NxHxWx3) -> float CHW normalised with ImageNet statistics."""
    x = (image.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, -3)))


class PatchSampler:
    """Augmented training patches that lie mostly inside the FOV.

    A window of twice the patch side is cut around a random FOV pixel, the shared segmentation
    pipeline (``segmentation_augmentation``) is applied to it (its last op is the random patch crop),
    and the draw is repeated while less than ``min_fov`` of the patch is inside the FOV. Working on a
    window instead of the whole frame is what makes the pipeline cheap enough for CPU training.
    """

    def __init__(self, patch: int, size: int, min_fov: float = 0.5, augment: str = "strong") -> None:
        self.patch, self.min_fov = patch, min_fov
        self.window = min(size, 2 * patch)
        self.pipe = segmentation_augmentation(patch, self.window, augment)
        self._fov_pixels: dict[int, np.ndarray] = {}

    def _fov_index(self, s: Sample) -> np.ndarray:
        key = id(s)
        if key not in self._fov_pixels:
            self._fov_pixels[key] = np.flatnonzero(s.fov) if s.fov.any() else np.arange(s.fov.size)
        return self._fov_pixels[key]

    def __call__(self, s: Sample, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        h, w = s.fov.shape
        win_h, win_w = min(self.window, h), min(self.window, w)
        pix = self._fov_index(s)
        best = None
        for attempt in range(MAX_TRIES):
            c = int(pix[rng.integers(len(pix))])
            cy, cx = divmod(c, w)
            y0 = int(np.clip(cy - win_h // 2, 0, h - win_h))
            x0 = int(np.clip(cx - win_w // 2, 0, w - win_w))
            sl = np.s_[y0:y0 + win_h, x0:x0 + win_w]
            img, mask, fov = apply_paired(self.pipe, s.image[sl], s.mask[sl], s.fov[sl],
                                          seed=(seed + 7919 * attempt) & 0xFFFFFFFF)
            share = float(fov.mean())
            if best is None or share > best[0]:
                best = (share, img, mask)
            if share >= self.min_fov:
                break
        return best[1], best[2]


def draw_batch(real: list[Sample], synth: list[Sample], arm: str, synth_ratio: float, batch_size: int,
               seed: int, step: int, sampler: PatchSampler) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(images Bx3xPxP, masks Bx1xPxP, number of synthetic elements) of one step."""
    rng = np.random.default_rng([seed, step])
    images, masks, n_synth = [], [], 0
    for _ in range(batch_size):
        coin, pos, aug_seed = rng.random(), rng.random(), int(rng.integers(2**31))
        use_synth = arm == "synth" or (arm == "real+synth" and coin < synth_ratio)
        pool = synth if use_synth else real
        s = pool[min(int(pos * len(pool)), len(pool) - 1)]
        img, mask = sampler(s, aug_seed)
        images.append(img)
        masks.append(mask)
        n_synth += use_synth
    x = to_tensor(np.stack(images))
    y = torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))
    return x, y, n_synth
