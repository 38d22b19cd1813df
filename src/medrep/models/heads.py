"""Projection and prediction heads (MLPs on feature vectors)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLPHead(nn.Sequential):
    """Linear-BN-ReLU blocks then a linear output; ``last_bn`` adds an affine-free BN at the end
    (SimCLR v2 and Barlow Twins use one, BYOL's predictor does not)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, last_bn: bool = False):
        if num_layers < 1:
            raise ValueError("an MLP head needs at least one layer")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim, bias=not last_bn))
        if last_bn:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        super().__init__(*layers)


class DINOHead(nn.Module):
    """DINO's projection head: an MLP (GELU, no BatchNorm, so it acts on tokens as well as on
    [CLS]) to an L2-normalised bottleneck, then a linear layer to ``out_dim`` prototype logits
    whose weight rows are kept at unit norm (DINO's weight-normalised last layer with g fixed to 1)."""

    def __init__(self, in_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, out_dim: int = 8192, num_layers: int = 3):
        super().__init__()
        if num_layers < 1:
            raise ValueError("a DINO head needs at least one layer")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(dim, hidden_dim), nn.GELU()]
            dim = hidden_dim
        layers.append(nn.Linear(dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.prototypes = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1) @ F.normalize(self.prototypes, dim=-1).T
