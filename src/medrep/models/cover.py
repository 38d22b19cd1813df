"""COVER's heads: the vector embedding unit, multi-vector integration and the vector pyramid.

All displacement fields follow :mod:`medrep.transforms.displacement`: ``(B, n, *spatial)`` in
voxels, channel ``k`` along tensor axis ``k``, ``warp(x, flow)(p) = x(p + flow(p))``. View ``b`` is
the fixed view (the warped one in COVER), view ``a`` the moving one; the predicted flow maps a
position of view ``b`` to where it is found in view ``a``, like the ground truth ``psi``.

Matched to the official code (YutingHe-list/COVER, ``models/cover.py`` at b06720c):

- vector embedding unit = ``MoV.forward_self`` (l. 47-82): logits ``q . k / sqrt(head_dim)``
  (``self.scale = head_dim ** -0.5``, l. 33, applied to ``q``, l. 58), neighbours outside the
  image set to ``-1000`` (l. 69, not ``-inf``, so a softmax row is never empty), softmax over the
  ``(2 amp + 1)^2`` offsets, and the expected offset under it (l. 74-78), channel order = tensor
  axis order (``meshgrid`` ``ij`` indexing, l. 37-39). Averaged over heads (l. 80).
- projection = ``ProjectionLayer`` (l. 10-23): a 1x1 conv then ``GroupNorm(1, dim)`` (l. 13), one
  module applied to both views (l. 121), to the raw features *after* the moving ones are warped
  (l. 126).
- pyramid = ``COVER.VPA`` (l. 117-149).

Deliberate differences, each documented where it happens:

- heads take contiguous channel blocks; the official ``reshape(B, C // J, J, H, W)`` (l. 55)
  interleaves them (head ``h`` gets channels ``h, h + J, ...``). After a learned 1x1 conv and a
  one-group GroupNorm this is only a permutation of parameters.
- the pyramid composes each residual at its own level, then upsamples the total at the start of
  the next; the official code upsamples each residual right after predicting it and composes at
  the next finer size (l. 122-142). Same rule ``flow = warp(up, w) + w``; interpolation order
  differs, and the per-level flows live on their own levels' grids.
- rescaling between levels uses ``(size_l - 1) / (size_{l-1} - 1)``, exact for
  ``align_corners=True`` interpolation, where the official code multiplies by 2 (l. 122, 130).
- ``warp`` uses ``align_corners=True``: the official ``SpatialTransformer`` normalises by
  ``size - 1`` but calls ``grid_sample`` with the default ``align_corners=False``, which shifts
  every sample by half a voxel; ours matches its own normalisation.
- 2D and 3D; the official unit is 2D only (``makeV`` reshapes to 2 components, l. 43).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from medrep.errors import MedrepError, RecipeError
from medrep.transforms.displacement import warp

__all__ = ["OUTSIDE_LOGIT", "MultiVectorHead", "VectorPyramid", "compose", "upsample_flow", "vector_embedding"]

OUTSIDE_LOGIT = -1000.0


def _offsets(n: int, radius: int) -> list[tuple[int, ...]]:
    return list(itertools.product(range(-radius, radius + 1), repeat=n))


def _shifted(kp: Tensor, offset: tuple[int, ...], radius: int, spatial: Sequence[int]) -> tuple[slice, ...]:
    """Index into the padded ``kp`` that reads ``k(p + offset)`` at every ``p`` (a view, no copy)."""
    return (slice(None), slice(None)) + tuple(slice(radius + o, radius + o + s) for o, s in zip(offset, spatial))


def _logits(qs: Tensor, kp: Tensor, offset: tuple[int, ...], radius: int) -> Tensor:
    """``qs(p) . k(p + offset)`` ``(B, 1, *spatial)``, with ``OUTSIDE_LOGIT`` where ``p + offset``
    leaves the grid (the official code overwrites those logits rather than masking them)."""
    spatial = qs.shape[2:]
    s = (qs * kp[_shifted(kp, offset, radius, spatial)]).sum(1, keepdim=True)
    for axis, (o, size) in enumerate(zip(offset, spatial)):
        if o:
            index = [slice(None)] * s.ndim
            index[2 + axis] = slice(size - o, None) if o > 0 else slice(None, -o)
            s[tuple(index)] = OUTSIDE_LOGIT
    return s


def _dot_offset(field: Tensor, offset: tuple[int, ...]) -> Tensor:
    """``field(p) . offset`` ``(B, 1, *spatial)`` for a vector field ``(B, n, *spatial)``."""
    out = torch.zeros_like(field[:, :1])
    for axis, o in enumerate(offset):
        if o:
            out.add_(field[:, axis : axis + 1], alpha=float(o))
    return out


class _VectorEmbedding(torch.autograd.Function):
    """Streaming softmax over the offsets (the running max / sum / weighted-offset sum of
    FlashAttention), and a backward that recomputes each offset's logits from ``q`` and ``k``
    instead of saving them: memory stays ``O(B * C * voxels)`` whatever the neighbourhood size
    (343 offsets in 3D at N = 7 would otherwise keep 343 logit maps and their softmax)."""

    @staticmethod
    def forward(ctx, qs: Tensor, k: Tensor, radius: int) -> Tensor:
        n = qs.ndim - 2
        kp = F.pad(k, (radius, radius) * n)
        run_max = torch.full_like(qs[:, :1], -math.inf)
        run_sum = torch.zeros_like(run_max)
        run_vec = torch.zeros((qs.shape[0], n, *qs.shape[2:]), dtype=qs.dtype, device=qs.device)
        for offset in _offsets(n, radius):
            s = _logits(qs, kp, offset, radius)
            new_max = torch.maximum(run_max, s)
            decay = torch.exp(run_max - new_max)
            weight = torch.exp(s - new_max)
            run_sum.mul_(decay).add_(weight)
            run_vec.mul_(decay)
            for axis, o in enumerate(offset):
                if o:
                    run_vec[:, axis : axis + 1].add_(weight, alpha=float(o))
            run_max = new_max
        flow = run_vec / run_sum
        ctx.radius = radius
        ctx.save_for_backward(qs, k, flow, run_max + torch.log(run_sum))
        return flow

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_flow: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        """``d flow / d s_o = P_o (o - flow)``, so ``dL/ds_o = P_o (g . o - g . flow)``; then
        ``ds_o/dq(p) = k(p + o)`` and ``ds_o/dk(p + o) = q(p)``. Outside neighbours read the zero
        padding of ``k`` and write into it, so their constant logit sends nothing back."""
        qs, k, flow, lse = ctx.saved_tensors
        radius = ctx.radius
        n = qs.ndim - 2
        spatial = qs.shape[2:]
        grad_flow = grad_flow.to(qs.dtype)
        g_dot_flow = (grad_flow * flow).sum(1, keepdim=True)
        kp = F.pad(k, (radius, radius) * n)
        grad_q = torch.zeros_like(qs) if ctx.needs_input_grad[0] else None
        grad_kp = torch.zeros_like(kp) if ctx.needs_input_grad[1] else None
        for offset in _offsets(n, radius):
            index = _shifted(kp, offset, radius, spatial)
            p = torch.exp(_logits(qs, kp, offset, radius) - lse)
            ds = p * (_dot_offset(grad_flow, offset) - g_dot_flow)
            if grad_q is not None:
                grad_q.addcmul_(ds, kp[index])
            if grad_kp is not None:
                grad_kp[index].addcmul_(ds, qs)
        grad_k = None if grad_kp is None else grad_kp[_shifted(kp, (0,) * n, radius, spatial)]
        return grad_q, grad_k, None


def vector_embedding(q: Tensor, k: Tensor, radius: int, tau: float | None = None) -> Tensor:
    """COVER's vector embedding unit: the expected displacement ``(B, n, *spatial)`` in voxels.

    ``q`` ``(B, C, *spatial)`` holds the fixed view's features (view ``b``), ``k`` the moving
    view's on the same grid. At each ``p``: ``sum_o softmax_o(q(p) . k(p + o) / tau) * o`` over
    offsets ``o`` in ``{-radius..radius}^n``, ``tau = sqrt(C)`` by default; a neighbour
    ``p + o`` outside the grid gets logit ``-1000`` (as the official code). Gradients reach both
    ``q`` and ``k`` (first order only). Computed in float32 (float64 for float64 inputs) with
    autocast off; peak extra memory is a few ``(B, C, *spatial)`` maps, not one per offset.
    """
    if q.ndim not in (4, 5) or q.shape != k.shape:
        raise MedrepError(f"q and k must be equal (B, C, H, W) or (B, C, D, H, W) tensors, got {tuple(q.shape)} and "
                          f"{tuple(k.shape)}", "vector_embedding")
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 1:
        raise MedrepError(f"radius must be a positive integer, got {radius!r}", "vector_embedding")
    tau = math.sqrt(q.shape[1]) if tau is None else float(tau)
    if not (math.isfinite(tau) and tau > 0):
        raise MedrepError(f"tau must be a positive number, got {tau!r}", "vector_embedding")
    with torch.autocast(device_type=q.device.type, enabled=False):
        dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        return _VectorEmbedding.apply(q.to(dtype) / tau, k.to(dtype), radius)


def _conv(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]


class MultiVectorHead(nn.Module):
    """Multi-vector integration: one shared 1x1 projection + GroupNorm for both views, ``heads``
    vector embeddings of ``head_dim`` channels each (``tau = sqrt(head_dim)``), averaged.

    ``groups`` is the GroupNorm's group count; ``None`` = 1, the official ``GroupNorm(1, dim)``.
    Heads take contiguous channel blocks (the official code interleaves them: the same model up
    to a permutation of the projection's output channels).
    """

    def __init__(self, spatial_dims: int, in_channels: int, heads: int, head_dim: int = 8, radius: int = 3,
                 groups: int | None = None):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise MedrepError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}", "MultiVectorHead")
        for name, value in (("in_channels", in_channels), ("heads", heads), ("head_dim", head_dim), ("radius", radius)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MedrepError(f"{name} must be a positive integer, got {value!r}", "MultiVectorHead")
        dim = heads * head_dim
        groups = 1 if groups is None else groups
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or dim % groups:
            raise MedrepError(f"groups must be a positive divisor of heads * head_dim = {dim}, got {groups!r}", "MultiVectorHead")
        self.spatial_dims, self.heads, self.head_dim, self.radius = spatial_dims, heads, head_dim, radius
        self.proj = _conv(spatial_dims)(in_channels, dim, 1)
        self.norm = nn.GroupNorm(groups, dim)

    def project(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x))

    def forward(self, feats_b: Tensor, feats_a: Tensor) -> Tensor:
        """Flow ``(B, n, *spatial)`` from view ``b``'s positions into view ``a`` (same grid)."""
        if feats_b.shape != feats_a.shape:
            raise MedrepError(f"both views need the same shape, got {tuple(feats_b.shape)} and {tuple(feats_a.shape)}",
                              "MultiVectorHead")
        q, k = self.project(feats_b), self.project(feats_a)
        b, spatial = q.shape[0], q.shape[2:]
        per_head = (b * self.heads, self.head_dim, *spatial)
        flow = vector_embedding(q.reshape(per_head), k.reshape(per_head), self.radius, tau=math.sqrt(self.head_dim))
        return flow.view(b, self.heads, self.spatial_dims, *spatial).mean(1)


def upsample_flow(flow: Tensor, size: Sequence[int]) -> Tensor:
    """``flow`` resampled to ``size`` ((bi/tri)linear, ``align_corners=True``) and rescaled into
    the finer grid's voxels: axis ``k`` by ``(size_k - 1) / (old_k - 1)``, exact for corner-aligned
    grids (the official code's factor 2 is only approximately right)."""
    old = flow.shape[2:]
    size = tuple(int(s) for s in size)
    if tuple(old) == size:
        return flow
    mode = "bilinear" if flow.ndim == 4 else "trilinear"
    up = F.interpolate(flow, size=size, mode=mode, align_corners=True)
    ratio = torch.tensor([(s - 1) / max(o - 1, 1) for s, o in zip(size, old)], dtype=up.dtype, device=up.device)
    return up * ratio.view(1, -1, *([1] * len(size)))


def compose(up: Tensor, w: Tensor) -> Tensor:
    """The displacement of "first ``w``, then ``up``": ``w(p) + up(p + w(p))``, as the official
    ``stn(flow, w) + w`` (zeros where ``p + w(p)`` leaves the grid, as its ``grid_sample``)."""
    return warp(up, w) + w


class VectorPyramid(nn.Module):
    """Vector pyramid aggregation over five feature levels, coarse to fine.

    Level 0: ``flow = head_0(fb_0, fa_0)``. Level ``l > 0``: ``up`` = the flow upsampled to level
    ``l`` (:func:`upsample_flow`), ``w = head_l(fb_l, warp(fa_l, up))`` the residual, and
    ``flow = warp(up, w) + w`` (:func:`compose`). ``neighbourhood`` = N of the N^n offset window
    (official ``amp = 2``, N = 5; the paper's note found 7 best, our default).
    """

    def __init__(self, spatial_dims: int, level_channels: Sequence[int] = (512, 256, 128, 64, 32),
                 heads: Sequence[int] = (4, 4, 4, 1, 1), head_dim: int = 8, neighbourhood: int = 7):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise RecipeError(f"must be 2 or 3, got {spatial_dims!r}", "model.spatial_dims")
        if isinstance(neighbourhood, bool) or not isinstance(neighbourhood, int) or neighbourhood < 3 or neighbourhood % 2 == 0:
            raise RecipeError(f"must be an odd integer >= 3, got {neighbourhood!r}", "method.neighbourhood")
        heads, level_channels = list(heads), list(level_channels)
        if len(heads) != 5 or len(level_channels) != 5:
            raise RecipeError(f"needs 5 head counts for 5 feature levels, got {len(heads)} heads and "
                              f"{len(level_channels)} levels", "method.heads")
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in heads):
            raise RecipeError(f"head counts must be positive integers, got {heads!r}", "method.heads")
        if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 1:
            raise RecipeError(f"must be a positive integer, got {head_dim!r}", "method.head_dim")
        self.spatial_dims = spatial_dims
        radius = (neighbourhood - 1) // 2
        self.heads = nn.ModuleList(
            MultiVectorHead(spatial_dims, c, h, head_dim=head_dim, radius=radius) for c, h in zip(level_channels, heads)
        )

    def forward(self, feats_b: Sequence[Tensor], feats_a: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Full-resolution flow ``(B, n, *spatial)`` of the finest level, and the composed flow of
        every level (coarse to fine; the last is the first output), for per-level supervision."""
        if len(feats_b) != len(self.heads) or len(feats_a) != len(self.heads):
            raise MedrepError(f"expected {len(self.heads)} feature levels per view, got {len(feats_b)} and {len(feats_a)}",
                              "VectorPyramid")
        flow = self.heads[0](feats_b[0], feats_a[0])
        flows = [flow]
        for head, fb, fa in zip(self.heads[1:], feats_b[1:], feats_a[1:]):
            up = upsample_flow(flow, fb.shape[2:])
            w = head(fb, warp(fa, up))
            flow = compose(up, w)
            flows.append(flow)
        return flow, flows
