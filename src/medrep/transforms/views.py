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
from torch import Tensor, nn

from ..errors import RecipeError
from ._random import _check_input
from .intensity import (
    RandomCutout,
    RandomGaussianBlur,
    RandomGaussianNoise,
    RandomIntensity,
)
from .spatial import RandomResizedCropAffine


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
