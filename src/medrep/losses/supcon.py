"""Multi-positive supervised contrastive loss (Khosla et al. 2020, "L_out"), TaCo's loss over task ids.

For an anchor ``i`` with positives ``P(i)`` (other samples of its class) and candidates ``A(i)``
(every other sample of the global batch):

    l_i = -1/|P(i)| * sum_{p in P(i)} log( exp(s_ip / t) / sum_{a in A(i)} exp(s_ia / t) )

with ``s`` the cosine similarity. The loss is the mean of ``l_i`` over the anchors that have at
least one positive (an anchor alone in its class has nothing to pull towards and is left out, not
counted as zero).

Failure samples (TaCo's negatives: pairs whose target does not follow from the input) enter as
``negative_only``: they are candidates in every anchor's denominator, but never anchors and never
positives, so they only push. The option of giving failures their own classes is the caller's: pass
them with ``negative_only`` False and a class id of their own.

Gathering (``gather=True`` under a process group): embeddings, labels and flags of all ranks are the
candidates, anchors stay local. Ranks may hold different numbers of valid anchors (failures and
singleton classes vary), so each rank's loss is its anchors' sum divided by the *global* number of
valid anchors, times the world size: after DDP averages gradients over ranks, loss and gradient equal
one process's on the whole global batch (see :mod:`medrep.losses.distributed`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from medrep.errors import MedrepError
from medrep.losses import distributed
from medrep.losses.ntxent import _autocast_off, _check_temperature, _compute_dtype

__all__ = ["supcon"]


def _gather_plain(x: Tensor) -> Tensor:
    """All-gather a tensor that needs no gradient (labels, flags)."""
    parts = [torch.empty_like(x) for _ in range(distributed.world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def supcon(z: Tensor, labels: Tensor, negative_only: Tensor | None = None, temperature: float = 0.1,
           gather: bool = True) -> Tensor:
    """``z`` (n, d) embeddings (normalised here), ``labels`` (n,) integer classes, ``negative_only``
    (n,) bool: samples that are candidates only. Returns a scalar; 0 (with a gradient path) when no
    anchor in the global batch has a positive."""
    if z.ndim != 2 or z.shape[0] == 0:
        raise MedrepError(f"z must be a non-empty 2D (batch, dim) tensor, got shape {tuple(z.shape)}", "supcon")
    if labels.shape != (z.shape[0],):
        raise MedrepError(f"labels must have shape ({z.shape[0]},), got {tuple(labels.shape)}", "supcon")
    if negative_only is None:
        negative_only = torch.zeros_like(labels, dtype=torch.bool)
    if negative_only.shape != labels.shape:
        raise MedrepError(f"negative_only must have shape ({z.shape[0]},), got {tuple(negative_only.shape)}", "supcon")
    _check_temperature(temperature, "supcon")
    n = z.shape[0]
    spread = gather and distributed.world_size() > 1
    with _autocast_off(z):
        local = F.normalize(z.to(_compute_dtype(z)), dim=1)
        keys = distributed.gather(local) if spread else local
        key_labels = _gather_plain(labels) if spread else labels
        key_neg = _gather_plain(negative_only) if spread else negative_only
        offset = distributed.rank_offset(n) if spread else 0
        logits = local @ keys.T / temperature  # (n, N)
        idx = torch.arange(n, device=z.device)
        is_self = torch.zeros_like(logits, dtype=torch.bool)
        is_self[idx, idx + offset] = True
        log_prob = logits.masked_fill(is_self, float("-inf")).log_softmax(dim=1)
        positive = (labels[:, None] == key_labels[None, :]) & ~is_self & ~key_neg[None, :]
        positive &= ~negative_only[:, None]  # failures are never anchors
        n_pos = positive.sum(1)
        anchor = n_pos > 0
        per_anchor = -(log_prob.masked_fill(~positive, 0.0).sum(1)) / n_pos.clamp(min=1)
        total = per_anchor[anchor].sum()
        count = anchor.sum().to(per_anchor.dtype)
        if spread:
            count = count.detach().clone()
            dist.all_reduce(count)
            total = total * distributed.world_size()
        return total / count.clamp(min=1.0)
