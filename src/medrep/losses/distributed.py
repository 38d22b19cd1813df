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

import gc
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

if dist.is_available():
    # Imported here, before any process group exists, on purpose: this torch module binds
    # ``group=group.WORLD`` as default arguments when it is first imported, so importing it
    # after ``init_process_group`` would pin that group for the life of the interpreter (see
    # :func:`shutdown_process_group`).
    import torch.distributed.nn.functional as dist_nn

__all__ = ["is_distributed", "world_size", "rank", "gather", "rank_offset", "gloo_threads", "shutdown_process_group"]


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
    return torch.cat(dist_nn.all_gather(x, group=dist.group.WORLD), dim=0)


def rank_offset(local_batch: int) -> int:
    """Index of this rank's first row in a tensor returned by :func:`gather`."""
    return rank() * local_batch


def gloo_threads() -> int:
    """Live gloo work threads (``pt_gloo_runloop``) of this process; 0 where ``/proc`` is absent."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return 0
    count = 0
    for task in tasks.iterdir():
        try:
            count += (task / "comm").read_text().strip() == "pt_gloo_runloop"
        except OSError:  # the thread ended while we looked
            pass
    return count


def shutdown_process_group() -> None:
    """Finish all collective work and destroy the default process group, joining its threads.

    Why: a gloo work thread drops each finished work object *after* the caller's ``wait()``
    returns, and that object holds the caller's thread-local state, whose Python references
    need the GIL to be released. If the interpreter is already finalising, taking the GIL
    ends the thread with ``pthread_exit``, which unwinds through a ``noexcept`` destructor:
    ``terminate called without an active exception``, rc -6, after all results were written.
    So the group must be gone, and its threads joined, before the interpreter exits:
    ``destroy_process_group`` alone does not do it while anything still references the group.
    What did here: ``torch.distributed.nn.functional`` (behind :func:`gather`) binds the world
    group as a default argument if it is first imported after ``init_process_group``; we
    import it earlier, and release such a binding here in case other code imported it late.
    DDP modules and autograd graphs in reference cycles go with ``gc.collect``. Every rank
    waits for the others first (a peer must not lose its connection mid-collective); the
    last reference then joins the threads (torch releases the GIL for that). Lightning
    destroys the group at exit only for NCCL, not gloo, so :func:`medrep.engine.pretrain`
    calls this.
    """
    if not is_distributed():
        return
    gc.collect()
    dist.barrier()
    module = sys.modules.get("torch.distributed.nn.functional")
    for fn in vars(module).values() if module else ():
        defaults = getattr(fn, "__defaults__", None)
        if callable(fn) and defaults and any(isinstance(d, dist.ProcessGroup) for d in defaults):
            fn.__defaults__ = tuple(None if isinstance(d, dist.ProcessGroup) else d for d in defaults)
    dist.destroy_process_group()
    gc.collect()
