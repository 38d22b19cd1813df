"""COVER's U-Net, 2D or 3D: a pooled-bottleneck encoder for global SSL methods and five dense levels
for pixel-wise ones.

The down path (``encoder``) and the up path (``decoder``) are separate submodules that partition the
parameters, so a "frozen encoder" evaluation can freeze exactly the part a global method trained.
``forward`` runs the encoder only and pools the bottleneck, which lets SimCLR, BYOL and the others
pretrain the same encoder that COVER pretrains together with its decoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from torch import Tensor, nn

from ..errors import RecipeError
from ..options import NonNegativeFloat, PositiveInt
from .backbones import Backbone, SpatialDims, register_backbone

LEVELS = 5
FACTOR = 2 ** (LEVELS - 1)


def _double_conv(spatial_dims: int, in_ch: int, out_ch: int, groups: int, negative_slope: float) -> nn.Sequential:
    def conv(i: int, o: int) -> Convolution:
        return Convolution(
            spatial_dims, i, o, kernel_size=3, adn_ordering="NA",
            norm=("group", {"num_groups": groups}), act=("leakyrelu", {"negative_slope": negative_slope}),
        )

    return nn.Sequential(conv(in_ch, out_ch), conv(out_ch, out_ch))


class UNetEncoder(nn.Module):
    """Stage 0 at full resolution, stages 1-4 each halve the size (max-pool) before a double conv."""

    def __init__(self, spatial_dims: int, in_channels: int, channels: Sequence[int], groups: int, negative_slope: float):
        super().__init__()
        pool = Pool[Pool.MAX, spatial_dims]
        stages = [_double_conv(spatial_dims, in_channels, channels[0], groups, negative_slope)]
        for i in range(1, LEVELS):
            block = _double_conv(spatial_dims, channels[i - 1], channels[i], groups, negative_slope)
            stages.append(nn.Sequential(pool(kernel_size=2), block))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        """The five stage outputs, fine to coarse (the skips, then the bottleneck)."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class UNetDecoder(nn.Module):
    """Four up stages: upsample x2 (align_corners=True), concatenate ``[skip, up]``, double conv."""

    def __init__(self, spatial_dims: int, channels: Sequence[int], groups: int, negative_slope: float):
        super().__init__()
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"
        self.stages = nn.ModuleList(
            _double_conv(spatial_dims, channels[i] + channels[i + 1], channels[i], groups, negative_slope)
            for i in reversed(range(LEVELS - 1))
        )

    def forward(self, skips: list[Tensor]) -> list[Tensor]:
        """From the encoder's fine-to-coarse outputs, the five dense levels coarse to fine."""
        y = skips[-1]
        out = [y]
        for stage, skip in zip(self.stages, reversed(skips[:-1])):
            y = F.interpolate(y, size=skip.shape[2:], mode=self.mode, align_corners=True)
            y = stage(torch.cat([skip, y], dim=1))
            out.append(y)
        return out


class UNetBackbone(Backbone):
    """U-Net whose ``forward`` is the globally pooled bottleneck ``(B, channels[-1])``.

    ``dense(x)`` gives the five levels coarse to fine (1/16, 1/8, 1/4, 1/2, 1/1 of the input size)
    with ``dense_channels`` channels. Input sizes must be divisible by 16 so that every skip has
    exactly twice the size of the level below it.
    """

    def __init__(self, encoder: UNetEncoder, decoder: UNetDecoder, config: dict):
        super().__init__(nn.ModuleDict({"encoder": encoder, "decoder": decoder}), int(config["channels"][-1]), config)
        self.dense_channels: tuple[int, ...] = tuple(int(c) for c in reversed(config["channels"]))

    @property
    def encoder(self) -> UNetEncoder:
        return self.net["encoder"]

    @property
    def decoder(self) -> UNetDecoder:
        return self.net["decoder"]

    def _check(self, x: Tensor) -> None:
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"unet built for spatial_dims={self.spatial_dims} expects a {self.spatial_dims + 2}-D batch "
                f"(B, C, *spatial), got shape {tuple(x.shape)}"
            )
        if any(s % FACTOR for s in x.shape[2:]):
            raise ValueError(f"unet needs spatial sizes divisible by {FACTOR} (four 2x poolings), got shape {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return self.encoder(x)[-1].mean(dim=tuple(range(2, x.ndim)))

    def dense(self, x: Tensor) -> list[Tensor]:
        """Feature maps coarse to fine: bottleneck, then the decoder at 1/8, 1/4, 1/2 and full size."""
        self._check(x)
        return self.decoder(self.encoder(x))


@register_backbone("unet")
def unet(
    *,
    spatial_dims: SpatialDims = 2,
    in_channels: PositiveInt = 1,
    channels: Sequence[PositiveInt] = (32, 64, 128, 256, 512),
    groups: PositiveInt = 8,
    negative_slope: NonNegativeFloat = 0.2,
) -> UNetBackbone:
    """COVER's U-Net: double 3x3(x3) conv + GroupNorm(``groups``) + LeakyReLU per stage, five
    stages down and four up; the decoder mirrors ``channels``. He-normal conv init, as the
    official code. (The official GroupNorm uses groups of 8 channels, i.e. ``channels // 8``
    groups; here ``groups`` is the number of groups, the same for every layer.)"""
    if len(channels) != LEVELS:
        raise RecipeError(f"must be a list of {LEVELS} channel counts, got {channels!r}", "model.channels")
    chans = list(channels)
    bad = [c for c in chans if c % groups]
    if bad:
        raise RecipeError(f"every channel count must be divisible by groups={groups}; {bad} are not", "model.channels")
    encoder = UNetEncoder(spatial_dims, in_channels, chans, groups, negative_slope)
    decoder = UNetDecoder(spatial_dims, chans, groups, negative_slope)
    for m in (*encoder.modules(), *decoder.modules()):
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight)
    config = dict(name="unet", spatial_dims=spatial_dims, in_channels=in_channels, channels=chans, groups=groups,
                  negative_slope=negative_slope)
    return UNetBackbone(encoder, decoder, config)
