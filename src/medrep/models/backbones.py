"""Image encoders on MONAI networks, 2D or 3D, each mapping ``(B, C, *spatial)`` to ``(B, out_dim)``.

ResNets, the ViT and DenseNet-121 also give their sub-region features (``Backbone.local``, or both
at once with ``Backbone.forward_with_local``) for the word-region losses of GLoRIA and MGCA.

Every backbone keeps the keyword arguments it was built with in ``config`` so that an exported
encoder can be rebuilt from a JSON file (no pickled code) by :func:`build_backbone`. A builder's
options (``model.*``) are its parameters, typed with :mod:`medrep.options` annotations and checked
on every call (:func:`register_backbone` wraps it with :func:`medrep.options.checked`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from monai.networks import nets
from torch import nn

from ..errors import RecipeError
from ..options import Fraction, PositiveFloat, PositiveInt, check_names, checked

BACKBONES: dict[str, Callable[..., Backbone]] = {}
SpatialDims = Literal[2, 3]


def register_backbone(name: str):
    """Register a builder ``(*, **options) -> Backbone`` whose every parameter is keyword-only with a typed default."""

    def wrap(fn):
        # an option passed by position would escape its recipe name; an untyped one would escape the checks
        loose = [p.name for p in inspect.signature(fn).parameters.values()
                 if p.kind is not p.KEYWORD_ONLY or p.default is p.empty or p.annotation is p.empty]
        if loose:
            raise TypeError(f"backbone {name!r}: every parameter must be keyword-only, typed and defaulted: {loose}")
        fn = checked("model.")(fn)
        BACKBONES[name] = fn
        return fn

    return wrap


#: ``(net, x) -> (pooled (B, out_dim), local (B, N, local_dim))`` in one pass through ``net``
LocalFeatures = Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class Backbone(nn.Module):
    """A network that returns one feature vector per input; ``config`` rebuilds it.

    ``local_features`` (when the network has a sub-region map) splits one forward pass into the
    pooled vector and the map flattened over space; ``local_dim`` is the map's channel count
    (None: no local features).
    """

    def __init__(self, net: nn.Module, out_dim: int, config: dict[str, Any], local_features: LocalFeatures | None = None):
        super().__init__()
        self.net = net
        self.out_dim = out_dim
        self.config = config
        self._local_features = local_features
        self.local_dim: int | None = out_dim if local_features is not None else None

    @property
    def spatial_dims(self) -> int:
        return int(self.config["spatial_dims"])

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"{self.config['name']} built for spatial_dims={self.spatial_dims} expects a "
                f"{self.spatial_dims + 2}-D batch (B, C, *spatial), got shape {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.net(x)

    def forward_with_local(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, out_dim)`` as :meth:`forward` and ``(B, N, local_dim)`` sub-region features, in one pass.

        ResNet: the last stage's map before global pooling, ``N = h*w`` (``h*w*d`` in 3D), in
        row-major order of the map; ViT: the patch tokens after the final norm ([CLS] excluded);
        DenseNet-121: the last (normalised, ReLU'd) feature map, as pooled by its head.
        """
        if self._local_features is None:
            raise RecipeError(f"{self.config['name']} has no sub-region features; use a resnet, vit or densenet121", "model.name")
        self._check(x)
        return self._local_features(self.net, x)

    def local(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, local_dim)`` sub-region features (see :meth:`forward_with_local`)."""
        return self.forward_with_local(x)[1]


def _flat(fmap: torch.Tensor) -> torch.Tensor:
    """``(B, C, *spatial)`` -> ``(B, N, C)``."""
    return fmap.flatten(2).transpose(1, 2)


def _resnet_local(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MONAI ``ResNet.forward`` (monai/networks/nets/resnet.py) split before its average pool."""
    x = net.act(net.bn1(net.conv1(x)))
    if not net.no_max_pool:
        x = net.maxpool(x)
    fmap = net.layer4(net.layer3(net.layer2(net.layer1(x))))
    return net.avgpool(fmap).flatten(1), _flat(fmap)


def _resnet(depth: int):
    def build(
        *,
        spatial_dims: SpatialDims = 2,
        in_channels: PositiveInt = 1,
        conv1_t_size: PositiveInt = 7,
        conv1_t_stride: PositiveInt = 2,
        no_max_pool: bool = False,
        widen_factor: PositiveFloat = 1.0,
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
        return Backbone(net, out_dim, config, _resnet_local)

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


def _vit_local(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] and patch tokens after the final norm. MONAI's ViT returns the normed [CLS] and the
    blocks' un-normed outputs; LayerNorm acts per token, so norming the last block's patch tokens
    gives exactly the patch tokens of the normed sequence, without a second pass."""
    cls, hidden = net.vit(x)
    return cls, net.vit.norm(hidden[-1][:, 1:])


@register_backbone("vit")
def vit(
    *,
    spatial_dims: SpatialDims = 2,
    in_channels: PositiveInt = 1,
    img_size: PositiveInt | Sequence[PositiveInt] = 224,
    patch_size: PositiveInt | Sequence[PositiveInt] = 16,
    hidden_size: PositiveInt = 384,
    mlp_dim: PositiveInt = 1536,
    num_layers: PositiveInt = 12,
    num_heads: PositiveInt = 6,
    dropout_rate: Fraction = 0.0,
) -> Backbone:
    """MONAI ViT with a [CLS] token; defaults are ViT-S/16. ``img_size`` must equal the input size."""
    net = nets.ViT(
        in_channels=in_channels, img_size=img_size, patch_size=patch_size, hidden_size=hidden_size, mlp_dim=mlp_dim,
        num_layers=num_layers, num_heads=num_heads, dropout_rate=dropout_rate, spatial_dims=spatial_dims,
        classification=True, num_classes=1, post_activation=None, qkv_bias=True,
    )
    for block in net.blocks:
        # MONAI builds this norm even without cross-attention and never calls it; frozen, DDP skips it
        # (otherwise every ViT run would need find_unused_parameters) and state-dict keys stay MONAI's
        block.norm_cross_attn.requires_grad_(False)
    config = dict(name="vit", spatial_dims=spatial_dims, in_channels=in_channels, img_size=img_size, patch_size=patch_size,
                  hidden_size=hidden_size, mlp_dim=mlp_dim, num_layers=num_layers, num_heads=num_heads, dropout_rate=dropout_rate)
    return Backbone(_ViTFeatures(net), hidden_size, config, _vit_local)


@register_backbone("densenet121")
def densenet121(*, spatial_dims: SpatialDims = 3, in_channels: PositiveInt = 1) -> Backbone:
    """MONAI DenseNet-121 with global pooling, 1024-d (ISImed's default encoder)."""
    net = nets.DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1)
    net.class_layers.out = nn.Identity()
    return Backbone(net, 1024, dict(name="densenet121", spatial_dims=spatial_dims, in_channels=in_channels), _densenet_local)


def _densenet_local(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MONAI ``DenseNet.forward`` split: the map after ``class_layers.relu`` (not in place), pooled by the head."""
    fmap = F.relu(net.features(x))
    head = net.class_layers
    return head.out(head.flatten(head.pool(fmap))), _flat(fmap)


def build_backbone(config: dict[str, Any]) -> Backbone:
    """Build from ``{"name": ..., **kwargs}``; unknown names or keys raise RecipeError on ``model.*``."""
    config = dict(config)
    name = config.pop("name", None)
    if name not in BACKBONES:
        raise RecipeError(f"unknown backbone {name!r}; available: {', '.join(sorted(BACKBONES))}", "model.name")
    check_names(BACKBONES[name], config, "model.", name)
    return BACKBONES[name](**config)
