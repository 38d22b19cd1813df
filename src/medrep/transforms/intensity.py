"""Intensity augmentations for grayscale images: brightness, contrast, gamma, noise, blur, cutout."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ._random import (
    _bcast,
    _bernoulli,
    _check_input,
    _check_spatial_dims,
    _pair,
    _rand,
    _randn,
    _uniform,
    _work_dtype,
)


class RandomIntensity(nn.Module):
    """Per-sample gamma, contrast and brightness, in that order, for grayscale images.

    * gamma: ``x.clamp(0, 1) ** g`` with ``log g ~ U(-log(1+gamma), log(1+gamma))``
      (only when ``gamma > 0``; the clamp then applies to every sample it touches);
    * contrast: ``(x - mean) * f + mean``, ``f ~ U(max(0, 1-contrast), 1+contrast)``, mean over
      each sample's channels and voxels;
    * brightness: ``x + b``, ``b ~ U(-brightness, brightness)``.

    A strength of 0 disables that part. ``prob`` is the chance that a sample is touched at all.
    """

    def __init__(self, spatial_dims: int, brightness: float = 0.4, contrast: float = 0.4, gamma: float = 0.3, prob: float = 1.0):
        super().__init__()
        self.spatial_dims = _check_spatial_dims(spatial_dims)
        for name, v in (("brightness", brightness), ("contrast", contrast), ("gamma", gamma)):
            if v < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.brightness, self.contrast, self.gamma, self.prob = float(brightness), float(contrast), float(gamma), float(prob)

    @property
    def is_identity(self) -> bool:
        return self.prob == 0 or (self.brightness == 0 and self.contrast == 0 and self.gamma == 0)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_input(x, self.spatial_dims)
        if self.is_identity:
            return x
        b, dev, nd = x.shape[0], x.device, x.ndim
        dtype = _work_dtype(x)
        out = x.to(dtype)
        apply = _bernoulli(self.prob, b, dev, generator)
        if self.gamma > 0:
            lg = math.log1p(self.gamma)
            g = torch.exp(_uniform(-lg, lg, (b,), dev, generator))
            g = _bcast(g.to(dtype), nd)
            out = torch.where(_bcast(apply, nd), out.clamp(0.0, 1.0).pow(g), out)
        if self.contrast > 0:
            f = _uniform(max(0.0, 1.0 - self.contrast), 1.0 + self.contrast, (b,), dev, generator)
            f = _bcast(torch.where(apply, f, 1.0).to(dtype), nd)
            mean = out.mean(dim=tuple(range(1, nd)), keepdim=True)
            out = (out - mean) * f + mean
        if self.brightness > 0:
            shift = _uniform(-self.brightness, self.brightness, (b,), dev, generator)
            out = out + _bcast(torch.where(apply, shift, 0.0).to(dtype), nd)
        return out.to(x.dtype)


class RandomGaussianNoise(nn.Module):
    """Additive Gaussian noise; each touched sample (probability ``prob``) gets its own standard
    deviation ``U(0, std)`` (as MONAI's ``RandGaussianNoise``). ``std=0`` disables it."""

    def __init__(self, spatial_dims: int, std: float = 0.05, prob: float = 0.5):
        super().__init__()
        self.spatial_dims = _check_spatial_dims(spatial_dims)
        if std < 0:
            raise ValueError(f"std must be >= 0, got {std}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.std, self.prob = float(std), float(prob)

    @property
    def is_identity(self) -> bool:
        return self.std == 0 or self.prob == 0

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_input(x, self.spatial_dims)
        if self.is_identity:
            return x
        b, dev = x.shape[0], x.device
        dtype = _work_dtype(x)
        apply = _bernoulli(self.prob, b, dev, generator)
        std = torch.where(apply, _uniform(0.0, self.std, (b,), dev, generator), 0.0)
        noise = _randn(x.shape, dev, dtype, generator)
        return (x.to(dtype) + noise * _bcast(std.to(dtype), x.ndim)).to(x.dtype)


# --------------------------------------------------------------------------------------------
# blur


def _reflect_index(idx: Tensor, n: int) -> Tensor:
    """Indices mirrored into [0, n) like ``F.pad(mode='reflect')`` (edge not repeated), any reach."""
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    m = idx.remainder(period)
    return torch.where(m < n, m, period - m)


def _blur_matrices(sigma: Tensor, n: int, radius: int) -> Tensor:
    """(B, n, n) matrices doing a 1D Gaussian blur (reflect padding folded in) along an axis."""
    b = sigma.shape[0]
    offsets = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    w = torch.exp(-0.5 * (offsets[None, :] / sigma[:, None]) ** 2)
    w = w / w.sum(1, keepdim=True)  # (B, K)
    cols = _reflect_index(torch.arange(n, device=sigma.device)[:, None] + offsets.long()[None, :], n)  # (n, K)
    mat = torch.zeros(b, n, n, device=sigma.device, dtype=sigma.dtype)
    mat.scatter_add_(2, cols[None].expand(b, n, -1), w[:, None, :].expand(b, n, -1).contiguous())
    return mat


def gaussian_blur(x: Tensor, sigma: Tensor | float, spatial_dims: int, truncate: float = 3.0) -> Tensor:
    """Separable Gaussian blur of every sample with its own ``sigma`` (voxel units).

    ``sigma`` is a number or a ``(B,)`` tensor. The kernel reaches ``ceil(truncate * max(sigma))``
    voxels each side, is normalised to sum 1, and the borders are reflected (``'reflect'``
    padding). Each axis is one batched matrix product with a banded matrix, which handles
    per-sample sigmas in one call on any device.
    """
    _check_input(x, spatial_dims)
    b = x.shape[0]
    dtype = _work_dtype(x)
    sigma_t = torch.as_tensor(sigma, dtype=dtype, device=x.device).reshape(-1).expand(b).clamp(min=1e-6)
    radius = max(1, int(math.ceil(truncate * float(sigma_t.max()))))
    out = x.to(dtype)
    c = x.shape[1]
    for axis in range(spatial_dims):
        dim = 2 + axis
        n = out.shape[dim]
        if n == 1:
            continue
        mat = _blur_matrices(sigma_t, n, radius)  # (B, n, n)
        pre = c * math.prod(out.shape[2:dim])
        post = math.prod(out.shape[dim + 1 :])
        if post == 1:  # last axis: (B, pre, n) @ (B, n, n)^T
            y = torch.bmm(out.reshape(b, pre, n), mat.transpose(1, 2))
        else:  # (B, 1, n, n) @ (B, pre, n, post)
            y = torch.matmul(mat[:, None], out.reshape(b, pre, n, post))
        out = y.reshape(out.shape)
    return out.to(x.dtype)


class RandomGaussianBlur(nn.Module):
    """Gaussian blur with probability ``prob`` per sample, sigma ``U(sigma)`` voxels per sample
    (same sigma along every axis); see :func:`gaussian_blur`. ``prob=0`` disables it."""

    def __init__(self, spatial_dims: int, sigma: float | Sequence[float] = (0.1, 1.5), prob: float = 0.5):
        super().__init__()
        self.spatial_dims = _check_spatial_dims(spatial_dims)
        self.sigma = _pair(sigma, "sigma")
        if self.sigma[0] <= 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.prob = float(prob)

    @property
    def is_identity(self) -> bool:
        return self.prob == 0

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_input(x, self.spatial_dims)
        if self.is_identity:
            return x
        b, dev = x.shape[0], x.device
        apply = _bernoulli(self.prob, b, dev, generator)
        sigma = _uniform(*self.sigma, (b,), dev, generator)
        if self.prob >= 1.0:
            return gaussian_blur(x, sigma, self.spatial_dims)
        idx = apply.nonzero().squeeze(1)
        if idx.numel() == 0:
            return x
        out = x.clone()
        out[idx] = gaussian_blur(x[idx], sigma[idx], self.spatial_dims)
        return out


# --------------------------------------------------------------------------------------------
# cutout


class RandomCutout(nn.Module):
    """Coarse dropout: with probability ``prob`` per sample, ``n_holes`` boxes are set to ``fill``.

    Each box side is ``round(f * side)`` voxels (at least 1) with ``f ~ U(size)`` drawn per box
    (same fraction on every axis), placed uniformly so that it lies inside the image. Boxes may
    overlap. With ``size=s`` fixed and one hole, a touched sample loses ``round(s*N)^n / N^n``
    of its voxels.
    """

    def __init__(
        self,
        spatial_dims: int,
        prob: float = 0.5,
        n_holes: int = 1,
        size: float | Sequence[float] = (0.1, 0.3),
        fill: float = 0.0,
    ):
        super().__init__()
        self.spatial_dims = _check_spatial_dims(spatial_dims)
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        if int(n_holes) != n_holes or n_holes < 1:
            raise ValueError(f"n_holes must be a positive integer, got {n_holes}")
        self.size = _pair(size, "size")
        if not 0.0 < self.size[0] <= self.size[1] <= 1.0:
            raise ValueError(f"size must lie within (0, 1], got {self.size}")
        self.prob, self.n_holes, self.fill = float(prob), int(n_holes), float(fill)

    @property
    def is_identity(self) -> bool:
        return self.prob == 0

    def sample_mask(self, shape: Sequence[int], device, generator: torch.Generator | None = None) -> Tensor:
        """``(B, *spatial)`` bool mask, True where voxels are dropped."""
        b, spatial = int(shape[0]), [int(s) for s in shape[2:]]
        h = self.n_holes
        apply = _bernoulli(self.prob, b, device, generator)
        frac = _uniform(*self.size, (b, h), device, generator)
        mask = torch.ones((b, h, *spatial), dtype=torch.bool, device=device)
        for axis, n in enumerate(spatial):
            length = (frac * n).round().clamp(1, n)
            start = (_rand((b, h), device, generator) * (n - length + 1)).floor().clamp(max=n - length)
            length = torch.where(apply[:, None], length, 0.0)
            coord = torch.arange(n, device=device, dtype=frac.dtype)
            inside = (coord >= start[..., None]) & (coord < (start + length)[..., None])  # (B, h, n)
            view = [b, h] + [1] * len(spatial)
            view[2 + axis] = n
            mask = mask & inside.reshape(view)
        return mask.any(1)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_input(x, self.spatial_dims)
        if self.is_identity:
            return x
        mask = self.sample_mask(x.shape, x.device, generator)
        return x.masked_fill(mask[:, None], self.fill)
