"""Creating networks by name from a frozen config (smp-style registry: unknown names list valid ones)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from retinasynth.errors import ConfigError
from retinasynth.models.networks import (
    NORMS,
    UPSAMPLES,
    MultiscaleDiscriminator,
    PatchDiscriminator,
    UnetGenerator,
    init_weights,
)

GENERATORS = {"unet": UnetGenerator}
# name -> builder from (config, input channels); 'multiscale' reads model.d_scales
DISCRIMINATORS = {
    "patchgan": lambda cfg, cin: PatchDiscriminator(cin, cfg.ndf, cfg.n_layers, cfg.d_norm),
    "multiscale": lambda cfg, cin: MultiscaleDiscriminator(cin, cfg.ndf, cfg.n_layers, cfg.d_norm, cfg.d_scales),
}


def _norm_parameters(net: nn.Module) -> list[nn.Parameter]:
    """The affine scale and shift of every normalisation layer: how each feature map is coloured and lit, not
    which features are drawn where (style transfer's conditional instance norm, test-time adaptation's BN
    parameters)."""
    norms = (nn.InstanceNorm2d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)
    return [p for m in net.modules() if isinstance(m, norms) for p in m.parameters(recurse=False)]


# train.tune: which of the generator's parameters a fit updates (the rest keep their initial values)
TUNABLE = {
    "all": lambda net: list(net.parameters()),
    "norm": _norm_parameters,
}


def tunable_parameters(net: nn.Module, name: str) -> list[nn.Parameter]:
    """The parameters of ``net`` that ``train.tune=name`` updates; the others get ``requires_grad=False`` (no weight
    gradient is computed for them)."""
    if name not in TUNABLE:
        raise ConfigError(f"unknown train.tune {name!r}; valid: {', '.join(TUNABLE)}.")
    keep = TUNABLE[name](net)
    if not keep:
        raise ConfigError(f"train.tune={name!r}: this generator has no such parameters (model.norm='none'?); "
                          "use train.tune=all.")
    ids = {id(p) for p in keep}
    for p in net.parameters():
        p.requires_grad_(id(p) in ids)
    return keep


@dataclass(frozen=True)
class ModelConfig:
    """Generator and discriminator architecture.

    The generator's condition is the vessel mask and the FOV mask, plus (``coords=True``) two
    channels of normalised x/y position in the full frame, so that a generator trained on crops still
    knows where in the eye each crop lies (illumination, vignetting, FOV border), plus (``disc_prior=True``) a
    Gaussian plane at the point where the mask's large vessels converge
    (:func:`retinasynth.models.condition.disc_plane`), so that the disc is drawn there.
    """

    generator: str = "unet"
    ngf: int = 64
    depth: int | None = None  # None: log2 of the training crop (max 8)
    norm: str = "instance"
    dropout: float = 0.5
    upsample: str = "transpose"  # or 'resize': nearest x2 + 3x3 conv, no checkerboard (networks.up_layer)
    coords: bool = True
    disc_prior: bool = False
    discriminator: str = "patchgan"
    ndf: int = 64
    n_layers: int = 3
    d_norm: str = "instance"
    d_scales: int = 2  # PatchGANs of the 'multiscale' discriminator (input halved per scale)

    def __post_init__(self) -> None:
        for field, value, valid in (("generator", self.generator, GENERATORS),
                                    ("discriminator", self.discriminator, DISCRIMINATORS)):
            if value not in valid:
                raise ConfigError(f"unknown model.{field} {value!r}; valid: {', '.join(valid)}.")
        for field, value in (("norm", self.norm), ("d_norm", self.d_norm)):
            if value not in NORMS:
                raise ConfigError(f"unknown model.{field} {value!r}; valid: {', '.join(NORMS)}.")
        for field in ("ngf", "ndf", "n_layers", "d_scales"):
            if not isinstance(getattr(self, field), int) or getattr(self, field) < 1:
                raise ConfigError(f"model.{field} must be a positive integer, got {getattr(self, field)!r}.")
        if self.depth is not None and not 5 <= self.depth <= 10:
            raise ConfigError(f"model.depth must be between 5 and 10 (or null for auto), got {self.depth!r}.")
        if self.upsample not in UPSAMPLES:
            raise ConfigError(f"unknown model.upsample {self.upsample!r}; valid: {', '.join(UPSAMPLES)}.")
        for field in ("coords", "disc_prior"):
            if not isinstance(getattr(self, field), bool):
                raise ConfigError(f"model.{field} must be true or false, got {getattr(self, field)!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout!r}.")

    @property
    def in_channels(self) -> int:
        return 2 + 2 * int(self.coords) + int(self.disc_prior)

    def resolved_depth(self, train_side: int) -> int:
        if self.depth is not None:
            return self.depth
        if train_side < 32 or train_side & (train_side - 1):
            raise ConfigError(f"with model.depth null the training side (train.crop, or data.size when "
                              f"train.crop is null) must be a power of two >= 32 (e.g. 64, 128, 256, 512), "
                              f"got {train_side}; or set model.depth.")
        return min(8, int(math.log2(train_side)))


def create_generator(cfg: ModelConfig, depth: int) -> nn.Module:
    net = GENERATORS[cfg.generator](in_channels=cfg.in_channels, out_channels=3, ngf=cfg.ngf, depth=depth,
                                    norm=cfg.norm, dropout=cfg.dropout, upsample=cfg.upsample)
    return init_weights(net)


def create_discriminator(cfg: ModelConfig) -> nn.Module:
    return init_weights(DISCRIMINATORS[cfg.discriminator](cfg, cfg.in_channels + 3))
