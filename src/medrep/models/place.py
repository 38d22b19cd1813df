"""PLACE's network blocks (pathology-level image-report alignment, arXiv 2506.10573): the visual
pathology observation extractor, the report-conditioned correlation predictor and patch masking.

There is no public code; the layout is ours. Conventions shared with :mod:`medrep.losses.vlp_local`:
local tokens are ``(B, N, C)`` in :meth:`~medrep.models.backbones.Backbone.forward_with_local`'s
order (row-major over the feature map), reports are padded word sequences ``(B, W, T)`` with a bool
mask (True = real token, False = padding). Padding never changes an output: it is excluded from
every softmax by a ``key_padding_mask`` (its values must be finite, as any padding is). A row with
no real token at all (an empty report, a fully masked image) is not checked, which would cost a
device sync; it is handled instead: its cross-attention update is zero (no NaN from a softmax over
nothing) and its attention row is all zeros.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medrep.errors import MedrepError
from medrep.options import Fraction, PositiveInt, checked

__all__ = ["CorrelationPredictor", "ObservationExtractor", "mask_patches"]


def _positive(value: object, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MedrepError(f"{name} must be a positive integer, got {value!r}", where)
    return value


def _check_width(width: int, heads: int, where: str) -> None:
    if width % heads:
        raise MedrepError(f"heads must divide width = {width}, got heads = {heads}", where)


def _check_tokens(x: Tensor, name: str, dim: int, where: str, batch: int | None = None) -> None:
    if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[1] == 0 or x.shape[2] != dim or batch not in (None, x.shape[0]):
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise MedrepError(f"{name} must be a ({'B' if batch is None else batch}, N > 0, {dim}) tensor, got {got}", where)


def _check_mask(mask: Tensor, name: str, shape: tuple[int, int], where: str) -> None:
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != shape:
        got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
        raise MedrepError(f"{name} must be a bool tensor of shape {shape}, got {got}", where)


def _padding(valid: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
    """``key_padding_mask`` (True = ignore) and the rows with no valid key. An empty row attends to
    all its keys (a finite softmax) and its result is then zeroed by :func:`_drop_empty`."""
    if valid is None:
        return None, None
    empty = ~valid.any(1)
    return ~valid & ~empty[:, None], empty


def _drop_empty(x: Tensor, empty: Tensor | None) -> Tensor:
    return x if empty is None else x.masked_fill(empty[:, None, None], 0.0)


class _MLP(nn.Sequential):
    """Pre-norm 4x MLP branch: LayerNorm, Linear, GELU, Linear (dropout after each linear)."""

    def __init__(self, width: int, dropout: float = 0.0):
        super().__init__(nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(4 * width, width), nn.Dropout(dropout))


class _ExtractorLayer(nn.Module):
    """Self-attention over the queries, cross-attention to the tokens, MLP; pre-norm residuals.

    Attention dropout is 0 and dropout acts on the residual branches instead: ``nn.MultiheadAttention``
    returns its weights *after* dropout, and the returned map must stay a distribution.
    """

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.norm_self, self.norm_cross = nn.LayerNorm(width), nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.mlp = _MLP(width, dropout)

    def forward(self, q: Tensor, kv: Tensor, pad: Tensor | None, empty: Tensor | None,
                need_weights: bool) -> tuple[Tensor, Tensor | None]:
        h = self.norm_self(q)
        q = q + self.drop(self.self_attn(h, h, h, need_weights=False)[0])
        out, attn = self.cross_attn(self.norm_cross(q), kv, kv, key_padding_mask=pad, need_weights=need_weights,
                                    average_attn_weights=True)
        q = q + self.drop(_drop_empty(out, empty))
        return q + self.mlp(q), None if attn is None else _drop_empty(attn, empty)


class ObservationExtractor(nn.Module):
    """Visual pathology observation extractor: ``queries`` learned embeddings read the local tokens.

    A query decoder (DETR / Q-Former style): the tokens are projected once (Linear ``local_dim ->
    width`` then LayerNorm, so every layer reads keys on one scale whatever the backbone), then
    ``layers`` pre-norm layers of query self-attention (queries share out what each has found),
    cross-attention to the tokens and a 4x MLP; a final LayerNorm, since a pre-norm stack leaves its
    residual stream un-normalised. Queries start as N(0, 0.02^2), distinct so that they can
    specialise.

    ``forward`` returns the observations ``(B, queries, width)`` and the last layer's
    cross-attention averaged over heads ``(B, queries, N)``: where each observation looked, each
    row a distribution over the valid tokens (exact zeros on masked ones).
    """

    @checked("ObservationExtractor.")
    def __init__(self, local_dim: int, *, width: PositiveInt = 256, queries: PositiveInt = 16, layers: PositiveInt = 2,
                 heads: PositiveInt = 8, dropout: Fraction = 0.0):
        super().__init__()
        self.local_dim = _positive(local_dim, "local_dim", "ObservationExtractor")
        _check_width(width, heads, "ObservationExtractor")
        self.width = width
        self.queries = nn.Parameter(torch.randn(queries, width) * 0.02)
        self.proj = nn.Sequential(nn.Linear(local_dim, width), nn.LayerNorm(width))
        self.layers = nn.ModuleList(_ExtractorLayer(width, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)

    def forward(self, tokens: Tensor, token_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``tokens`` ``(B, N, local_dim)``, ``token_mask`` ``(B, N)`` bool (True = use) or None (all)."""
        _check_tokens(tokens, "tokens", self.local_dim, "ObservationExtractor")
        if token_mask is not None:
            _check_mask(token_mask, "token_mask", tuple(tokens.shape[:2]), "ObservationExtractor")
        kv = self.proj(tokens)
        pad, empty = _padding(token_mask)
        q = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        for i, layer in enumerate(self.layers):
            q, attn = layer(q, kv, pad, empty, need_weights=i == len(self.layers) - 1)
        return self.norm(q), attn


