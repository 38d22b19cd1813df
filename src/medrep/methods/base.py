"""What every method is: an ``nn.Module`` with an ``encoder`` and ``training_step(batch) -> losses``.

The engine knows nothing of any method; it calls ``training_step`` and optimises ``loss``, and it
calls ``on_train_batch_end`` so that methods with a momentum teacher (BYOL) can update it.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..models import Backbone


class Method(nn.Module):
    name: ClassVar[str] = ""

    def __init__(self, encoder: Backbone, augment: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder
        self.augment = augment

    @property
    def spatial_dims(self) -> int:
        return self.encoder.spatial_dims

    @torch.no_grad()
    def views(self, image: torch.Tensor, n: int = 2) -> list[torch.Tensor]:
        """``n`` independently augmented views of a batch; no gradients flow into augmentation."""
        if self.augment is None:
            return [image] * n
        return [self.augment(image) for _ in range(n)]

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def on_train_batch_end(self, step: int, max_steps: int) -> None:
        """Called after each optimiser step (``step`` counts optimiser steps)."""
