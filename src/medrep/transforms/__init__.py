"""Batched, device-agnostic augmentations for self-supervised views of 2D and 3D images."""

from .views import (
    RandomCutout,
    RandomGaussianBlur,
    RandomGaussianNoise,
    RandomIntensity,
    RandomResizedCropAffine,
    ViewAugment,
    apply_affine,
    gaussian_blur,
)

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
