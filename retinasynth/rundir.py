"""The run-directory API: read a `retinasynth fit` run's config and rebuild its generator.

Both `retinasynth evaluate` (retinasynth.train.evaluate) and synthesis (retinasynth.synth) use a run
through this module; ``retinasynth.synth.render`` re-exports it for existing imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from retinasynth.config import from_dict
from retinasynth.errors import RetinaSynthError
from retinasynth.models.condition import make_condition, tensor_to_image
from retinasynth.models.factory import ModelConfig, create_generator
from retinasynth.precision import autocast, resolve_precision
from retinasynth.train.checkpoint import WEIGHTS, WEIGHTS_EMA, load_weights, read_run_config

__all__ = ["Generator", "load_generator", "pick_device", "read_run_config"]


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class Generator:
    """A trained generator with what is needed to use it: config, geometry, weights' sha256."""

    net: torch.nn.Module
    model_config: ModelConfig
    size: int  # working resolution it was trained at
    run_dir: Path
    weights_sha256: str
    device: torch.device
    precision: str = "fp32"  # resolved ('fp32', 'bf16' or 'fp16'): G's forward runs under its autocast

    @torch.no_grad()
    def render(self, masks: np.ndarray | list[np.ndarray], fovs: np.ndarray | list[np.ndarray],
               stochastic: bool = False, seed: int | None = None) -> np.ndarray:
        """Render vessel masks into RGB uint8 images, (B, H, W, 3).

        Deterministic by default (eval mode: dropout off). ``stochastic=True`` keeps the decoder's
        dropout active and draws it from a generator seeded with ``seed``, giving several plausible
        images for one mask; the same seed gives the same images. The forward pass runs at
        ``self.precision`` (fp32: no autocast); its output is cast to fp32 before rounding to uint8.
        """
        masks = np.asarray(masks)
        fovs = np.asarray(fovs)
        if masks.ndim == 2:
            masks, fovs = masks[None], fovs[None]
        cond = np.stack([make_condition(m, f, self.model_config.coords) for m, f in zip(masks, fovs)])
        x = torch.from_numpy(cond).to(self.device)
        if stochastic:
            self.net.train()
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(0 if seed is None else int(seed))
                with autocast(self.precision, self.device):
                    out = self.net(x)
            self.net.eval()
        else:
            self.net.eval()
            with autocast(self.precision, self.device):
                out = self.net(x)
        return tensor_to_image(out.float())


def load_generator(run_dir: str | Path, ema: bool = True, device: str | None = None,
                   precision: str = "fp32") -> Generator:
    """Rebuild the generator from ``config.json`` and load its (EMA by default) weights.

    ``precision`` ('auto', 'fp32', 'bf16', 'fp16') is resolved for the device
    (:func:`retinasynth.precision.resolve_precision`; a one-line ConfigError where impossible) and kept in
    ``Generator.precision``. The default here is fp32; the commands default to 'auto'."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    model_cfg = from_dict(ModelConfig, cfg["config"]["model"])
    weights = run_dir / (WEIGHTS_EMA if ema else WEIGHTS)
    if not weights.is_file():
        raise RetinaSynthError(f"{weights}: missing; the run has not saved weights yet "
                               f"(train it, or resume it with `retinasynth fit --resume`).")
    net = create_generator(model_cfg, cfg["generator"]["depth"])
    sha = load_weights(weights, net)
    dev = pick_device(device)
    prec = resolve_precision(precision, dev)
    net.to(dev).eval()
    return Generator(net, model_cfg, int(cfg["config"]["data"]["size"]), run_dir, sha, dev, prec)
