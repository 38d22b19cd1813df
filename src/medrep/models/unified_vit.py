"""One ViT for 2D images and 3D volumes (UniMedI's shared vision encoder), registered as ``vit2d3d``.

Two tokenizers (MONAI ``PatchEmbed`` convolutions) feed one stack of MONAI ``TransformerBlock``:

- 2D: ``(B, C, X, Y)`` -> patches ``patch_size`` (in-plane);
- 3D: ``(B, C, X, Y, Z)`` -> patches ``patch_size x patch_depth``; the last axis is the slice axis
  (axial for a RAS volume), so with ``patch_depth`` 1 a slice is one row of 3D tokens, and with
  ``patch_depth`` p a row is a slab of p slices.

Position embeddings are learnt and factorised, ``pos_x[i] + pos_y[j] (+ pos_z[k])``: the in-plane
tables are shared by both tokenizers, so a slice token and the volume token above the same spot
carry the same in-plane position, and a smaller image uses the first rows of each table (no
interpolation). A type embedding (row 0: 2D token, row 1: 3D token) tells the two kinds apart.
A slice taken from a volume and tokenised in 2D also gets ``pos_z`` of its slab, so the sequence
knows where in the volume it lies.

``forward`` returns the final-norm [CLS] of either input. For a volume it first runs the
attentive slice selection with its own attention (``select_k`` slices, 0: none) and encodes the
volume's tokens joined to the selected slices' 2D tokens, the sequence UniMedI trains on; the
method does the same with its EMA teacher's attention. ``spatial_dims`` (the config key the
evaluations read to load data) says which inputs the exported encoder's preprocessing was
written for; the network accepts both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.blocks import PatchEmbed, TransformerBlock
from torch import nn

from ..errors import DataError
from ..options import Fraction, NonNegativeInt, PositiveInt
from .backbones import Backbone, SpatialDims, register_backbone


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    values = (value, value) if isinstance(value, int) else tuple(value)
    if len(values) != 2:
        raise DataError(f"give one value or two (in-plane axes), got {list(values)}", f"model.{name}")
    return int(values[0]), int(values[1])


def check_slices(volumes: torch.Tensor, k: int, patch_depth: int, where: str) -> None:
    """A volume must hold at least ``k`` slabs to select ``k`` of them."""
    if k * patch_depth > volumes.shape[-1]:
        raise DataError(f"a volume of {volumes.shape[-1]} slices has {volumes.shape[-1] // patch_depth} slabs of {patch_depth}, "
                        f"fewer than the {k} slices to select", where)


class UnifiedViT(nn.Module):
    """The network behind :func:`vit2d3d`; see the module docstring."""

    def __init__(self, *, in_channels: int, img_size: tuple[int, int], depth: int, patch_size: tuple[int, int], patch_depth: int,
                 hidden_size: int, mlp_dim: int, num_layers: int, num_heads: int, dropout_rate: float, select_k: int):
        super().__init__()
        for axis, (size, patch) in enumerate(zip(img_size, patch_size)):
            if size % patch:
                raise DataError(f"img_size {size} on axis {axis} is not a multiple of patch_size {patch}", "model.img_size")
        if depth % patch_depth:
            raise DataError(f"depth {depth} is not a multiple of patch_depth {patch_depth}", "model.depth")
        if hidden_size % num_heads:
            raise DataError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}", "model.num_heads")
        self.patch_size, self.patch_depth, self.select_k = patch_size, patch_depth, select_k
        self.grid = (img_size[0] // patch_size[0], img_size[1] // patch_size[1], depth // patch_depth)
        self.embed2d = PatchEmbed(patch_size=patch_size, in_chans=in_channels, embed_dim=hidden_size, norm_layer=None, spatial_dims=2)
        self.embed3d = PatchEmbed(patch_size=(*patch_size, patch_depth), in_chans=in_channels, embed_dim=hidden_size,
                                  norm_layer=None, spatial_dims=3)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.pos_x = nn.Parameter(torch.zeros(self.grid[0], hidden_size))
        self.pos_y = nn.Parameter(torch.zeros(self.grid[1], hidden_size))
        self.pos_z = nn.Parameter(torch.zeros(self.grid[2], hidden_size))
        self.type_embed = nn.Parameter(torch.zeros(2, hidden_size))
        for p in (self.cls_token, self.pos_x, self.pos_y, self.pos_z, self.type_embed):
            nn.init.trunc_normal_(p, std=0.02)
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, mlp_dim, num_heads, dropout_rate, qkv_bias=True) for _ in range(num_layers))
        for block in self.blocks:
            block.norm_cross_attn.requires_grad_(False)  # built by MONAI, never called (as in backbones.vit)
        self.norm = nn.LayerNorm(hidden_size)

    # tokens ------------------------------------------------------------------------------------
    def _grid_of(self, shape: Sequence[int], where: str) -> tuple[int, ...]:
        """Token grid of a spatial shape; sizes that do not tile or exceed the position tables are refused."""
        patches = (*self.patch_size, self.patch_depth)[: len(shape)]
        grid = []
        for axis, (size, patch, most) in enumerate(zip(shape, patches, self.grid)):
            if size % patch or size // patch > most:
                raise DataError(f"{where} of shape {list(shape)}: axis {axis} size {size} must be a multiple of the patch "
                                f"({patch}) and at most {most * patch} (model.img_size / model.depth)", "data.size")
            grid.append(size // patch)
        return tuple(grid)

    def _plane_pos(self, gx: int, gy: int) -> torch.Tensor:
        return (self.pos_x[:gx, None] + self.pos_y[None, :gy]).reshape(gx * gy, -1)

    def tokens_2d(self, images: torch.Tensor, slab: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C, X, Y)`` -> ``(B, gx*gy, H)`` with position and type; ``slab`` ``(B,)``: the
        volume slab each image was cut from (adds ``pos_z``)."""
        gx, gy = self._grid_of(images.shape[2:], "a 2D image")
        tok = self.embed2d(images).flatten(2).transpose(1, 2) + self._plane_pos(gx, gy) + self.type_embed[0]
        if slab is not None:
            tok = tok + self.pos_z[slab][:, None]
        return tok

    def tokens_3d(self, volumes: torch.Tensor) -> torch.Tensor:
        """``(B, C, X, Y, Z)`` -> ``(B, gx*gy*gz, H)``, token ``(i, j, k)`` at ``(i*gy + j)*gz + k``."""
        gx, gy, gz = self._grid_of(volumes.shape[2:], "a 3D volume")
        pos = (self._plane_pos(gx, gy)[:, None] + self.pos_z[None, :gz]).reshape(gx * gy * gz, -1)
        return self.embed3d(volumes).flatten(2).transpose(1, 2) + pos + self.type_embed[1]

    def slice_tokens(self, volumes: torch.Tensor, slabs: torch.Tensor) -> torch.Tensor:
        """The 2D tokens of the slices at the centre of slabs ``slabs`` ``(B, k)`` -> ``(B, k*gx*gy, H)``."""
        b, k = slabs.shape
        centre = slabs * self.patch_depth + self.patch_depth // 2
        index = centre[:, None, None, None, :].expand(-1, volumes.shape[1], *volumes.shape[2:4], -1)
        cut = volumes.gather(-1, index).permute(0, 4, 1, 2, 3).reshape(b * k, *volumes.shape[1:4])
        tok = self.tokens_2d(cut, slabs.reshape(-1))
        return tok.reshape(b, -1, tok.shape[-1])

    # encoding ----------------------------------------------------------------------------------
    def encode(self, tokens: torch.Tensor, keep_attention: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """[CLS] + ``tokens`` through the blocks and the final norm -> ``(B, 1+N, H)``; with
        ``keep_attention`` also each block's [CLS]-to-token attention ``(B, heads, N)``."""
        x = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        maps = []
        for block in self.blocks:
            block.attn.save_attn = keep_attention  # MONAI keeps the detached softmax when asked
            x = block(x)
            if keep_attention:
                maps.append(block.attn.att_mat[:, :, 0, 1:])
        return self.norm(x), maps

    def slice_scores(self, volumes: torch.Tensor) -> torch.Tensor:
        """UniMedI's slice scores ``(B, gz)``: [CLS]-to-patch attention over the volume's 3D tokens,
        averaged over heads and layers, then over the tokens of each slab. No gradient."""
        with torch.no_grad():
            _, maps = self.encode(self.tokens_3d(volumes), keep_attention=True)
            attention = torch.stack(maps).mean(dim=(0, 2))  # (B, N)
            gz = self._grid_of(volumes.shape[2:], "a 3D volume")[2]
            return attention.reshape(len(volumes), -1, gz).mean(1)

    def select(self, volumes: torch.Tensor, k: int, scores: torch.Tensor | None = None, where: str = "model.select_k") -> torch.Tensor:
        """The ``k`` best-scored slabs ``(B, k)``, in slice order; refused when a volume has fewer."""
        check_slices(volumes, k, self.patch_depth, where)
        scores = self.slice_scores(volumes) if scores is None else scores
        return scores.topk(k, dim=1).indices.sort(dim=1).values

    def sequence(self, x: torch.Tensor, slabs: torch.Tensor | None = None) -> torch.Tensor:
        """The tokens UniMedI encodes: a 2D image's tokens, or a volume's 3D tokens followed by the 2D
        tokens of slabs ``slabs`` (none: the volume alone)."""
        if x.ndim == 4:
            return self.tokens_2d(x)
        tok = self.tokens_3d(x)
        return tok if slabs is None or slabs.shape[1] == 0 else torch.cat([tok, self.slice_tokens(x, slabs)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slabs = self.select(x, self.select_k) if x.ndim == 5 and self.select_k else None
        return self.encode(self.sequence(x, slabs))[0][:, 0]


def _local(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] and the image's own patch tokens (a volume's 3D tokens; selected slices left out)."""
    slabs = net.select(x, net.select_k) if x.ndim == 5 and net.select_k else None
    out = net.encode(net.sequence(x, slabs))[0]
    n = math.prod(net._grid_of(x.shape[2:], "an input"))
    return out[:, 0], out[:, 1 : 1 + n]


class UnifiedBackbone(Backbone):
    """A :class:`Backbone` that takes ``(B, C, X, Y)`` images and ``(B, C, X, Y, Z)`` volumes."""

    supported_dims = (2, 3)
    flexible_size = True  # any size up to img_size x depth that tiles the patches (checked on every input)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim not in (4, 5):
            raise ValueError(f"vit2d3d expects a (B, C, X, Y) or (B, C, X, Y, Z) batch, got shape {tuple(x.shape)}")


@register_backbone("vit2d3d")
def vit2d3d(
    *,
    spatial_dims: SpatialDims = 3,
    in_channels: PositiveInt = 1,
    img_size: PositiveInt | Sequence[PositiveInt] = 224,
    depth: PositiveInt = 64,
    patch_size: PositiveInt | Sequence[PositiveInt] = 16,
    patch_depth: PositiveInt = 1,
    hidden_size: PositiveInt = 384,
    mlp_dim: PositiveInt = 1536,
    num_layers: PositiveInt = 12,
    num_heads: PositiveInt = 6,
    dropout_rate: Fraction = 0.0,
    select_k: NonNegativeInt = 4,
) -> Backbone:
    """UniMedI's shared ViT (defaults ViT-S/16; ViT-B: hidden 768, mlp 3072, heads 12). ``img_size``:
    the largest in-plane size, ``depth``: the most slices of a volume; ``select_k``: slices a volume
    adds to its own sequence in ``forward`` (UniMedI: 4)."""
    net = UnifiedViT(in_channels=in_channels, img_size=_pair(img_size, "img_size"), depth=depth,
                     patch_size=_pair(patch_size, "patch_size"), patch_depth=patch_depth, hidden_size=hidden_size,
                     mlp_dim=mlp_dim, num_layers=num_layers, num_heads=num_heads, dropout_rate=dropout_rate, select_k=select_k)
    config = dict(name="vit2d3d", spatial_dims=spatial_dims, in_channels=in_channels,
                  img_size=list(img_size) if not isinstance(img_size, int) else img_size, depth=depth,
                  patch_size=list(patch_size) if not isinstance(patch_size, int) else patch_size, patch_depth=patch_depth,
                  hidden_size=hidden_size, mlp_dim=mlp_dim, num_layers=num_layers, num_heads=num_heads,
                  dropout_rate=dropout_rate, select_k=select_k)
    return UnifiedBackbone(net, hidden_size, config, _local)
