"""SimCLR (Chen et al. 2020): two augmented views, NT-Xent over the batch gathered across processes."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import RecipeError
from ..losses import nt_xent
from ..models import Backbone, MLPHead
from .base import Method
from .registry import register_method


@register_method("simclr")
class SimCLR(Method):
    """Both views go through the encoder in one batch, so BatchNorm sees 2B samples, as in the
    paper's global BN; the loss gathers the projections of all processes for 2(BW-1) negatives."""

    def __init__(
        self,
        encoder: Backbone,
        augment: nn.Module | None = None,
        temperature: float = 0.1,
        proj_hidden_dim: int = 2048,
        proj_dim: int = 128,
        proj_layers: int = 2,
    ):
        super().__init__(encoder, augment)
        if temperature <= 0:
            raise RecipeError(f"must be positive, got {temperature}", "method.temperature")
        self.temperature = temperature
        self.projector = MLPHead(encoder.out_dim, proj_hidden_dim, proj_dim, num_layers=proj_layers)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        v1, v2 = self.views(batch["image"])
        z1, z2 = self.projector(self.encoder(torch.cat([v1, v2]))).chunk(2)
        return {"loss": nt_xent(z1, z2, temperature=self.temperature)}
