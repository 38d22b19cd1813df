"""Generative tasks: the input is a degraded image, the target the image it came from (denoising,
deblurring, super-resolution, inpainting ...), or the input is the image and the target a new
rendering of it (colourisation). Strength is the degradation's severity."""

from __future__ import annotations

import numpy as np

from .base import register_task


@register_task("denoise_gaussian", "generative", "remove additive Gaussian noise, sigma 0-0.3 of the intensity range")
def denoise_gaussian(image, mask, rng, strength):
    noise = rng.standard_normal(image.shape).astype(np.float32)
    return np.clip(image + 0.3 * strength * noise, 0, 1), image
