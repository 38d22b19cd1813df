"""VICReg (Bardes et al. 2022): invariance plus variance and covariance regularisers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..losses import vicreg_loss
from ..models import Backbone, MLPHead
from ..options import NonNegativeFloat, PositiveInt
from .base import Method
from .registry import register_method


@register_method("vicreg")
class VICReg(Method):
    """The variance hinge keeps every dimension spread out and the covariance term decorrelates
    them, so neither negatives nor a momentum target are needed. Variance and covariance use the
    global batch (gathered across processes). The paper's expander is 3 layers of 8192; the
    default here is 2048. The three unweighted terms are returned for logging."""

    @dataclass(frozen=True, kw_only=True)
    class Options(Method.Options):
        sim_weight: NonNegativeFloat = 25.0
        var_weight: NonNegativeFloat = 25.0
        cov_weight: NonNegativeFloat = 1.0
        proj_hidden_dim: PositiveInt = 2048
        proj_dim: PositiveInt = 2048
        proj_layers: PositiveInt = 3

    options: Options

    def __init__(self, encoder: Backbone, augment: nn.Module | None = None, **options: Any):
        super().__init__(encoder, augment, **options)
        o = self.options
        self.weights = {"sim_weight": o.sim_weight, "var_weight": o.var_weight, "cov_weight": o.cov_weight}
        self.projector = MLPHead(encoder.out_dim, o.proj_hidden_dim, o.proj_dim, num_layers=o.proj_layers)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        v1, v2 = self.views(batch["image"])
        z1, z2 = self.projector(self.encoder(torch.cat([v1, v2]))).chunk(2)
        return vicreg_loss(z1, z2, **self.weights)
