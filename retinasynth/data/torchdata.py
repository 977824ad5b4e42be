"""A ``torch.utils.data.Dataset`` over any dataset folder retinasynth reads (real layouts, synthetic sets, nnU-Net
raw folders): ``for batch in DataLoader(PairDataset("synth"), batch_size=8)``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from retinasynth.data.dataset import DataConfig, load_dataset


class PairDataset(torch.utils.data.Dataset):
    """Image/mask/FOV triplets as tensors: ``image`` float 3xHxW in [0, 1], ``mask`` and ``fov`` float 1xHxW in
    {0, 1}, and the sample ``id``.

    Args:
        root: a dataset folder in any supported layout, or a `retinasynth synthesize` output.
        split: 'train', 'test' or 'all'; None: every pair of a synthetic set, the training split otherwise.
        cfg: how to read and resize (default: 512 px squares, so that a DataLoader can stack them); None sizes keep
            native resolution (batch size 1 then).
        transform: optional ``f(image uint8 HxWx3, mask bool HxW, fov bool HxW) -> (image, mask, fov)`` applied
            before conversion, e.g. an albumentations pipeline through ``retinasynth.data.transforms.apply_paired``.
    """

    def __init__(self, root: str | Path, split: str | None = None, cfg: DataConfig | None = None, transform=None):
        self.data = load_dataset(root, split, cfg or DataConfig(size=512))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data.samples)

    def __getitem__(self, i: int) -> dict:
        s = self.data.samples[i]
        image, mask, fov = s.image, s.mask, s.fov
        if self.transform is not None:
            image, mask, fov = self.transform(image, mask, fov)
        return {"image": torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0))).float() / 255.0,
                "mask": torch.from_numpy(np.asarray(mask, np.float32)[None]),
                "fov": torch.from_numpy(np.asarray(fov, np.float32)[None]), "id": s.id}
