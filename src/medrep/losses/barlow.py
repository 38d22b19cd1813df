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
(so their mean is it too). ``tests/losses/test_losses_baselines.py`` checks this with two gloo
processes.

How it is computed (``benchmarks/loss_speed.py`` times it against lightly's)
-------------------------------------------------------------------------
- Standardising is ``F.batch_norm`` (training mode, no affine): one fused kernel forward and
  backward, several times faster on CPU than ``mean``/``var``/``sqrt``/``div``, and the same
  values (population variance).
- The off-diagonal sum is ``sum C_ij^2 - sum C_ii^2`` instead of gathering the ``d (d - 1)``
  off-diagonal entries (a ``d x d`` copy forward and a scatter backward). As ``|C_ii| <= 1``,
  the subtraction costs at most about ``lambda * d * 2^-24`` on a float32 loss value, which
  shows only when the loss is that small (``C`` close to the identity); the gradient, ``2 C_ij``
  off the diagonal and 0 on it, has no such cancellation.
- ``sum C_ij^2 = ||a^T b||_F^2 / N^2 = sum((a a^T) * (b b^T)) / N^2``: with ``d >= 2N`` (e.g.
  the paper's 8192 dimensions at batch 2048) the two ``N x N`` Gram matrices take ``8 N^2 d``
  multiply-adds forward and backward instead of ``6 N d^2`` for ``C``, and less memory; the
  diagonal is then ``C_ii = <a_i, b_i> / N`` from the columns. There ``C`` has rank below
  ``N``, so ``||C - I||_F^2 >= d - N >= d / 2``: the loss is at least ``min(1, lambda) d / 2``
  and the subtraction's error stays at float precision relative to it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from medrep.errors import MedrepError
from medrep.losses import distributed
from medrep.losses.ntxent import _autocast_off, _check_pair, _compute_dtype

__all__ = ["barlow_twins_loss", "off_diagonal"]


def off_diagonal(m: Tensor) -> Tensor:
    """The ``d * (d - 1)`` off-diagonal entries of a square matrix, flattened."""
    d = m.shape[0]
    return m.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def _standardise(z: Tensor, eps: float) -> Tensor:
    # BatchNorm1d(affine=False) in training mode, as the official code: biased variance.
    return F.batch_norm(z, None, None, training=True, eps=eps)


def _diagonal_and_sum_sq(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """``C``'s diagonal and ``sum C_ij^2`` for ``C = a^T b / n``, through whichever of ``C`` (``d x d``)
    and the two Gram matrices (``n x n``) is cheaper."""
    n, d = a.shape
    if d >= 2 * n:
        return torch.linalg.vecdot(a, b, dim=0) / n, ((a @ a.T) * (b @ b.T)).sum() / n**2
    c = (a.T @ b).div_(n)
    return c.diagonal(), c.square().sum()


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
    with _autocast_off(z1):
        dtype = _compute_dtype(z1, z2)
        a, b = z1.to(dtype), z2.to(dtype)
        if gather and distributed.world_size() > 1:
            a, b = distributed.gather(torch.stack([a, b], dim=1)).unbind(dim=1)  # one collective for both views
        n = a.shape[0]
        if n < 2:
            raise MedrepError("needs a global batch of at least 2 samples for batch statistics", "barlow_twins_loss")
        a, b = _standardise(a, eps), _standardise(b, eps)
        diag, sum_sq = _diagonal_and_sum_sq(a, b)
        # sum_{i != j} C_ij^2 = sum C_ij^2 - sum_i C_ii^2
        return ((1 - diag).square() - lambda_offdiag * diag.square()).sum() + lambda_offdiag * sum_sq
