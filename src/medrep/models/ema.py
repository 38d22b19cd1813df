"""Momentum (EMA) teachers, as BYOL's target and UniMedI's (DINO's) teacher keep them."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def cosine_momentum(base: float, step: int, max_steps: int) -> float:
    """``1 - (1 - base) * (cos(pi * step / max_steps) + 1) / 2``: ``base`` at step 0, 1 at ``max_steps``."""
    progress = min(1.0, step / max(1, max_steps))
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def ema_update(online: Iterable[torch.Tensor], target: Iterable[torch.Tensor], momentum: float) -> None:
    """``target <- momentum * target + (1 - momentum) * online``, parameter by parameter (same order)."""
    for o, t in zip(online, target, strict=True):
        t.lerp_(o.detach(), 1 - momentum)
