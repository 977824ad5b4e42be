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


def reconstruction_l1(fake: torch.Tensor, real: torch.Tensor, cond: torch.Tensor, vessel_weight: float = 0.0,
                      ) -> torch.Tensor:
    """Mean absolute error; with ``vessel_weight`` > 0, pixels on or next to a vessel of the condition's mask
    (channel 0, in [-1, 1]; dilated by one pixel so both vessel edges count) weigh ``1 + vessel_weight``.

    The weights are normalised (sum(w * |d|) / sum(w)), so the loss keeps the scale of a plain L1 and
    ``l1_weight`` keeps its meaning; only the share of the error that vessels carry changes. Vessels cover
    ~10% of a fundus image, so a plain L1 lets thin vessels fade at little cost.
    """
    d = (fake.float() - real.float()).abs()
    if vessel_weight <= 0:
        return d.mean()
    near = F.max_pool2d((cond[:, :1].float() > 0).float(), 3, 1, 1)
    w = 1.0 + vessel_weight * near
    return (d * w).mean() / w.mean()


def anchored_target(real: torch.Tensor, kept: torch.Tensor, cond: torch.Tensor, share: float) -> torch.Tensor:
    """The L1 target of ``train.disc_anchor``: ``real`` with ``share`` of it replaced by ``kept`` (the starting
    generator's render of the same condition) in proportion to the disc plane, the condition's last channel (in
    [-1, 1]: 1 at the vessels' hub, -1 far from it). ``share`` 0 returns ``real``."""
    w = share * (cond[:, -1:].float() + 1) / 2
    return real.float() * (1 - w) + kept.float() * w


def scales(out) -> list:
    """A discriminator's output as a list over scales (a PatchGAN has one)."""
    return out if isinstance(out, list) else [out]


def gan_mean(gan: GANLoss, logits: list[torch.Tensor], real: bool, for_disc: bool = True) -> torch.Tensor:
    """The GAN loss averaged over a discriminator's scales (one scale: the loss itself, bit for bit)."""
    losses = [gan(x.float(), real, for_disc) for x in logits]
    return losses[0] if len(losses) == 1 else torch.stack(losses).mean()


def feature_matching(fake: list[tuple[torch.Tensor, list[torch.Tensor]]],
                     real: list[tuple[torch.Tensor, list[torch.Tensor]]]) -> torch.Tensor:
    """pix2pixHD's feature-matching loss: the L1 between the discriminator's intermediate activations on the
    generated and on the real pair, averaged over layers and scales (``fake`` and ``real`` are the per-scale
    ``(logits, features)`` of ``D(x, features=True)``; the real side carries no gradient). It asks the
    generator to match the statistics of real texture at every depth of the discriminator, not only to fool
    its last layer."""
    terms = [F.l1_loss(f.float(), r.detach().float()) for (_, ff), (_, rf) in zip(fake, real) for f, r in zip(ff, rf)]
    return torch.stack(terms).mean()
