"""Barlow Twins (Zbontar et al. 2021): make the views' cross-correlation matrix the identity."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import RecipeError
from ..losses import barlow_twins_loss
from ..models import Backbone, MLPHead
from .base import Method
from .registry import register_method


@register_method("barlow_twins")
class BarlowTwins(Method):
    """The paper's projector is 3 layers of 8192 (it gains from width); the default here is
    2048 to fit small GPUs. The loss standardises over the global batch, gathered across
    processes, so the projector ends in a plain linear layer. ``scale_loss`` multiplies the
    loss (the first official release used 1/32 with lambda 3.9e-3; the paper uses 1)."""

    def __init__(
        self,
        encoder: Backbone,
        augment: nn.Module | None = None,
        lambda_offdiag: float = 5e-3,
        proj_hidden_dim: int = 2048,
        proj_dim: int = 2048,
        proj_layers: int = 3,
        scale_loss: float = 1.0,
    ):
        super().__init__(encoder, augment)
        for key, value in (("lambda_offdiag", lambda_offdiag), ("scale_loss", scale_loss)):
            if not (isinstance(value, (int, float)) and math.isfinite(value)) or isinstance(value, bool) or value < 0:
                raise RecipeError(f"must be a finite number >= 0, got {value!r}", f"method.{key}")
        for key, value in (("proj_hidden_dim", proj_hidden_dim), ("proj_dim", proj_dim), ("proj_layers", proj_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise RecipeError(f"must be a positive integer, got {value!r}", f"method.{key}")
        self.lambda_offdiag = float(lambda_offdiag)
        self.scale_loss = float(scale_loss)
        self.projector = MLPHead(encoder.out_dim, proj_hidden_dim, proj_dim, num_layers=proj_layers)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        v1, v2 = self.views(batch["image"])
        z1, z2 = self.projector(self.encoder(torch.cat([v1, v2]))).chunk(2)
        return {"loss": self.scale_loss * barlow_twins_loss(z1, z2, lambda_offdiag=self.lambda_offdiag)}
