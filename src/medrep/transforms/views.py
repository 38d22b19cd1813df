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

from collections.abc import Sequence
from typing import Annotated

import torch
from torch import Tensor, nn

from ..errors import RecipeError
from ..options import Fraction, MinMax, NonNegativeFloat, Range, checked
from ._random import _check_input
from .intensity import (
    RandomCutout,
    RandomGaussianBlur,
    RandomGaussianNoise,
    RandomIntensity,
)
from .spatial import RandomResizedCropAffine


class ViewAugment(nn.Module):
    """One SSL view per call: crop/rotate/flip, intensity, blur, noise, cutout, in that order.

    Keyword names match the recipe's ``augment:`` section, so
    ``ViewAugment(spatial_dims, **recipe["augment"])`` works; bad values raise
    :class:`medrep.errors.RecipeError` naming ``augment.<key>`` (checked from the annotations,
    :func:`medrep.options.checked`). A strength of 0 (or ``False``,
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

    @checked("augment.")
    def __init__(
        self,
        spatial_dims: int,
        *,
        crop_scale: Annotated[Sequence[float], MinMax(gt=0, le=1)] = (0.35, 1.0),
        rotate_deg: Annotated[float, Range(ge=0, le=180)] = 15.0,
        flip: bool = True,
        brightness: NonNegativeFloat = 0.4,
        contrast: NonNegativeFloat = 0.4,
        gamma: NonNegativeFloat = 0.3,
        noise_std: NonNegativeFloat = 0.05,
        blur_prob: Fraction = 0.5,
        blur_sigma: Annotated[float | Sequence[float], MinMax(gt=0, scalar=True)] = (0.1, 1.5),
        cutout_prob: Fraction = 0.0,
    ):
        super().__init__()
        if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
            raise RecipeError(f"must be 2 or 3, got {spatial_dims!r}", "spatial_dims")
        self.spatial_dims = int(spatial_dims)
        sd = self.spatial_dims
        # kept so that a method training on 2D and 3D inputs builds the same views in the other dimensionality
        self.options = dict(crop_scale=crop_scale, rotate_deg=rotate_deg, flip=flip, brightness=brightness, contrast=contrast,
                            gamma=gamma, noise_std=noise_std, blur_prob=blur_prob, blur_sigma=blur_sigma, cutout_prob=cutout_prob)
        self.crop = RandomResizedCropAffine(sd, scale=crop_scale, rotate_deg=rotate_deg, flip=flip)
        self.intensity = RandomIntensity(sd, brightness=brightness, contrast=contrast, gamma=gamma)
        self.blur = RandomGaussianBlur(sd, sigma=blur_sigma, prob=blur_prob)
        self.noise = RandomGaussianNoise(sd, std=noise_std, prob=0.5)
        self.cutout = RandomCutout(sd, prob=cutout_prob)

    def for_dims(self, spatial_dims: int) -> ViewAugment:
        """The same augmentation for ``spatial_dims`` inputs (itself when that is its own)."""
        return self if spatial_dims == self.spatial_dims else ViewAugment(spatial_dims, **self.options)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_input(x, self.spatial_dims)
        for t in (self.crop, self.intensity, self.blur, self.noise, self.cutout):
            if not t.is_identity:
                x = t(x, generator=generator)
        return x
