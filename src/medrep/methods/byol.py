"""BYOL (Grill et al. 2020): an online network predicts a momentum (EMA) target's projection."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from itertools import chain
from typing import Any

import torch
from torch import nn

from ..losses import byol_loss
from ..models import Backbone, MLPHead
from ..models.ema import cosine_momentum, ema_update
from ..options import Fraction, PositiveInt
from .base import Method
from .registry import register_method


@register_method("byol")
class BYOL(Method):
    """No negatives: collapse is avoided by the predictor and the slow target, whose momentum
    rises from ``base_momentum`` to 1 on a cosine schedule. The target is a frozen copy
    (``requires_grad=False``, so no optimiser sees it) and ``encoder`` stays the online one,
    which is what gets exported. Both views share one forward, as in SimCLR."""

    @dataclass(frozen=True, kw_only=True)
    class Options(Method.Options):
        base_momentum: Fraction = 0.99
        proj_hidden_dim: PositiveInt = 4096
        proj_dim: PositiveInt = 256
        pred_hidden_dim: PositiveInt = 4096

    options: Options

    def __init__(self, encoder: Backbone, augment: nn.Module | None = None, **options: Any):
        super().__init__(encoder, augment, **options)
        o = self.options
        self.base_momentum = self.momentum = o.base_momentum
        self.projector = MLPHead(encoder.out_dim, o.proj_hidden_dim, o.proj_dim)
        self.predictor = MLPHead(o.proj_dim, o.pred_hidden_dim, o.proj_dim)
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self._ema_step = -1

    def momentum_at(self, step: int, max_steps: int) -> float:
        """``base_momentum`` at step 0 rising to 1 at ``max_steps`` (cosine)."""
        return cosine_momentum(self.base_momentum, step, max_steps)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        v1, v2 = self.views(batch["image"])
        x = torch.cat([v1, v2])
        p1, p2 = self.predictor(self.projector(self.encoder(x))).chunk(2)
        with torch.no_grad():
            z1, z2 = self.target_projector(self.target_encoder(x)).chunk(2)
        return {"loss": byol_loss(p1, z2) + byol_loss(p2, z1)}

    @torch.no_grad()
    def on_train_batch_end(self, step: int, max_steps: int) -> None:
        # With gradient accumulation the hook runs once per batch; move the target once per step.
        if step <= self._ema_step:
            return
        self._ema_step = step
        self.momentum = self.momentum_at(step, max_steps)
        online = chain(self.encoder.parameters(), self.projector.parameters())
        target = chain(self.target_encoder.parameters(), self.target_projector.parameters())
        ema_update(online, target, self.momentum)
