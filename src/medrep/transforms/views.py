"""Batched view-making augmentations for self-supervised learning on grayscale medical images.

Every module here takes a whole batch, ``(B, C, H, W)`` for ``spatial_dims=2`` or
``(B, C, D, H, W)`` for ``spatial_dims=3``, draws its random parameters per sample, and runs on
the device the batch is on. Output has the input's shape and dtype. No module has learnable
parameters; none clamps its output (intensities may leave [0, 1] after noise or brightness).

Randomness comes from torch's global RNG for the batch's device, so ``torch.manual_seed`` makes a
run reproducible; every ``forward`` also takes an optional ``generator`` (drawn on the
generator's own device, then moved to the batch's device).

Coordinates: geometric transforms use ``F.affine_grid``/``F.grid_sample`` with
``align_corners=False`` throughout, i.e. normalised coordinates -1 and +1 are the outer *edges*
of the first and last pixels, so an identity matrix reproduces the input exactly and a flip
maps pixel centres onto pixel centres.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import RecipeError

__all__ = [
    "RandomResizedCropAffine",
    "RandomIntensity",
    "RandomGaussianNoise",
    "RandomGaussianBlur",
    "RandomCutout",
    "ViewAugment",
    "apply_affine",
    "gaussian_blur",
]

ALIGN_CORNERS = False


# --------------------------------------------------------------------------------------------
# helpers


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


# --------------------------------------------------------------------------------------------
# geometry


def _affine_grid(theta: Tensor, size: Sequence[int]) -> Tensor:
    """Same as ``F.affine_grid(theta, size, align_corners=False)``, built by broadcasting."""
    b, spatial = int(size[0]), [int(s) for s in size[2:]]
    n = len(spatial)
    grid = theta[:, :, n].reshape(b, *([1] * n), n)
    for k in range(n):  # grid coordinate k (x=W, y=H, z=D) runs along tensor axis n-1-k
        ax = n - 1 - k
        size_k = spatial[ax]
        coord = (torch.arange(size_k, dtype=theta.dtype, device=theta.device) * 2 + 1) / size_k - 1
        shape = [1] * n
        shape[ax] = size_k
        grid = grid + theta[:, :, k].reshape(b, *([1] * n), n) * coord.reshape(1, *shape, 1)
    return grid


def apply_affine(
    x: Tensor, theta: Tensor, padding_mode: str = "border", mode: str = "bilinear"
) -> Tensor:
    """Resample ``x`` with per-sample affine matrices ``theta``.

    ``theta`` is ``(B, n, n+1)`` in ``F.affine_grid``'s convention: it maps *output* normalised
    coordinates, ordered ``(x=W, y=H[, z=D])``, to *input* normalised coordinates, with
    ``align_corners=False``. Output has ``x``'s shape and dtype.
    """
    dtype = _work_dtype(x)
    xi = x.to(dtype)
    theta = theta.to(device=x.device, dtype=dtype)
    if x.ndim == 5:  # F.affine_grid's 3D path is a slow bmm over (B, D*H*W, 4) on CPU
        grid = _affine_grid(theta, list(x.shape))
    else:
        grid = F.affine_grid(theta, list(x.shape), align_corners=ALIGN_CORNERS)
    out = F.grid_sample(xi, grid, mode=mode, padding_mode=padding_mode, align_corners=ALIGN_CORNERS)
    return out.to(x.dtype)


def _rotation_matrices(angles: Tensor, spatial_dims: int) -> Tensor:
    """Rotation matrices in tensor-axis order ((H, W) or (D, H, W)), angles in radians.

    2D: ``angles`` (B,). 3D: ``angles`` (B, 3), a rotation about each of the D, H and W axes,
    composed as R_D @ R_H @ R_W.
    """
    if spatial_dims == 2:
        c, s = torch.cos(angles), torch.sin(angles)
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    b = angles.shape[0]
    out = torch.eye(3, device=angles.device, dtype=angles.dtype).expand(b, 3, 3)
    for axis in range(3):  # rotation about `axis` acts in the plane of the other two axes
        i, j = [a for a in range(3) if a != axis]
        c, s = torch.cos(angles[:, axis]), torch.sin(angles[:, axis])
        r = torch.eye(3, device=angles.device, dtype=angles.dtype).repeat(b, 1, 1)
        r[:, i, i], r[:, i, j], r[:, j, i], r[:, j, j] = c, -s, s, c
        out = out @ r
    return out


class RandomResizedCropAffine(nn.Module):
    """Random resized crop + rotation + flips, composed into one affine per sample.

    For each sample: a crop box whose area (volume in 3D) is a fraction ``U(scale)`` of the
    image's and whose aspect ratios (each axis against the last one) are log-uniform in
    ``ratio`` (if an axis would exceed the image, it is clamped and the others grow to keep the
    area, so ``scale=(1, 1)`` is always the whole image); the box centre is uniform over the
    positions that keep the unrotated box inside the image. The box is rotated about its centre
    by ``U(-rotate_deg, rotate_deg)`` degrees (2D), or about each of the three axes by such an
    angle (3D); each axis is flipped with probability ``flip_prob`` when ``flip`` is set. The
    result is resampled to the input size in one ``grid_sample`` call (``mode``,
    ``padding_mode``, ``align_corners=False``). Rotation is in voxel units (isotropic voxels).

    ``rotate_deg`` may be a number ``d`` (range ``(-d, d)``) or a ``(min, max)`` pair.
    A positive 2D angle of 90 degrees equals ``torch.rot90(x, k=1, dims=(-2, -1))``.
    """

    def __init__(
        self,
        spatial_dims: int,
        scale: float | Sequence[float] = (0.35, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        rotate_deg: float | Sequence[float] = 15.0,
        flip: bool = True,
        flip_prob: float = 0.5,
        padding_mode: str = "border",
        mode: str = "bilinear",
    ):
        super().__init__()
        self.spatial_dims = _check_spatial_dims(spatial_dims)
        self.scale = _pair(scale, "scale")
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(f"scale must lie within (0, 1], got {self.scale}")
        self.ratio = _pair(ratio, "ratio")
        if self.ratio[0] <= 0:
            raise ValueError(f"ratio must be positive, got {self.ratio}")
        if isinstance(rotate_deg, (int, float)):
            rotate_deg = (-abs(float(rotate_deg)), abs(float(rotate_deg)))
        self.rotate_deg = _pair(rotate_deg, "rotate_deg")
        self.flip = bool(flip)
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        self.flip_prob = float(flip_prob)
        if padding_mode not in ("border", "zeros", "reflection"):
            raise ValueError(f"padding_mode must be 'border', 'zeros' or 'reflection', got {padding_mode!r}")
        self.padding_mode = padding_mode
        if mode not in ("bilinear", "nearest"):
            raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
        self.mode = mode

    @property
    def is_identity(self) -> bool:
        return self.scale == (1.0, 1.0) and self.rotate_deg == (0.0, 0.0) and not (self.flip and self.flip_prob > 0)

    def _crop_fractions(self, b: int, device, generator) -> Tensor:
        """(B, n) side fractions of the crop box, per tensor axis, product = area fraction."""
        n = self.spatial_dims
        area = _uniform(*self.scale, (b,), device, generator)
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        log_r = _uniform(lo, hi, (b, n - 1), device, generator)
        log_r = torch.cat([log_r, torch.zeros(b, 1, device=device)], 1)  # ratio of each axis to the last
        z = torch.exp(log_r + (area.log()[:, None] - log_r.sum(1, keepdim=True)) / n)
        for _ in range(n):  # water-fill: clamp sides at 1, let the free ones grow to keep the area
            z = z.clamp(max=1.0)
            free = z < 1.0
            n_free = free.sum(1, keepdim=True).clamp(min=1)
            deficit = area[:, None] / z.prod(1, keepdim=True)
            z = torch.where(free, z * deficit ** (1.0 / n_free), z)
        return z.clamp(max=1.0)

    def sample_theta(
        self, shape: Sequence[int], device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw ``(B, n, n+1)`` float32 matrices for a batch of ``shape`` (affine_grid convention)."""
        device = torch.device(device)
        b, n = int(shape[0]), self.spatial_dims
        sizes = torch.tensor([float(s) for s in shape[2:]], device=device)
        z = self._crop_fractions(b, device, generator)  # (B, n)
        centre = (_uniform(-1.0, 1.0, (b, n), device, generator)) * (1.0 - z)  # normalised units
        n_angles = 1 if n == 2 else 3
        angles = _uniform(*self.rotate_deg, (b, n_angles), device, generator) * (math.pi / 180.0)
        angles = -angles  # the grid maps output to input: rotate it backwards so +90 == rot90(k=1)
        rot = _rotation_matrices(angles[:, 0] if n == 2 else angles, n)  # (B, n, n), voxel units
        if self.flip and self.flip_prob > 0:
            signs = torch.where(_rand((b, n), device, generator) < self.flip_prob, -1.0, 1.0)
        else:
            signs = torch.ones(b, n, device=device)
        # u_in = D^-1 R Z F D u_out + centre, D = diag(size / 2): scale/flip in the box, rotate in voxels
        lin = rot * (z * signs * sizes)[:, None, :] / sizes[None, :, None]
        # tensor-axis order (D, H, W) -> affine_grid order (x=W, y=H, z=D)
        lin = lin.flip(-1).flip(-2)
        return torch.cat([lin, centre.flip(-1)[:, :, None]], -1)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_input(x, self.spatial_dims)
        if self.is_identity:
            return x
        theta = self.sample_theta(x.shape, x.device, generator)
        return apply_affine(x, theta, self.padding_mode, self.mode)


