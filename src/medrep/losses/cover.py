"""COVER's losses: vector regression (``L_vec``) and feature consistency (``L_con``), unweighted sum.

Fields follow :mod:`medrep.transforms.displacement` (``(B, n, *spatial)``, voxels); ``mask`` is
bool ``(B, 1, *spatial)``, True where ``p + psi(p)`` stays inside the moving view (e.g.
:func:`~medrep.transforms.displacement.inside_mask`). Means are over the valid positions of the
whole batch (one count for the batch, not a mean of per-image means), as the official
``partical_MAE`` / ``partical_COS`` (YutingHe-list/COVER ``utils/losses.py`` l. 4-9), which
divide by ``sum(mask)`` over the batch.

- ``L_vec`` = mean over valid positions of ``sum_k |pred_k - true_k|``: the L1 norm of the error
  vector, components *summed* (official l. 9: the ``(B, 1, ...)`` mask broadcasts over the ``n``
  components in the numerator, the denominator counts positions only).
- ``L_con = 1 - mean cos(f_b, warp(f_a, psi_true))`` along channels, with ``F.normalize``
  (eps 1e-12) as the official l. 5. The official loss is ``-mean cos``; we use ``1 - mean
  cos`` (same gradient, and 0 at perfect agreement, so a logged value reads as a distance).
- No valid position: both terms are 0 with a (zero) gradient, where the official code divides by
  zero (NaN); a batch whose views do not overlap then teaches nothing instead of poisoning the
  weights. Inputs are zeroed at masked positions (``where``, not a product) before any arithmetic,
  so non-finite values there leak NaN into neither the loss nor its gradient.
- The official mask (``train_COVER_2d.py``, ``train()``) also drops positions whose displaced
  coordinate is exactly 0 on some axis (its ``> 0`` test); the mask is the caller's here.

Computed in float32 (float64 for float64 inputs) with autocast disabled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from medrep.errors import MedrepError
from medrep.transforms.displacement import warp

__all__ = ["consistency_loss", "cover_loss", "vector_loss"]


def _dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_mask(mask: Tensor, like: Tensor, where: str) -> None:
    if mask.dtype != torch.bool:
        raise MedrepError(f"mask must be a bool tensor, got {mask.dtype}", where)
    if mask.shape != (like.shape[0], 1, *like.shape[2:]):
        raise MedrepError(f"mask must be (B, 1, *spatial) = {(like.shape[0], 1, *like.shape[2:])}, got {tuple(mask.shape)}", where)


def _keep(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` with masked positions zeroed *before* any arithmetic: a ``where`` after it would still
    let a non-finite value there turn its zero gradient into NaN (``0 * nan``)."""
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` ``(B, 1, *spatial)`` over ``mask``; 0 (with a zero gradient) if empty.
    ``clamp_min`` instead of a Python branch keeps it free of a device sync."""
    return _keep(values, mask).sum() / mask.sum().clamp_min(1).to(values.dtype)


def vector_loss(pred: Tensor, true: Tensor, mask: Tensor) -> Tensor:
    """``L_vec``: mean over valid positions of ``sum_k |pred_k - true_k|`` (components summed)."""
    if pred.ndim not in (4, 5) or pred.shape != true.shape or pred.shape[1] != pred.ndim - 2:
        raise MedrepError(f"pred and true must be equal (B, n, *spatial) fields, got {tuple(pred.shape)} and {tuple(true.shape)}",
                          "vector_loss")
    _check_mask(mask, pred, "vector_loss")
    with torch.autocast(device_type=pred.device.type, enabled=False):
        dtype = _dtype(pred)
        err = _keep(pred.to(dtype) - true.to(dtype), mask).abs().sum(1, keepdim=True)
        return _masked_mean(err, mask)


def consistency_loss(f_b: Tensor, f_a: Tensor, flow: Tensor, mask: Tensor) -> Tensor:
    """``L_con = 1 - mean over valid positions of cos(f_b, warp(f_a, flow))`` along channels."""
    if f_b.ndim not in (4, 5) or f_b.shape != f_a.shape:
        raise MedrepError(f"f_b and f_a must be equal (B, C, *spatial) maps, got {tuple(f_b.shape)} and {tuple(f_a.shape)}",
                          "consistency_loss")
    if flow.shape != (f_b.shape[0], f_b.ndim - 2, *f_b.shape[2:]):
        raise MedrepError(f"flow must be (B, n, *spatial) = {(f_b.shape[0], f_b.ndim - 2, *f_b.shape[2:])}, got {tuple(flow.shape)}",
                          "consistency_loss")
    _check_mask(mask, f_b, "consistency_loss")
    with torch.autocast(device_type=f_b.device.type, enabled=False):
        dtype = _dtype(f_b)
        moved = warp(f_a.to(dtype), _keep(flow.to(dtype), mask))
        cos = (F.normalize(_keep(f_b.to(dtype), mask), dim=1) * F.normalize(moved, dim=1)).sum(1, keepdim=True)
        return _masked_mean(1 - cos, mask)


def cover_loss(pred_flow: Tensor, true_flow: Tensor, mask: Tensor, f_b: Tensor, f_a: Tensor) -> dict[str, Tensor]:
    """``loss = vec + con`` (unweighted, as the official code and the paper), with both terms.

    ``f_b`` / ``f_a``: full-resolution decoder features of the fixed / moving view before any
    projection; ``con`` warps ``f_a`` by the *true* field, so it trains the backbone alone.
    """
    vec = vector_loss(pred_flow, true_flow, mask)
    con = consistency_loss(f_b, f_a, true_flow, mask)
    return {"loss": vec + con, "vec": vec, "con": con}
