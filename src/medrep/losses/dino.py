"""Self-distillation (DINO, Caron et al. 2021; on patch tokens as iBOT, Zhou et al. 2022).

The student's distribution over ``K`` prototypes (``softmax(s / t_s)``) learns the teacher's
sharpened, centred one (``softmax((t - c) / t_t)``); the centre ``c`` is an EMA of the teacher's
mean output over the global batch. Centring stops one prototype from winning, sharpening stops
the uniform solution; together they avoid collapse without negatives.

The loss itself needs no gather: it is a mean over the local rows, and DDP averages the gradients
of equal local batches. The centre must be the same on every rank, so :func:`dino_center` reduces
the teacher's batch sum and count over processes (no gradient flows through a centre).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from .distributed import world_size
from .vlp_global import _check_positive


def dino_loss(student: Tensor, teacher: Tensor, center: Tensor, student_temperature: float = 0.1,
              teacher_temperature: float = 0.04, weight: Tensor | None = None) -> Tensor:
    """Cross-entropy ``H(softmax((teacher - center) / t_t), softmax(student / t_s))`` per row, averaged.

    ``student``, ``teacher``: ``(N, K)`` logits of matching rows ([CLS] of the same image, or the
    same token position in two views); ``center``: ``(K,)``. The teacher side carries no gradient.
    ``weight`` ``(N,)`` (e.g. 0/1 for tokens a loss should see) gives a weighted mean; all-zero
    weights give 0 with a graph, so every rank still calls backward.
    """
    if student.ndim != 2 or student.shape != teacher.shape:
        raise ValueError(f"student and teacher must be matching (N, K) logits, got {tuple(student.shape)} and {tuple(teacher.shape)}")
    if center.shape != student.shape[1:]:
        raise ValueError(f"center must be ({student.shape[1]},), got {tuple(center.shape)}")
    _check_positive(student_temperature, "student_temperature", "dino_loss")
    _check_positive(teacher_temperature, "teacher_temperature", "dino_loss")
    target = F.softmax((teacher.detach().float() - center.float()) / teacher_temperature, dim=-1)
    per_row = -(target * F.log_softmax(student.float() / student_temperature, dim=-1)).sum(-1)
    if weight is None:
        return per_row.mean()
    if weight.shape != per_row.shape:
        raise ValueError(f"weight must be ({len(per_row)},), got {tuple(weight.shape)}")
    weight = weight.float()
    return (per_row * weight).sum() / weight.sum().clamp_min(1.0)


@torch.no_grad()
def dino_center(center: Tensor, teacher: Tensor, momentum: float = 0.9, gather: bool = True) -> Tensor:
    """The next centre: ``momentum * center + (1 - momentum) * mean(teacher)``, the mean over the
    rows of every process (sum and count all-reduced, so ranks with unequal rows weigh each row
    once). ``teacher`` ``(N, K)``; a batch with no row leaves the centre where it is."""
    if teacher.ndim != 2 or teacher.shape[1:] != center.shape:
        raise ValueError(f"teacher must be (N, {len(center)}) logits, got {tuple(teacher.shape)}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    total = torch.cat([teacher.float().sum(0), teacher.new_tensor([len(teacher)], dtype=torch.float32)])
    if gather and world_size() > 1:
        dist.all_reduce(total)
    if total[-1] == 0:
        return center.clone()
    return momentum * center.float() + (1 - momentum) * total[:-1] / total[-1]