# --------------------------------------------------------------------------------------------
# intensity


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


# --------------------------------------------------------------------------------------------
# composition


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _number(v: Any, key: str, lo: float | None = None, hi: float | None = None) -> float:
    where = f"augment.{key}"
    if not _is_number(v):
        raise RecipeError(f"must be a number, got {v!r}", where)
    if lo is not None and v < lo or hi is not None and v > hi:
        rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise RecipeError(f"must be within {rng}, got {v!r}", where)
    return float(v)


def _range(v: Any, key: str, lo: float, hi: float | None, lo_open: bool, allow_scalar: bool) -> tuple[float, float]:
    where = f"augment.{key}"
    if allow_scalar and _is_number(v):
        v = (v, v)
    if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or len(v) != 2 or not all(map(_is_number, v)):
        raise RecipeError(f"must be a [min, max] pair of numbers, got {v!r}", where)
    a, b = float(v[0]), float(v[1])
    if a > b:
        raise RecipeError(f"min {a} is larger than max {b}", where)
    bad_lo = a <= lo if lo_open else a < lo
    if bad_lo or (hi is not None and b > hi):
        rng = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}]"
        raise RecipeError(f"must lie within {rng}, got {list(v)!r}", where)
    return a, b


class ViewAugment(nn.Module):
    """One SSL view per call: crop/rotate/flip, intensity, blur, noise, cutout, in that order.

    Keyword names match the recipe's ``augment:`` section, so
    ``ViewAugment(spatial_dims, **recipe["augment"])`` works; bad values raise
    :class:`medrep.errors.RecipeError` naming ``augment.<key>``. A strength of 0 (or ``False``,
    or ``crop_scale=(1, 1)``) disables that part; with everything off the call returns its input.

    * ``crop_scale``: ``[min, max]`` area fraction of the random crop, within (0, 1];
    * ``rotate_deg``: max rotation in degrees, [0, 180] (3D: about each axis);
    * ``flip``: flip each axis with probability 0.5;
    * ``brightness``, ``contrast``, ``gamma``: strengths for :class:`RandomIntensity`;
    * ``noise_std``: max noise std (per-sample ``U(0, noise_std)``, applied with probability 0.5);
    * ``blur_prob``, ``blur_sigma``: per-sample probability and sigma range (voxels) of the blur;
    * ``cutout_prob``: per-sample probability of one box of side 10-30 % set to 0.

    Call twice on the same batch for two independent views.
    """

    def __init__(
        self,
        spatial_dims: int,
        crop_scale: Sequence[float] = (0.35, 1.0),
        rotate_deg: float = 15.0,
        flip: bool = True,
        brightness: float = 0.4,
        contrast: float = 0.4,
        gamma: float = 0.3,
        noise_std: float = 0.05,
        blur_prob: float = 0.5,
        blur_sigma: float | Sequence[float] = (0.1, 1.5),
        cutout_prob: float = 0.0,
    ):
        super().__init__()
        if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
            raise RecipeError(f"must be 2 or 3, got {spatial_dims!r}", "spatial_dims")
        self.spatial_dims = int(spatial_dims)
        crop_scale = _range(crop_scale, "crop_scale", 0.0, 1.0, lo_open=True, allow_scalar=False)
        rotate_deg = _number(rotate_deg, "rotate_deg", 0.0, 180.0)
        if not isinstance(flip, bool):
            raise RecipeError(f"must be true or false, got {flip!r}", "augment.flip")
        brightness = _number(brightness, "brightness", 0.0)
        contrast = _number(contrast, "contrast", 0.0)
        gamma = _number(gamma, "gamma", 0.0)
        noise_std = _number(noise_std, "noise_std", 0.0)
        blur_prob = _number(blur_prob, "blur_prob", 0.0, 1.0)
        blur_sigma = _range(blur_sigma, "blur_sigma", 0.0, None, lo_open=True, allow_scalar=True)
        cutout_prob = _number(cutout_prob, "cutout_prob", 0.0, 1.0)

        sd = self.spatial_dims
        self.crop = RandomResizedCropAffine(sd, scale=crop_scale, rotate_deg=rotate_deg, flip=flip)
        self.intensity = RandomIntensity(sd, brightness=brightness, contrast=contrast, gamma=gamma)
        self.blur = RandomGaussianBlur(sd, sigma=blur_sigma, prob=blur_prob)
        self.noise = RandomGaussianNoise(sd, std=noise_std, prob=0.5)
        self.cutout = RandomCutout(sd, prob=cutout_prob)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_input(x, self.spatial_dims)
        for t in (self.crop, self.intensity, self.blur, self.noise, self.cutout):
            if not t.is_identity:
                x = t(x, generator=generator)
        return x