class _CorrelationLayer(nn.Module):
    """Image tokens cross-attend to the report's words, then a 4x MLP; pre-norm residuals."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = _MLP(width)

    def forward(self, x: Tensor, words: Tensor, pad: Tensor, empty: Tensor) -> Tensor:
        out = self.cross_attn(self.norm(x), words, words, key_padding_mask=pad, need_weights=False)[0]
        x = x + _drop_empty(out, empty)
        return x + self.mlp(x)


class CorrelationPredictor(nn.Module):
    """Report-conditioned correlation proxy: from a masked view's tokens and the report, predict how
    every pair of local tokens correlates, ``(B, N, N)``.

    Tokens are projected ``local_dim -> width``, words ``text_dim -> width`` then LayerNorm (the
    keys, as in :class:`ObservationExtractor`); ``layers`` pre-norm layers of cross-attention to the
    words and a 4x MLP; then LayerNorm and a Linear give one vector per token, and the prediction is
    their cosine Gram: symmetric, in [-1, 1], unit diagonal (zero for a zero vector), so it can be
    regressed onto a cosine Gram of the unmasked view's features. Tokens do not attend to each
    other: a pair's correlation is read from the two tokens and the report alone, so the report has
    to carry what the mask removed. An empty report (no True in ``word_mask``) conditions nothing:
    its tokens get no cross-attention update.
    """

    @checked("CorrelationPredictor.")
    def __init__(self, local_dim: int, text_dim: int, *, width: PositiveInt = 256, heads: PositiveInt = 8,
                 layers: PositiveInt = 1):
        super().__init__()
        self.local_dim = _positive(local_dim, "local_dim", "CorrelationPredictor")
        self.text_dim = _positive(text_dim, "text_dim", "CorrelationPredictor")
        _check_width(width, heads, "CorrelationPredictor")
        self.proj = nn.Linear(local_dim, width)
        self.text_proj = nn.Sequential(nn.Linear(text_dim, width), nn.LayerNorm(width))
        self.layers = nn.ModuleList(_CorrelationLayer(width, heads) for _ in range(layers))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width))

    def forward(self, tokens: Tensor, words: Tensor, word_mask: Tensor) -> Tensor:
        """``tokens`` ``(B, N, local_dim)``, ``words`` ``(B, W, text_dim)``, ``word_mask`` ``(B, W)``
        bool (True = word) -> predicted correlation ``(B, N, N)``."""
        _check_tokens(tokens, "tokens", self.local_dim, "CorrelationPredictor")
        _check_tokens(words, "words", self.text_dim, "CorrelationPredictor", batch=tokens.shape[0])
        _check_mask(word_mask, "word_mask", tuple(words.shape[:2]), "CorrelationPredictor")
        x, kv = self.proj(tokens), self.text_proj(words)
        pad, empty = _padding(word_mask)
        for layer in self.layers:
            x = layer(x, kv, pad, empty)
        v = F.normalize(self.out(x), dim=-1)
        return v @ v.transpose(1, 2)


def mask_patches(images: Tensor, grid: Sequence[int], ratio: float,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Zero a random ``ratio`` of the ``grid`` cells of each image: ``(masked images, kept (B, cells) bool)``.

    ``grid`` should be the encoder's local feature map (``img_size / patch_size`` for a ViT, the last
    stage's map for a ResNet), so that cell ``k`` is local token ``k``: ``kept`` is flattened
    row-major over the spatial axes, as ``Backbone.forward_with_local``. A ViT patch sees exactly its
    cell; a ResNet token's receptive field spills over its neighbours. Each image loses exactly
    ``round(ratio * cells)`` cells (Python's round, half to even), at most ``cells - 1``: one always
    stays, so a masked view is never empty. Masked voxels become 0, black on our [0, 1] intensity
    scale (CT below its window, MR/X-ray background); kept voxels are untouched (``torch.where``, so
    a NaN in a masked cell does not leak). Cells are drawn from ``generator`` (on its own device)
    or torch's global RNG.
    """
    if not isinstance(images, Tensor) or images.ndim not in (4, 5):
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise MedrepError(f"images must be a (B, C, H, W) or (B, C, D, H, W) tensor, got {got}", "mask_patches")
    spatial = tuple(images.shape[2:])
    grid = tuple(grid) if isinstance(grid, Sequence) else grid
    if (not isinstance(grid, tuple) or len(grid) != len(spatial)
            or any(isinstance(g, bool) or not isinstance(g, int) or g < 1 for g in grid)):
        raise MedrepError(f"grid must be {len(spatial)} positive integers (one per spatial axis), got {grid!r}", "mask_patches")
    if any(s % g for s, g in zip(spatial, grid)):
        raise MedrepError(f"grid {grid} must divide the spatial size {spatial}", "mask_patches")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
        raise MedrepError(f"ratio must be a number in [0, 1], got {ratio!r}", "mask_patches")
    b, cells = images.shape[0], math.prod(grid)
    n_masked = min(round(ratio * cells), cells - 1)
    device = images.device if generator is None else generator.device
    order = torch.rand((b, cells), generator=generator, device=device).argsort(1).to(images.device)
    kept = torch.ones((b, cells), dtype=torch.bool, device=images.device)
    kept.scatter_(1, order[:, :n_masked], False)
    # (B, 1, g1, 1, g2, 1, ...) broadcast over (B, C, g1, s1, g2, s2, ...), read back as (B, C, *spatial)
    size = [s // g for s, g in zip(spatial, grid)]
    cell_view = [b, 1] + [n for g, s in zip(grid, size) for n in (g, 1)]
    blocks = images.reshape(b, images.shape[1], *[n for g, s in zip(grid, size) for n in (g, s)])
    masked = torch.where(kept.view(cell_view), blocks, blocks.new_zeros(()))
    return masked.reshape(images.shape), kept
