"""ISImed's loss: the embedding distance matrix regressed onto the crops' physical distance matrix.

``distance`` = mean over the selected ordered pairs ``(i, j)``, ``i != j``, of
``(||z_i - z_j|| - ||c_i - c_j|| / distance_scale) ** 2``, with ``z`` the crop embeddings and ``c``
the crop centres in mm; ``distance_scale`` is in mm per embedding unit. Pairs:

- ``same_image``: only crops of one image (equal ``group``), the default: distances between
  crops of different patients mean nothing unless the images are registered;
- ``all``: every pair, for registered data (the official code's choice, which it applies to
  unregistered data too).

The diagonal (a crop with itself, 0 = 0) is excluded from the mean; the official code includes
it, which only dilutes the loss by ``N / N**2``.

Anti-collapse: the official KL term compares raw embeddings with Gaussian samples (invalid,
NaN in current PyTorch). Here an optional VICReg-style hinge ``mean_d relu(var_target -
sqrt(var_d + eps))`` over embedding dimensions (``var_weight``, default 0; ``var_target``
default ``1/sqrt(dim)``, i.e. a total variance of 1 unit^2, well below the spread the distance
targets ask for, so it only keeps dimensions alive and never fights the distances).

Distributed: ``same_image`` pairs never cross processes (all crops of an image are in one
sample, hence on one rank), so nothing is gathered; each rank's mean is over the same number
of pairs (B images of K crops), so DDP's gradient average is the global mean. ``all`` with
``gather=True`` gathers embeddings (with gradients) and centres from every rank: rank ``r``
takes its local rows against all ``W*n`` columns (pair ``(i, i)`` excluded by the row offset
:func:`~medrep.losses.distributed.rank_offset`), ``n*(W*n-1)`` pairs per rank; the argument in
:mod:`medrep.losses.distributed` then gives the single-process gradient. The variance term is
taken over each rank's local crops (B*K of them, plenty for a per-dimension std).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from medrep.errors import MedrepError
from medrep.losses import distributed

__all__ = ["isimed_loss", "PAIRS"]

PAIRS = ("same_image", "all")


def _cdist(a: Tensor, b: Tensor) -> Tensor:
    # the matrix-product shortcut loses precision at small distances; this path is exact and
    # its backward is 0 (not NaN) at zero distance
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def isimed_loss(
    z: Tensor,
    coords: Tensor,
    group: Tensor | None = None,
    distance_scale: float = 10.0,
    pairs: str = "same_image",
    var_weight: float = 0.0,
    var_target: float | None = None,
    gather: bool = True,
    eps: float = 1e-4,
) -> dict[str, Tensor]:
    """ISImed on embeddings ``z`` ``(N, d)``, crop centres ``coords`` ``(N, dims)`` in mm and the
    source image of each crop ``group`` ``(N,)`` (needed for ``pairs="same_image"``).

    Returns ``loss = distance + var_weight * variance`` and the terms: ``distance`` (the MSE),
    ``variance`` (the hinge, unweighted) and ``error_mm`` (mean absolute distance error in mm
    over the same pairs, detached, for logging). Computed in float32 (float64 for float64
    inputs) with autocast disabled.
    """
    if z.ndim != 2 or z.shape[0] == 0:
        raise MedrepError(f"z must be a non-empty 2D (N, d) tensor, got shape {tuple(z.shape)}", "isimed_loss")
    if coords.ndim != 2 or coords.shape[0] != z.shape[0]:
        raise MedrepError(f"coords must be (N, dims) with N = {z.shape[0]}, got shape {tuple(coords.shape)}", "isimed_loss")
    if pairs not in PAIRS:
        raise MedrepError(f"pairs must be one of {', '.join(PAIRS)}, got {pairs!r}", "isimed_loss")
    if group is None and pairs == "same_image":
        raise MedrepError("pairs='same_image' needs the group (source image) of every crop", "isimed_loss")
    if group is not None and tuple(group.shape) != (z.shape[0],):
        raise MedrepError(f"group must be (N,) with N = {z.shape[0]}, got shape {tuple(group.shape)}", "isimed_loss")
    for key, value in (("distance_scale", distance_scale), ("var_weight", var_weight)):
        if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value)) or value < 0:
            raise MedrepError(f"{key} must be a finite number >= 0, got {value!r}", "isimed_loss")
    if distance_scale <= 0:
        raise MedrepError(f"distance_scale must be positive, got {distance_scale!r}", "isimed_loss")
    with torch.autocast(device_type=z.device.type, enabled=False):
        dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
        z, c = z.to(dtype), coords.to(device=z.device, dtype=dtype)
        n = z.shape[0]
        rows = torch.arange(n, device=z.device)
        if pairs == "all" and gather and distributed.world_size() > 1:
            z_all, c_all = distributed.gather(z), distributed.gather(c)
            rows = rows + distributed.rank_offset(n)
        else:
            z_all, c_all = z, c
        cols = torch.arange(z_all.shape[0], device=z.device)
        mask = rows[:, None] != cols[None, :]
        if pairs == "same_image":
            mask = mask & (group[:, None] == group[None, :])
        count = int(mask.sum())
        if count == 0:
            raise MedrepError(
                "no pair of crops to compare: pairs='same_image' needs at least 2 crops of an image "
                "(data.crops.k >= 2)", "isimed_loss",
            )
        d_z = _cdist(z, z_all)
        d_c = _cdist(c, c_all)
        weight = mask.to(dtype)
        distance = ((d_z - d_c / distance_scale).pow(2) * weight).sum() / count
        with torch.no_grad():
            error_mm = ((d_z * distance_scale - d_c).abs() * weight).sum() / count
        if n >= 2:
            target = 1.0 / math.sqrt(z.shape[1]) if var_target is None else float(var_target)
            variance = F.relu(target - torch.sqrt(z.var(dim=0) + eps)).mean()
        elif var_weight > 0:
            raise MedrepError("the variance term needs at least 2 crops per process", "isimed_loss")
        else:
            variance = z.new_zeros(())
        loss = distance + var_weight * variance if var_weight > 0 else distance
        return {"loss": loss, "distance": distance, "variance": variance.detach() if var_weight == 0 else variance,
                "error_mm": error_mm}
