"""Batched, device-agnostic augmentations for self-supervised views of 2D and 3D images."""

from .intensity import RandomCutout, RandomGaussianBlur, RandomGaussianNoise, RandomIntensity, gaussian_blur
from .spatial import RandomResizedCropAffine, apply_affine
from .views import ViewAugment

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
