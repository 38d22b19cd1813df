"""BYOL's regression loss (Grill et al. 2020): normalised MSE between prediction and target.

It is per-sample, so it needs no cross-process gather: under DDP each rank's mean over its
local pairs, averaged by DDP, is the mean over the global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from medrep.losses.ntxent import _check_pair, _compute_dtype

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
    with torch.autocast(device_type=p.device.type, enabled=False):
        dtype = _compute_dtype(p, z)
        cos = (F.normalize(p.to(dtype), dim=1) * F.normalize(z.to(dtype), dim=1)).sum(dim=1)
        return (2 - 2 * cos).mean()
