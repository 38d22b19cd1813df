"""BYOL's regression loss (Grill et al. 2020): normalised MSE between prediction and target.

It is per-sample, so it needs no cross-process gather: under DDP each rank's mean over its
local pairs, averaged by DDP, is the mean over the global batch.

``cos`` is taken as ``<p, z> / (max(|p|, eps) max(|z|, eps))``, the same value as the dot product of
``F.normalize``'d rows (eps 1e-12), without materialising the two normalised copies: on a large
batch the loss is bound by allocating and passing over ``(n, d)`` tensors, forward and backward
(``benchmarks/loss_speed.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from medrep.losses.ntxent import _autocast_off, _check_pair, _compute_dtype

__all__ = ["byol_loss"]


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """Mean over the batch of ``||p_i/|p_i| - z_i/|z_i| ||^2 = 2 - 2 cos(p_i, z_i)``.

    ``p`` is the online network's prediction, ``z`` the target network's projection of the
    other view, both ``(n, d)``. The target is not detached here (the function stays pure):
    BYOL computes it under ``torch.no_grad``. BYOL's symmetrised loss is
    ``byol_loss(p1, z2) + byol_loss(p2, z1)``. Computed in float32 (float64 for float64
    inputs) with autocast disabled.
    """
    _check_pair(p, z, ("p", "z"), "byol_loss")
    with _autocast_off(p):
        dtype = _compute_dtype(p, z)
        p, z = p.to(dtype), z.to(dtype)
        cos = torch.linalg.vecdot(p, z, dim=1) / (_norm(p) * _norm(z))
        return 2 - 2 * cos.mean()


def _norm(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Row norms clamped as ``F.normalize`` clamps them."""
    return torch.linalg.vector_norm(x, dim=1).clamp_min(eps)
