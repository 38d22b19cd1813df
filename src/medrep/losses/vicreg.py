"""VICReg's loss (Bardes et al. 2022): invariance, variance and covariance terms.

Invariance is a per-pair MSE, so each rank takes it over its local pairs (DDP's average of
equal-size local means is the global mean). Variance and covariance are statistics of the
global batch: every rank gathers all embeddings with gradients and computes the same global
terms; by the argument in :mod:`medrep.losses.barlow` (the gather's backward sums ``W``
identical contributions, DDP divides by ``W``) the parameter gradients then equal those of
one process on the concatenated batch, with no rescaling. The per-rank ``loss`` values
differ only in the invariance term, and their mean is the global loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from medrep.errors import MedrepError
from medrep.losses import distributed
from medrep.losses.barlow import off_diagonal
from medrep.losses.ntxent import _check_pair, _compute_dtype

__all__ = ["vicreg_loss"]


def _variance(z: Tensor, eps: float) -> Tensor:
    """Mean over dimensions of ``relu(1 - sqrt(var + eps))`` (unbiased variance, as the paper)."""
    return F.relu(1 - torch.sqrt(z.var(dim=0) + eps)).mean()


def _covariance(z: Tensor) -> Tensor:
    """Sum of squared off-diagonal covariances divided by the dimension ``d``."""
    z = z - z.mean(dim=0)
    cov = z.T @ z / (z.shape[0] - 1)
    return off_diagonal(cov).pow(2).sum() / z.shape[1]


def vicreg_loss(
    z1: Tensor,
    z2: Tensor,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
    gather: bool = True,
    eps: float = 1e-4,
) -> dict[str, Tensor]:
    """VICReg on two views ``(n, d)``; returns ``loss`` and the unweighted terms.

    ``invariance`` = MSE between the views (local pairs); ``variance`` = the hinge
    ``relu(1 - std)`` averaged over dimensions and the two views; ``covariance`` = the sum of
    squared off-diagonal covariances over ``d``, summed over the two views, as the paper.
    ``loss = sim_weight * invariance + var_weight * variance + cov_weight * covariance``.
    Computed in float32 (float64 for float64 inputs) with autocast disabled.
    """
    _check_pair(z1, z2, ("z1", "z2"), "vicreg_loss")
    for key, value in (("sim_weight", sim_weight), ("var_weight", var_weight), ("cov_weight", cov_weight)):
        if not (isinstance(value, (int, float)) and math.isfinite(value)) or value < 0:
            raise MedrepError(f"{key} must be a finite number >= 0, got {value!r}", "vicreg_loss")
    with torch.autocast(device_type=z1.device.type, enabled=False):
        dtype = _compute_dtype(z1, z2)
        z1, z2 = z1.to(dtype), z2.to(dtype)
        invariance = F.mse_loss(z1, z2)
        both = torch.stack([z1, z2], dim=1)  # one collective for both views
        if gather:
            both = distributed.gather(both)
        a, b = both.unbind(dim=1)
        if a.shape[0] < 2:
            raise MedrepError("needs a global batch of at least 2 samples for batch statistics", "vicreg_loss")
        variance = (_variance(a, eps) + _variance(b, eps)) / 2
        covariance = _covariance(a) + _covariance(b)
        loss = sim_weight * invariance + var_weight * variance + cov_weight * covariance
        return {"loss": loss, "invariance": invariance, "variance": variance, "covariance": covariance}
