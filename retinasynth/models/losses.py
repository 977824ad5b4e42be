"""GAN objectives. Discriminators output logits; each loss takes logits and a real/fake target."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from retinasynth.errors import ConfigError


def _vanilla(logits: torch.Tensor, real: bool, for_disc: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def _lsgan(logits: torch.Tensor, real: bool, for_disc: bool) -> torch.Tensor:
    return F.mse_loss(logits, torch.full_like(logits, 1.0 if real else 0.0))


def _hinge(logits: torch.Tensor, real: bool, for_disc: bool) -> torch.Tensor:
    if for_disc:
        return F.relu(1.0 - logits).mean() if real else F.relu(1.0 + logits).mean()
    return -logits.mean()


GAN_LOSSES = {"vanilla": _vanilla, "lsgan": _lsgan, "hinge": _hinge}


class GANLoss:
    """``loss(logits, real, for_disc)``; build with ``GANLoss('vanilla'|'lsgan'|'hinge')``."""

    def __init__(self, kind: str = "vanilla") -> None:
        if kind not in GAN_LOSSES:
            raise ConfigError(f"unknown gan_loss {kind!r}; valid: {', '.join(GAN_LOSSES)}.")
        self.kind, self._fn = kind, GAN_LOSSES[kind]

    def __call__(self, logits: torch.Tensor, real: bool, for_disc: bool = True) -> torch.Tensor:
        return self._fn(logits, real, for_disc)
