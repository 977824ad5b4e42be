"""Pix2Pix networks: a U-Net generator and a conditional PatchGAN discriminator, alone or at several scales.

The generator is the recursive skip-block U-Net of pix2pix (Isola et al., 2017); its depth is set
from the training crop size unless given, and it refuses an input whose side is not a multiple of
``2**depth`` with a message naming valid sizes.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from retinasynth.errors import ConfigError

NORMS = ("instance", "batch", "none")
UPSAMPLES = ("transpose", "resize")


def up_layer(kind: str, cin: int, cout: int, bias: bool) -> nn.Module:
    """x2 up-sampling. 'transpose': pix2pix's stride-2 4x4 transposed convolution. 'resize': nearest x2
    then a 3x3 convolution (Odena et al., 2016), which cannot produce the transposed convolution's
    checkerboard (uneven kernel overlap) at ~2.25x its FLOPs."""
    if kind == "transpose":
        return nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias)
    if kind == "resize":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=bias))
    raise ConfigError(f"unknown upsample {kind!r}; valid: {', '.join(UPSAMPLES)}.")


def norm_layer(kind: str):
    if kind == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True)
    if kind == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=True, track_running_stats=False)
    if kind == "none":
        return lambda c: nn.Identity()
    raise ConfigError(f"unknown norm {kind!r}; valid: {', '.join(NORMS)}.")


class _UnetBlock(nn.Module):
    """Down -> [submodule] -> up, with the input concatenated to the output (except outermost)."""

    def __init__(self, outer: int, inner: int, in_ch: int | None = None, sub: nn.Module | None = None,
                 outermost: bool = False, innermost: bool = False, norm=nn.InstanceNorm2d,
                 dropout: float = 0.0, out_ch: int | None = None, upsample: str = "transpose") -> None:
        super().__init__()
        self.outermost = outermost
        in_ch = in_ch or outer
        down = [nn.Conv2d(in_ch, inner, 4, 2, 1, bias=not isinstance(norm(1), nn.BatchNorm2d))]
        if outermost:
            up = [nn.ReLU(True), up_layer(upsample, inner * 2, out_ch or outer, True), nn.Tanh()]
            layers = down + [sub] + up
        elif innermost:
            # No norm at the bottleneck: at 1x1 a per-sample norm would zero the features.
            up = [nn.ReLU(True), up_layer(upsample, inner, outer, False), norm(outer)]
            layers = [nn.LeakyReLU(0.2, True)] + down + up
        else:
            up = [nn.ReLU(True), up_layer(upsample, inner * 2, outer, False), norm(outer)]
            layers = [nn.LeakyReLU(0.2, True)] + down + [norm(inner), sub] + up
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """U-Net generator: condition (vessel mask, FOV, optional coordinates) in, RGB in [-1, 1] out.

    Args:
        in_channels: condition channels.
        out_channels: 3 for RGB.
        ngf: width of the first layer; doubles per level up to ``8 * ngf``.
        depth: number of down-sampling levels (>= 5); the input side must be a multiple of 2**depth.
        norm: 'instance', 'batch' or 'none'.
        dropout: dropout in the three innermost decoder blocks (the stochastic mode uses it).
        upsample: 'transpose' (pix2pix) or 'resize' (nearest x2 + 3x3 convolution: no checkerboard).
    """

    def __init__(self, in_channels: int = 2, out_channels: int = 3, ngf: int = 64, depth: int = 8,
                 norm: str = "instance", dropout: float = 0.5, upsample: str = "transpose") -> None:
        super().__init__()
        if upsample not in UPSAMPLES:
            raise ConfigError(f"unknown upsample {upsample!r}; valid: {', '.join(UPSAMPLES)}.")
        if depth < 5:
            raise ConfigError(f"generator depth must be >= 5, got {depth}.")
        if ngf < 1:
            raise ConfigError(f"ngf must be >= 1, got {ngf}.")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}.")
        nl = norm_layer(norm)
        self.depth = depth
        block = _UnetBlock(ngf * 8, ngf * 8, innermost=True, norm=nl, upsample=upsample)
        for i in range(depth - 5):
            block = _UnetBlock(ngf * 8, ngf * 8, sub=block, norm=nl, dropout=dropout if i < 3 else 0.0,
                               upsample=upsample)
        block = _UnetBlock(ngf * 4, ngf * 8, sub=block, norm=nl, upsample=upsample)
        block = _UnetBlock(ngf * 2, ngf * 4, sub=block, norm=nl, upsample=upsample)
        block = _UnetBlock(ngf, ngf * 2, sub=block, norm=nl, upsample=upsample)
        self.model = _UnetBlock(ngf, ngf, in_ch=in_channels, sub=block, outermost=True, norm=nl,
                                out_ch=out_channels, upsample=upsample)

    def check_size(self, h: int, w: int) -> None:
        m = 2 ** self.depth
        if h % m or w % m:
            raise ConfigError(f"generator of depth {self.depth} takes sides that are multiples of {m} "
                              f"(e.g. {m}, {2 * m}, {4 * m}); got {w}x{h}. Resize or change depth.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_size(x.shape[-2], x.shape[-1])
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """Conditional N-layer PatchGAN: concat(condition, image) in, a map of real/fake logits out."""

    def __init__(self, in_channels: int = 5, ndf: int = 64, n_layers: int = 3, norm: str = "instance") -> None:
        super().__init__()
        if n_layers < 1:
            raise ConfigError(f"discriminator n_layers must be >= 1, got {n_layers}.")
        nl = norm_layer(norm)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=False), nl(ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, features: bool = False):
        """Logits; with ``features`` also the activations after each LeakyReLU (for feature matching)."""
        if not features:
            return self.model(x)
        feats = []
        for layer in self.model:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                feats.append(x)
        return x, feats


class MultiscaleDiscriminator(nn.Module):
    """pix2pixHD's discriminator (Wang et al., 2018): ``num_scales`` PatchGANs of the same shape, the k-th
    seeing the input average-pooled k times by 2, so coarse ones judge layout (the disc, illumination) and
    the finest judges texture. Returns one output per scale, finest first."""

    def __init__(self, in_channels: int = 5, ndf: int = 64, n_layers: int = 3, norm: str = "instance",
                 num_scales: int = 2) -> None:
        super().__init__()
        if num_scales < 1:
            raise ConfigError(f"discriminator num_scales must be >= 1, got {num_scales}.")
        self.scales = nn.ModuleList(PatchDiscriminator(in_channels, ndf, n_layers, norm) for _ in range(num_scales))
        self.down = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor, features: bool = False) -> list:
        out = []
        for i, d in enumerate(self.scales):
            if i:
                x = self.down(x)
            out.append(d(x, features))
        return out


def init_weights(net: nn.Module, gain: float = 0.02, generator: torch.Generator | None = None) -> nn.Module:
    """pix2pix initialisation: conv weights N(0, 0.02), norm weights N(1, 0.02), biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain, generator=generator)
            nn.init.zeros_(m.bias)
    return net
