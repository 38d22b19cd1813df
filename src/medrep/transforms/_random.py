"""Shared helpers: input checks and per-sample random draws on the batch's device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

ALIGN_CORNERS = False


def _check_input(x: Tensor, spatial_dims: int) -> None:
    if x.ndim != spatial_dims + 2:
        shape = "(B, C, H, W)" if spatial_dims == 2 else "(B, C, D, H, W)"
        raise ValueError(f"expected a {shape} batch for spatial_dims={spatial_dims}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point tensor, got {x.dtype}")


def _check_spatial_dims(spatial_dims: Any) -> int:
    if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return int(spatial_dims)


def _work_dtype(x: Tensor) -> torch.dtype:
    """float32/float64 are used as they are; half types are computed in float32."""
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _rand(shape: Sequence[int], device: torch.device, generator: torch.Generator | None) -> Tensor:
    """Uniform [0, 1) float32 draws on ``device`` from the global RNG or ``generator``."""
    if generator is None:
        return torch.rand(tuple(shape), device=device)
    return torch.rand(tuple(shape), generator=generator, device=generator.device).to(device)


def _randn(shape: Sequence[int], device: torch.device, dtype: torch.dtype, generator: torch.Generator | None) -> Tensor:
    if generator is None:
        return torch.randn(tuple(shape), device=device, dtype=dtype)
    return torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype).to(device)


def _uniform(lo: float, hi: float, shape: Sequence[int], device, generator) -> Tensor:
    u = _rand(shape, device, generator)
    return u if (lo, hi) == (0.0, 1.0) else lo + (hi - lo) * u


def _bernoulli(p: float, n: int, device, generator) -> Tensor:
    """(n,) bool mask, True with probability ``p``."""
    if p >= 1.0:
        return torch.ones(n, dtype=torch.bool, device=device)
    if p <= 0.0:
        return torch.zeros(n, dtype=torch.bool, device=device)
    return _rand((n,), device, generator) < p


def _pair(value: float | Sequence[float], name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), float(value)
    lo, hi = value  # type: ignore[misc]
    lo, hi = float(lo), float(hi)
    if lo > hi:
        raise ValueError(f"{name}: min {lo} is larger than max {hi}")
    return lo, hi


def _bcast(v: Tensor, ndim: int) -> Tensor:
    """(B,) -> (B, 1, ..., 1) with ``ndim`` dims in all."""
    return v.reshape(v.shape[0], *([1] * (ndim - 1)))
