"""Image encoders on MONAI networks, 2D or 3D, each mapping ``(B, C, *spatial)`` to ``(B, out_dim)``.

Every backbone keeps the keyword arguments it was built with in ``config`` so that an exported
encoder can be rebuilt from a JSON file (no pickled code) by :func:`build_backbone`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from monai.networks import nets
from torch import nn

from ..errors import RecipeError

BACKBONES: dict[str, Callable[..., Backbone]] = {}


def register_backbone(name: str):
    def wrap(fn):
        BACKBONES[name] = fn
        return fn

    return wrap


class Backbone(nn.Module):
    """A network that returns one feature vector per input; ``config`` rebuilds it."""

    def __init__(self, net: nn.Module, out_dim: int, config: dict[str, Any]):
        super().__init__()
        self.net = net
        self.out_dim = out_dim
        self.config = config

    @property
    def spatial_dims(self) -> int:
        return int(self.config["spatial_dims"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"{self.config['name']} built for spatial_dims={self.spatial_dims} expects a "
                f"{self.spatial_dims + 2}-D batch (B, C, *spatial), got shape {tuple(x.shape)}"
            )
        return self.net(x)


def _resnet(depth: int):
    def build(
        spatial_dims: int = 2,
        in_channels: int = 1,
        conv1_t_size: int = 7,
        conv1_t_stride: int = 2,
        no_max_pool: bool = False,
        widen_factor: float = 1.0,
    ) -> Backbone:
        """MONAI ResNet without its classifier; stem options keep MONAI's names. For 28 px
        images a 3x3 stride-1 stem (with or without the max-pool) keeps spatial detail that the
        ImageNet stem (7x7, stride 2, max-pool) would reduce to 7x7 before the first block."""
        net = getattr(nets, f"resnet{depth}")(
            spatial_dims=spatial_dims, n_input_channels=in_channels, feed_forward=False, widen_factor=widen_factor,
            conv1_t_size=conv1_t_size, conv1_t_stride=conv1_t_stride, no_max_pool=no_max_pool,
        )
        out_dim = int((512 if depth < 50 else 2048) * widen_factor)
        config = dict(name=f"resnet{depth}", spatial_dims=spatial_dims, in_channels=in_channels, conv1_t_size=conv1_t_size,
                      conv1_t_stride=conv1_t_stride, no_max_pool=no_max_pool, widen_factor=widen_factor)
        return Backbone(net, out_dim, config)

    return build


for _depth in (10, 18, 34, 50):
    register_backbone(f"resnet{_depth}")(_resnet(_depth))


class _ViTFeatures(nn.Module):
    """MONAI ViT returning the [CLS] token after the final norm."""

    def __init__(self, vit: nets.ViT):
        super().__init__()
        self.vit = vit
        self.vit.classification_head = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.vit(x)
        return out


@register_backbone("vit")
def vit(
    spatial_dims: int = 2,
    in_channels: int = 1,
    img_size: int | list[int] = 224,
    patch_size: int | list[int] = 16,
    hidden_size: int = 384,
    mlp_dim: int = 1536,
    num_layers: int = 12,
    num_heads: int = 6,
    dropout_rate: float = 0.0,
) -> Backbone:
    """MONAI ViT with a [CLS] token; defaults are ViT-S/16. ``img_size`` must equal the input size."""
    net = nets.ViT(
        in_channels=in_channels, img_size=img_size, patch_size=patch_size, hidden_size=hidden_size, mlp_dim=mlp_dim,
        num_layers=num_layers, num_heads=num_heads, dropout_rate=dropout_rate, spatial_dims=spatial_dims,
        classification=True, num_classes=1, post_activation=None, qkv_bias=True,
    )
    config = dict(name="vit", spatial_dims=spatial_dims, in_channels=in_channels, img_size=img_size, patch_size=patch_size,
                  hidden_size=hidden_size, mlp_dim=mlp_dim, num_layers=num_layers, num_heads=num_heads, dropout_rate=dropout_rate)
    return Backbone(_ViTFeatures(net), hidden_size, config)


@register_backbone("densenet121")
def densenet121(spatial_dims: int = 3, in_channels: int = 1) -> Backbone:
    """MONAI DenseNet-121 with global pooling, 1024-d (ISImed's default encoder)."""
    net = nets.DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1)
    net.class_layers.out = nn.Identity()
    return Backbone(net, 1024, dict(name="densenet121", spatial_dims=spatial_dims, in_channels=in_channels))


def build_backbone(config: dict[str, Any]) -> Backbone:
    """Build from ``{"name": ..., **kwargs}``; unknown names or keys raise RecipeError on ``model.*``."""
    config = dict(config)
    name = config.pop("name", None)
    if name not in BACKBONES:
        raise RecipeError(f"unknown backbone {name!r}; available: {', '.join(sorted(BACKBONES))}", "model.name")
    params = inspect.signature(BACKBONES[name]).parameters
    for key in config:
        if key not in params:
            raise RecipeError(f"{name} takes no option {key!r}; options: {', '.join(params)}", f"model.{key}")
    return BACKBONES[name](**config)
