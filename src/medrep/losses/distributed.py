"""Process-group helpers for losses that compare samples across the whole global batch.

Why ``gather`` gives correct gradients under DDP
------------------------------------------------
With ``W`` ranks each holding ``n`` samples, a contrastive loss wants every anchor compared
with all ``W * n`` candidates. Each rank ``r`` computes

    L_r = mean over its *local* anchors of loss(anchor, all gathered candidates)

and the loss of the global batch is ``L = (1 / W) * sum_r L_r`` (every rank has the same
number of anchors). In ``L_r`` the candidates that came from rank ``s`` depend on rank
``s``'s parameters, so ``dL_r / dz_s`` must reach rank ``s``. The backward of
:func:`torch.distributed.nn.functional.all_gather` does exactly that: it sends every
gathered slice's gradient back to its owner and *sums* the contributions, so after
``backward`` rank ``s`` holds ``sum_r dL_r / dtheta`` through its own embeddings. DDP then
*averages* parameter gradients over ranks, which gives
``(1 / W) * sum_s sum_r (dL_r / dtheta via z_s) = dL / dtheta``: the same gradient as one
process computing the loss on the full global batch. (A plain ``torch.distributed.all_gather``
would cut the graph: each rank would only see the gradient through its local anchors.)

Requirements: every rank calls the loss (and ``backward``) the same number of times, with
the same local batch size, since ``all_gather`` needs equal shapes.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["is_distributed", "world_size", "rank", "gather", "rank_offset"]


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and a default process group is set up."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the default group; 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """Rank of this process in the default group; 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def gather(x: Tensor) -> Tensor:
    """All-gather ``x`` along dim 0 from every rank, keeping gradients.

    Returns a tensor of shape ``(world_size * x.shape[0], *x.shape[1:])`` where rank ``r``'s
    slice is ``[r * n, (r + 1) * n)``. Its backward sums the gradients of every rank's copy
    back into the owner's ``x`` (see the module docstring). Identity when not distributed
    or with a single process. All ranks must pass tensors of the same shape.
    """
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def rank_offset(local_batch: int) -> int:
    """Index of this rank's first row in a tensor returned by :func:`gather`."""
    return rank() * local_batch
