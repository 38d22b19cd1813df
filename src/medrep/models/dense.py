"""Segmentation networks from any exported encoder: its multi-scale features and a decoder to full resolution.

The U-Net (:mod:`.unet`) brings its own decoder. Every other registered backbone is wrapped in a
:class:`DenseModel` whose ``encoder`` is the backbone module itself (the exported weights, the
parameters that ``frozen_encoder`` freezes) and whose ``decoder`` is new, built from MONAI's
blocks, in one of two families:

* **CNNs** (ResNet-10/18/34/50, DenseNet-121): the stage outputs, fine to coarse (:data:`STAGES`),
  decoded as MONAI's ``FlexibleUNet`` decodes its ResNet/EfficientNet encoders: one
  :class:`monai.networks.nets.basic_unet.UpCat` per level (1x1 conv, nearest upsampling x2,
  concatenate the skip, two 3x3 convolutions), with the skips of every stage and skip-less ``UpCat`` blocks from the finest
  stage up to the input size. Widths are FlexibleUNet's (256, 128, 64, 32, 16 at 1/16 .. 1/1); norm is
  instance norm (MONAI's BasicUNet/UNETR default) rather than FlexibleUNet's batch norm: patches come
  a few at a time and sliding-window inference runs one window at a time. Inputs must be a multiple
  of the encoder's coarsest reduction (32 for the ImageNet stem; 16 for a stride-1 stem with max-pool).
* **ViT**: a UNETR decoder (MONAI's ``UnetrBasicBlock``, ``UnetrPrUpBlock``, ``UnetrUpBlock``, as
  in :class:`monai.networks.nets.UNETR`) over hidden states at evenly spaced depths, generalised
  from UNETR's patch 16 (4 levels, hidden states 3, 6, 9 of 12 and the normed last) to any power-of-two patch of
  ``2**n`` (``n`` levels, hidden states ``round(j * L / n)``, j = 1..n-1, of ``L``). The [CLS] token is dropped; the
  input-resolution skip is a conv block on the image (part of the decoder). A ViT takes exactly its
  ``img_size``, so that is the training patch and sliding window.

:func:`dense_spec` checks an encoder and says what inputs its dense model takes; :func:`dense_model`
builds it (a U-Net is returned as it is, so its numbers do not change).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.networks.blocks import UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
from monai.networks.nets.basic_unet import UpCat
from torch import Tensor, nn

from ..errors import MedrepError
from .backbones import BACKBONES, Backbone

#: decoder width at 1/r of the input: ``min(256, 16 * r)``, FlexibleUNet's (256, 128, 64, 32, 16) for 1/16 .. 1/1
DECODER_WIDTH, DECODER_MAX_WIDTH = 16, 256
NORM = ("instance", {"affine": True})
ACT = ("relu", {"inplace": True})
#: UNETR's ``feature_size`` (its default): the full-resolution width; it doubles per level down
UNETR_FEATURE_SIZE = 16


# ---------------------------------------------------------------------------------------------- stage features

#: ``(net, x) -> stage outputs fine to coarse`` and ``config -> their reductions`` (input size / map size)
StageFn = Callable[[nn.Module, Tensor], list[Tensor]]
ReductionFn = Callable[[dict], list[int]]
#: backbone name -> how to read its stages; a new CNN backbone registers here to be segmentable
STAGES: dict[str, tuple[StageFn, ReductionFn]] = {}


def _resnet_stages(net: nn.Module, x: Tensor) -> list[Tensor]:
    """MONAI ``ResNetFeatures.forward``: the stem after its activation, then layer1..layer4."""
    x = net.act(net.bn1(net.conv1(x)))
    feats = [x]
    if not net.no_max_pool:
        x = net.maxpool(x)
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        x = layer(x)
        feats.append(x)
    return feats


def _resnet_reductions(config: dict) -> list[int]:
    stem = int(config.get("conv1_t_stride", 2))
    pool = 1 if config.get("no_max_pool", False) else 2
    return [stem, stem * pool, stem * pool * 2, stem * pool * 4, stem * pool * 8]


def _densenet_stages(net: nn.Module, x: Tensor) -> list[Tensor]:
    """MONAI ``DenseNet.features`` split: the stem after relu0; each dense block's output after its
    transition's norm + ReLU (the transition's conv and pool then continue); the last block after
    norm5 and the ReLU of ``class_layers`` (as :func:`medrep.models.backbones._densenet_local`)."""
    feats = []
    for name, module in net.features.named_children():
        if name.startswith("transition"):
            x = module.relu(module.norm(x))
            feats.append(x)
            x = module.pool(module.conv(x))
        else:
            x = module(x)
            if name == "relu0":
                feats.append(x)
    feats.append(F.relu(x))
    return feats


for _depth in (10, 18, 34, 50):
    STAGES[f"resnet{_depth}"] = (_resnet_stages, _resnet_reductions)
STAGES["densenet121"] = (_densenet_stages, lambda config: [2, 4, 8, 16, 32])


# ---------------------------------------------------------------------------------------------- what a dense model takes


@dataclass(frozen=True)
class DenseSpec:
    """What the dense model of an encoder is and takes: inputs of exactly ``size`` (a ViT), or any
    multiple of ``multiple`` per axis (``why`` says which layer asks for it)."""

    kind: str  # "unet", "cnn" or "vit"
    name: str
    multiple: int = 16
    size: tuple[int, ...] | None = None
    why: str = "the U-Net pools 4 times"
    stages: tuple[int, ...] = ()  # CNN: indices of the stage outputs used as skips (fine to coarse)
    reductions: tuple[int, ...] = ()
    channels: tuple[int, ...] = ()

    def describe(self) -> str:
        if self.kind == "unet":
            return "the U-Net's own decoder"
        if self.kind == "cnn":
            levels = ", ".join(f"1/{r}" for r in self.reductions)
            return f"UNet decoder (MONAI UpCat) over {self.name} stages at {levels}" + (", up to 1/1" if self.reductions[0] > 1 else "")
        return f"UNETR decoder (MONAI UnetrPrUpBlock/UnetrUpBlock) over {self.name} hidden states {list(self.stages)}"


def _name(encoder: nn.Module) -> str:
    return str((getattr(encoder, "config", None) or {}).get("name", type(encoder).__name__))


def _pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def dense_spec(encoder: nn.Module, where: str = "--encoder") -> DenseSpec:
    """Check that ``encoder`` can be decoded to full resolution; MedrepError naming ``where`` if not."""
    name = _name(encoder)
    if hasattr(encoder, "dense") and hasattr(encoder, "dense_channels"):
        return DenseSpec("unet", name)
    config = getattr(encoder, "config", None)
    if not isinstance(encoder, Backbone) or not isinstance(config, dict) or config.get("name") not in BACKBONES:
        raise MedrepError(f"a {name} encoder is not a registered backbone; segmentation takes an exported encoder of "
                          f"one of: {', '.join(sorted(BACKBONES))}", where)
    if name == "vit":
        return _vit_spec(config, where)
    if name not in STAGES:
        raise MedrepError(f"a {name} encoder has no multi-scale features for a decoder; segmentation supports "
                          f"{', '.join(sorted([*STAGES, 'unet', 'vit']))}", where)
    return _cnn_spec(encoder, where)


def _cnn_spec(encoder: Backbone, where: str) -> DenseSpec:
    name = encoder.config["name"]
    stage_fn, reduction_fn = STAGES[name]
    reductions = reduction_fn(encoder.config)
    # a stage at the same scale as the next (no max-pool after a stride-s stem) gives way to the deeper one
    keep = [i for i, r in enumerate(reductions) if i == len(reductions) - 1 or reductions[i + 1] != r]
    kept = [reductions[i] for i in keep]
    if not _pow2(kept[0]) or any(b != 2 * a for a, b in zip(kept, kept[1:])):
        raise MedrepError(f"the {name} encoder's feature maps (1/{', 1/'.join(map(str, reductions))} of the input) are not "
                          "powers of two, each twice the next: no U-Net decoder fits it (conv1_t_stride must be 1, 2, 4...)",
                          where)
    multiple = kept[-1]
    # one pass at the smallest input that fits (the coarsest map 1 voxel): every stage's channels, and its size checked against the rule
    was = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            like = next(encoder.parameters())
            probe = torch.zeros(1, int(encoder.config.get("in_channels", 1)), *[multiple] * encoder.spatial_dims,
                                dtype=like.dtype, device=like.device)
            feats = stage_fn(encoder.net, probe)
    finally:
        encoder.train(was)
    for r, f in zip(reductions, feats):
        if tuple(f.shape[2:]) != (multiple // r,) * encoder.spatial_dims:
            raise MedrepError(f"the {name} encoder's stage maps have sizes {[tuple(f.shape[2:]) for f in feats]} for a "
                              f"{multiple} input, not 1/{', 1/'.join(map(str, reductions))} of it: no U-Net decoder fits it",
                              where)
    return DenseSpec("cnn", name, multiple=multiple, why=f"the {name} encoder's coarsest features are 1/{multiple} of its input",
                     stages=tuple(keep), reductions=tuple(kept), channels=tuple(int(feats[i].shape[1]) for i in keep))


def _vit_spec(config: dict, where: str) -> DenseSpec:
    dims = int(config["spatial_dims"])
    size = _per_axis(config.get("img_size", 224), dims)
    patch = _per_axis(config.get("patch_size", 16), dims)
    if len(set(patch)) != 1 or not _pow2(patch[0]) or patch[0] < 2:
        raise MedrepError(f"the vit encoder's patch_size {list(patch)}: the UNETR decoder upsamples its tokens x2 per level, "
                          "so it needs the same power of two (2, 4, 8, 16, ...) on every axis", where)
    levels = int(math.log2(patch[0]))
    layers = int(config.get("num_layers", 12))
    picked = tuple(min(layers - 1, round(j * layers / levels)) for j in range(1, levels))
    return DenseSpec("vit", "vit", multiple=patch[0], size=size, why=f"the vit encoder takes exactly its img_size {list(size)}",
                     stages=picked, reductions=tuple(patch[0] >> j for j in range(levels + 1)))


def _per_axis(value, dims: int) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),) * dims


# ---------------------------------------------------------------------------------------------- decoders


class SkipDecoder(nn.Module):
    """MONAI ``UpCat`` blocks from the coarsest stage up to the input size, as FlexibleUNet's
    ``UNetDecoder``: each upsamples x2 (1x1 conv, nearest), concatenates the next finer stage (none
    past the finest) and applies two 3x3 convolutions."""

    def __init__(self, spatial_dims: int, channels: tuple[int, ...], finest_reduction: int):
        super().__init__()
        n_skips = len(channels) - 1
        n_blocks = n_skips + int(math.log2(finest_reduction))
        widths = [min(DECODER_MAX_WIDTH, DECODER_WIDTH * 2 ** (n_blocks - 1 - i)) for i in range(n_blocks)]
        blocks, in_ch = [], channels[-1]
        for i, width in enumerate(widths):
            skip = channels[-2 - i] if i < n_skips else 0
            blocks.append(UpCat(spatial_dims, in_ch, skip, width, act=ACT, norm=NORM, bias=False, upsample="nontrainable",
                                pre_conv="default", interp_mode="nearest", align_corners=None, halves=skip > 0, is_pad=True))
            in_ch = width
        self.blocks = nn.ModuleList(blocks)
        self.channels = tuple(widths)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        """Stage outputs fine to coarse -> decoder levels coarse to fine (the last at the input size)."""
        skips = feats[:-1][::-1]
        x, out = feats[-1], []
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i] if i < len(skips) else None)
            out.append(x)
        return out


class UNETRDecoder(nn.Module):
    """UNETR's decoder (``monai.networks.nets.UNETR``) for ``levels`` = log2(patch size) token
    upsamplings: the normed last tokens go up through ``UnetrUpBlock``s, taking at 1/2**j the hidden
    state ``stages[j-1]`` brought up by a ``UnetrPrUpBlock`` and at 1/1 a conv block on the image."""

    def __init__(self, spatial_dims: int, in_channels: int, hidden_size: int, levels: int, feature_size: int = UNETR_FEATURE_SIZE):
        super().__init__()
        f, kw = feature_size, dict(spatial_dims=spatial_dims, kernel_size=3, norm_name="instance", res_block=True)
        self.image_block = UnetrBasicBlock(in_channels=in_channels, out_channels=f, stride=1, **kw)
        self.token_blocks = nn.ModuleList(
            UnetrPrUpBlock(in_channels=hidden_size, out_channels=f * 2**j, num_layer=levels - j - 1, stride=1,
                           upsample_kernel_size=2, conv_block=True, **kw)
            for j in range(1, levels)
        )
        self.up_blocks = nn.ModuleList(
            UnetrUpBlock(in_channels=hidden_size if j == levels - 1 else f * 2 ** (j + 1), out_channels=f * 2**j,
                         upsample_kernel_size=2, **kw)
            for j in reversed(range(levels))
        )
        self.channels = tuple(f * 2**j for j in reversed(range(levels)))

    def forward(self, image: Tensor, skips: list[Tensor], bottom: Tensor) -> list[Tensor]:
        """``skips``: token maps for 1/2 .. 1/2**(levels-1); ``bottom``: the normed last tokens."""
        ups = [self.image_block(image)] + [block(t) for block, t in zip(self.token_blocks, skips)]
        x, out = bottom, []
        for block, skip in zip(self.up_blocks, reversed(ups)):
            x = block(x, skip)
            out.append(x)
        return out


class DenseModel(nn.Module):
    """An encoder (a registered :class:`Backbone`, weights untouched) and a decoder to full resolution.

    Quacks like :class:`medrep.models.unet.UNetBackbone` for segmentation: ``encoder``, ``decoder``,
    ``spatial_dims``, ``config``, ``dense(x)`` (decoder levels coarse to fine, the last at the input
    size) and ``dense_channels``.
    """

    def __init__(self, encoder: Backbone, spec: DenseSpec):
        super().__init__()
        self.encoder = encoder
        self.spec = spec
        self.config = encoder.config
        dims = encoder.spatial_dims
        if spec.kind == "cnn":
            self.decoder: nn.Module = SkipDecoder(dims, spec.channels, spec.reductions[0])
        else:
            c = encoder.config
            self.decoder = UNETRDecoder(dims, int(c.get("in_channels", 1)), int(c.get("hidden_size", 384)), len(spec.reductions) - 1)
            self.grid = tuple(s // spec.multiple for s in spec.size)
        self.dense_channels: tuple[int, ...] = tuple(self.decoder.channels)

    @property
    def spatial_dims(self) -> int:
        return self.encoder.spatial_dims

    def _check(self, x: Tensor) -> None:
        dims, spec = self.spatial_dims, self.spec
        if x.ndim != dims + 2:
            raise ValueError(f"{spec.name} built for spatial_dims={dims} expects a {dims + 2}-D batch, got shape {tuple(x.shape)}")
        if spec.size is not None and tuple(x.shape[2:]) != spec.size:
            raise ValueError(f"{spec.why}, got shape {tuple(x.shape)}")
        if any(s % spec.multiple for s in x.shape[2:]):
            raise ValueError(f"{spec.why}: sizes must be multiples of {spec.multiple}, got shape {tuple(x.shape)}")

    def _tokens(self, tokens: Tensor) -> Tensor:
        """``(B, 1 + N, C)`` with [CLS] first -> ``(B, C, *grid)`` (patch-embedding order, as UNETR's ``proj_feat``)."""
        b, _, c = tokens.shape
        return tokens[:, 1:].reshape(b, *self.grid, c).movedim(-1, 1).contiguous()

    def dense(self, x: Tensor) -> list[Tensor]:
        self._check(x)
        if self.spec.kind == "cnn":
            feats = STAGES[self.spec.name][0](self.encoder.net, x)
            return self.decoder([feats[i] for i in self.spec.stages])
        vit = self.encoder.net.vit
        _, hidden = vit(x)
        bottom = self._tokens(vit.norm(hidden[-1]))
        return self.decoder(x, [self._tokens(hidden[i]) for i in self.spec.stages], bottom)

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


def dense_model(encoder: nn.Module, spec: DenseSpec | None = None) -> nn.Module:
    """The U-Net as it is; any other supported encoder wrapped with a new decoder (see the module docs)."""
    spec = spec or dense_spec(encoder)
    return encoder if spec.kind == "unet" else DenseModel(encoder, spec)
