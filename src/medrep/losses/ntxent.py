"""InfoNCE-style contrastive losses: SimCLR's NT-Xent and the one-directional ``info_nce``.

Both are pure functions (embeddings in, scalar out). With ``gather=True`` and an initialised
process group, the candidates are gathered from all ranks with gradients (see
:mod:`medrep.losses.distributed`) while the anchors stay local, so that under DDP the loss
and gradients equal those of one process holding the whole global batch.

Logits are computed in (at least) float32 with autocast disabled, so the losses are safe to
call under ``torch.autocast(dtype=torch.bfloat16)``.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from medrep.errors import MedrepError
from medrep.losses import distributed

__all__ = ["nt_xent", "info_nce"]


def _check_temperature(temperature: float | Tensor, where: str) -> None:
    # A tensor temperature (e.g. learnable) is not checked: that would force a device sync.
    if isinstance(temperature, Tensor):
        return
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)) or temperature <= 0:
        raise MedrepError(f"temperature must be a finite number > 0, got {temperature!r}", where)


def _check_pair(a: Tensor, b: Tensor, names: tuple[str, str], where: str) -> None:
    if a.ndim != 2 or b.ndim != 2:
        raise MedrepError(
            f"{names[0]} and {names[1]} must be 2D (batch, dim), got shapes "
            f"{tuple(a.shape)} and {tuple(b.shape)}",
            where,
        )
    if a.shape != b.shape:
        raise MedrepError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}",
            where,
        )
    if a.shape[0] == 0:
        raise MedrepError("empty batch", where)


def _compute_dtype(*xs: Tensor) -> torch.dtype:
    """float32 (also for bf16/fp16 inputs), or float64 when any input is float64."""
    return torch.float64 if any(x.dtype == torch.float64 for x in xs) else torch.float32


def _autocast_off(x: Tensor) -> contextlib.AbstractContextManager:
    """Autocast disabled on ``x``'s device; no context when autocast is off there anyway (entering
    ``torch.autocast(enabled=False)`` costs some 20 us per forward + backward, 5 % of a small loss)."""
    device = x.device.type
    return torch.autocast(device_type=device, enabled=False) if torch.is_autocast_enabled(device) else contextlib.nullcontext()


def _prepare(x: Tensor, dtype: torch.dtype, normalize: bool) -> Tensor:
    x = x.to(dtype)
    return F.normalize(x, dim=1) if normalize else x


def nt_xent(z1: Tensor, z2: Tensor, temperature: float | Tensor = 0.1, gather: bool = True) -> Tensor:
    """SimCLR NT-Xent loss on two views ``z1``, ``z2`` of shape ``(n, d)``.

    Embeddings are L2-normalised; similarities are cosine similarities divided by
    ``temperature``. Each of the ``2n`` local anchors (``z1[i]`` and ``z2[i]``) has one
    positive (the other view of sample ``i``) and ``2N - 2`` negatives, where ``N`` is the
    global batch (``n * world_size`` when gathering, else ``n``); the anchor itself is
    excluded. Returns the mean cross-entropy over the local anchors (both directions).
    """
    _check_pair(z1, z2, ("z1", "z2"), "nt_xent")
    _check_temperature(temperature, "nt_xent")
    n = z1.shape[0]
    with torch.autocast(device_type=z1.device.type, enabled=False):
        dtype = _compute_dtype(z1, z2)
        local = _prepare(torch.cat([z1.to(dtype), z2.to(dtype)], dim=0), dtype, True)  # [z1; z2]
        # Rank r's block [z1_r; z2_r] sits at rows [r*2n, (r+1)*2n) of the candidates.
        candidates = distributed.gather(local) if gather else local
        offset = distributed.rank_offset(2 * n) if gather else 0
        logits = local @ candidates.T / temperature  # (2n, 2n * world)
        idx = torch.arange(2 * n, device=local.device)
        # Drop each anchor's similarity with itself (exp(-inf) = 0, zero gradient).
        self_mask = torch.zeros_like(logits, dtype=torch.bool)
        self_mask[idx, idx + offset] = True
        logits = logits.masked_fill(self_mask, float("-inf"))
        targets = (idx + n) % (2 * n) + offset
        return F.cross_entropy(logits, targets)


def info_nce(
    query: Tensor,
    keys: Tensor,
    temperature: float | Tensor = 0.1,
    gather: bool = True,
    normalize: bool = True,
) -> Tensor:
    """One-directional InfoNCE: ``query[i]``'s positive is ``keys[i]``, every other key a negative.

    ``query`` and ``keys`` are ``(n, d)``. When gathering, the keys of all ranks are the
    candidates (``n * world_size`` of them) and the queries stay local. With ``normalize``
    the similarity is cosine, else a plain dot product. Returns the mean over local queries.
    A CLIP loss is ``(info_nce(img, txt, t) + info_nce(txt, img, t)) / 2``.
    """
    _check_pair(query, keys, ("query", "keys"), "info_nce")
    _check_temperature(temperature, "info_nce")
    n = query.shape[0]
    with torch.autocast(device_type=query.device.type, enabled=False):
        dtype = _compute_dtype(query, keys)
        q = _prepare(query, dtype, normalize)
        k = _prepare(keys, dtype, normalize)
        candidates = distributed.gather(k) if gather else k
        offset = distributed.rank_offset(n) if gather else 0
        logits = q @ candidates.T / temperature  # (n, n * world)
        targets = torch.arange(n, device=q.device) + offset
        return F.cross_entropy(logits, targets)
