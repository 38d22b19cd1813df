"""Semantic tasks: the target says *what* is where (a structure's mask, its contour, box, centre,
distance map ...). Those that need a label map have ``needs_mask``; which structure of a label map a
sample shows is drawn from ``rng`` among the labels present."""

from __future__ import annotations

import numpy as np

from .base import register_task


def pick_label(mask: np.ndarray, rng: np.random.Generator) -> int:
    labels = np.unique(mask)
    labels = labels[labels > 0]
    return int(rng.choice(labels))


@register_task("segment_structure", "semantic", "binary mask of one labelled structure (drawn from the labels present); "
               "strength dilates the structure's mask by up to 3 pixels", needs_mask=True)
def segment_structure(image, mask, rng, strength):
    from scipy import ndimage

    fg = mask == pick_label(mask, rng)
    steps = int(round(3 * strength))
    if steps:
        fg = ndimage.binary_dilation(fg, iterations=steps)
    return image, fg.astype(np.float32)
