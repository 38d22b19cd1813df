"""Transformation tasks: the target is the input geometrically or photometrically transformed
(rotation, flips, zoom, brightness, gamma ...). Strength is the size of the transformation; the
direction (sign) is drawn from ``rng``."""

from __future__ import annotations

from .base import register_task


@register_task("rotate", "transformation", "rotate about the centre by up to 45 degrees (direction drawn), bilinear, zero fill")
def rotate(image, mask, rng, strength):
    from scipy import ndimage

    sign = 1.0 if rng.random() < 0.5 else -1.0
    return image, ndimage.rotate(image, sign * 45.0 * strength, reshape=False, order=1, mode="constant", cval=0.0)
