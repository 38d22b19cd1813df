"""Projection and prediction heads (MLPs on feature vectors)."""

from __future__ import annotations

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
