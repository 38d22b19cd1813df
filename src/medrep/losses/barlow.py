"""Barlow Twins' redundancy-reduction loss (Zbontar et al. 2021) over the global batch.

Why every rank computes the *whole* global loss, and why that gives the right gradient
--------------------------------------------------------------------------------------
The cross-correlation matrix ``C`` needs batch statistics (mean, std) of the global batch,
so the loss does not split into per-rank parts. Each of the ``W`` ranks therefore gathers
all embeddings with gradients (:func:`medrep.losses.distributed.gather`) and computes the
same scalar ``L`` (the loss of the global batch). In backward, rank ``r`` produces
``dL/dz_s`` for every rank's slice ``z_s``; the gather's backward sends each slice's
gradient to its owner and *sums* over ranks, so rank ``s`` receives ``W * dL/dz_s`` and
holds ``W * (dL/dtheta through z_s)``. DDP *averages* parameter gradients over ranks:
``(1/W) * sum_s W * (dL/dtheta through z_s) = dL/dtheta``, the single-process gradient
on the concatenated batch. No rescaling is needed, and every rank logs the global loss
(so their mean is it too). ``tests/test_losses_baselines.py`` checks this with two gloo
processes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from medrep.errors import MedrepError
from medrep.losses import distributed
from medrep.losses.ntxent import _check_pair, _compute_dtype

__all__ = ["barlow_twins_loss", "off_diagonal"]


def off_diagonal(m: Tensor) -> Tensor:
    """The ``d * (d - 1)`` off-diagonal entries of a square matrix, flattened."""
    d = m.shape[0]
    return m.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def _standardise(z: Tensor, eps: float) -> Tensor:
    # As BatchNorm1d(affine=False) in training mode, which the official code uses: biased variance.
    return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + eps)


def barlow_twins_loss(
    z1: Tensor, z2: Tensor, lambda_offdiag: float = 5e-3, gather: bool = True, eps: float = 1e-5
) -> Tensor:
    """``sum_i (1 - C_ii)^2 + lambda_offdiag * sum_{i != j} C_ij^2`` for views ``(n, d)``.

    ``C = a^T b / N`` is the cross-correlation of the two views after standardising every
    dimension over the batch (``a = (z1 - mean) / sqrt(var + eps)``, biased variance), with
    ``N`` the global batch: with ``gather=True`` and a process group, the embeddings of all
    ranks are gathered with gradients first and every rank returns the same global loss (see
    the module docstring for why DDP's gradients are then exact). Computed in float32
    (float64 for float64 inputs) with autocast disabled.
    """
    _check_pair(z1, z2, ("z1", "z2"), "barlow_twins_loss")
    if not (isinstance(lambda_offdiag, (int, float)) and math.isfinite(lambda_offdiag)) or lambda_offdiag < 0:
        raise MedrepError(f"lambda_offdiag must be a finite number >= 0, got {lambda_offdiag!r}", "barlow_twins_loss")
    with torch.autocast(device_type=z1.device.type, enabled=False):
        dtype = _compute_dtype(z1, z2)
        both = torch.stack([z1.to(dtype), z2.to(dtype)], dim=1)  # one collective for both views
        if gather:
            both = distributed.gather(both)
        a, b = both.unbind(dim=1)
        n = a.shape[0]
        if n < 2:
            raise MedrepError("needs a global batch of at least 2 samples for batch statistics", "barlow_twins_loss")
        c = _standardise(a, eps).T @ _standardise(b, eps) / n
        on_diag = (1 - c.diagonal()).pow(2).sum()
        return on_diag + lambda_offdiag * off_diagonal(c).pow(2).sum()
