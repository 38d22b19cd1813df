"""VICReg (Bardes et al. 2022): invariance plus variance and covariance regularisers."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import RecipeError
from ..losses import vicreg_loss
from ..models import Backbone, MLPHead
from .base import Method
from .registry import register_method


@register_method("vicreg")
class VICReg(Method):
    """The variance hinge keeps every dimension spread out and the covariance term decorrelates
    them, so neither negatives nor a momentum target are needed. Variance and covariance use the
    global batch (gathered across processes). The paper's expander is 3 layers of 8192; the
    default here is 2048. The three unweighted terms are returned for logging."""

    def __init__(
        self,
        encoder: Backbone,
        augment: nn.Module | None = None,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        proj_hidden_dim: int = 2048,
        proj_dim: int = 2048,
        proj_layers: int = 3,
    ):
        super().__init__(encoder, augment)
        for key, value in (("sim_weight", sim_weight), ("var_weight", var_weight), ("cov_weight", cov_weight)):
            if not (isinstance(value, (int, float)) and math.isfinite(value)) or isinstance(value, bool) or value < 0:
                raise RecipeError(f"must be a finite number >= 0, got {value!r}", f"method.{key}")
        for key, value in (("proj_hidden_dim", proj_hidden_dim), ("proj_dim", proj_dim), ("proj_layers", proj_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise RecipeError(f"must be a positive integer, got {value!r}", f"method.{key}")
        self.weights = {"sim_weight": float(sim_weight), "var_weight": float(var_weight), "cov_weight": float(cov_weight)}
        self.projector = MLPHead(encoder.out_dim, proj_hidden_dim, proj_dim, num_layers=proj_layers)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        v1, v2 = self.views(batch["image"])
        z1, z2 = self.projector(self.encoder(torch.cat([v1, v2]))).chunk(2)
        return vicreg_loss(z1, z2, **self.weights)
