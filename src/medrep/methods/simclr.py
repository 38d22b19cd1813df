"""SimCLR (Chen et al. 2020): two augmented views, NT-Xent over the batch gathered across processes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..losses import nt_xent
from ..models import Backbone, MLPHead
from ..options import PositiveFloat, PositiveInt
from .base import Method
from .registry import register_method


@register_method("simclr")
class SimCLR(Method):
    """Both views go through the encoder in one batch, so BatchNorm sees 2B samples, as in the
    paper's global BN; the loss gathers the projections of all processes for 2(BW-1) negatives."""

    @dataclass(frozen=True, kw_only=True)
    class Options(Method.Options):
        temperature: PositiveFloat = 0.1
        proj_hidden_dim: PositiveInt = 2048
        proj_dim: PositiveInt = 128
        proj_layers: PositiveInt = 2

    options: Options

    def __init__(self, encoder: Backbone, augment: nn.Module | None = None, **options: Any):
        super().__init__(encoder, augment, **options)
        o = self.options
        self.temperature = o.temperature
        self.projector = MLPHead(encoder.out_dim, o.proj_hidden_dim, o.proj_dim, num_layers=o.proj_layers)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        v1, v2 = self.views(batch["image"])
        z1, z2 = self.projector(self.encoder(torch.cat([v1, v2]))).chunk(2)
        return {"loss": nt_xent(z1, z2, temperature=self.temperature)}
