"""Geometric augmentation: resized crop, rotation and flips composed into one affine per sample.

Coordinates use ``F.affine_grid``/``F.grid_sample`` with ``align_corners=False``: normalised -1
and +1 are the outer edges of the first and last pixels, so the identity reproduces the input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._random import (
    ALIGN_CORNERS,
    _check_input,
    _check_spatial_dims,
    _pair,
    _rand,
    _uniform,
    _work_dtype,
)


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
