"""Barlow Twins (Zbontar et al. 2021): make the views' cross-correlation matrix the identity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..losses import barlow_twins_loss
from ..models import Backbone, MLPHead
from ..options import NonNegativeFloat, PositiveInt
from .base import Method
from .registry import register_method


@register_method("barlow_twins")
class BarlowTwins(Method):
    """The paper's projector is 3 layers of 8192 (it gains from width); the default here is
    2048 to fit small GPUs. The loss standardises over the global batch, gathered across
    processes, so the projector ends in a plain linear layer. ``scale_loss`` multiplies the
    loss (the first official release used 1/32 with lambda 3.9e-3; the paper uses 1)."""

    @dataclass(frozen=True, kw_only=True)
    class Options(Method.Options):
        lambda_offdiag: NonNegativeFloat = 5e-3
        proj_hidden_dim: PositiveInt = 2048
        proj_dim: PositiveInt = 2048
        proj_layers: PositiveInt = 3
        scale_loss: NonNegativeFloat = 1.0

    options: Options

    def __init__(self, encoder: Backbone, augment: nn.Module | None = None, **options: Any):
        super().__init__(encoder, augment, **options)
        o = self.options
        self.lambda_offdiag = o.lambda_offdiag
        self.scale_loss = o.scale_loss
        self.projector = MLPHead(encoder.out_dim, o.proj_hidden_dim, o.proj_dim, num_layers=o.proj_layers)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        v1, v2 = self.views(batch["image"])
        z1, z2 = self.projector(self.encoder(torch.cat([v1, v2]))).chunk(2)
        return {"loss": self.scale_loss * barlow_twins_loss(z1, z2, lambda_offdiag=self.lambda_offdiag)}
