"""``pneumoniamnist``: paediatric chest X-rays of PneumoniaMNIST (MedMNIST v2), 28 px, no masks.

Read from ``$MEDREP_DATA/medmnist/pneumoniamnist.npz``, else the copy packaged with medrep
(:func:`~medrep.data.sources.medmnist.default_medmnist_path`). Only the *train* split is used, so
that TaCo never sees the images its pneumonia probes are scored on. The images are 28 px: at
``size`` 64 they are upsampled, so fine texture is absent, not lost.
"""

from __future__ import annotations

import numpy as np

from ..sources.medmnist import default_medmnist_path, load_npz_split
from .prepare import SliceList, make_slice, pick, robust_scale
from .registry import SliceSet, register_slice_set

NAME = "pneumoniamnist"


def load(max_images: int, size: int, rng: np.random.Generator) -> SliceList:
    path = default_medmnist_path()
    images, _ = load_npz_split(path, "train")
    if images.ndim != 3:
        images = images.astype(np.float32).mean(axis=-1)  # an RGB MedMNIST set: luminance-like average
    out = SliceList()
    for i in pick(len(images), max_images, rng):
        image = robust_scale(images[i])
        if image.max() <= 0:
            out.skipped["constant image"] += 1
            continue
        out.append(make_slice(image, None, size, NAME, f"{path.name}:train[{i}]", "XR"))
    return out


register_slice_set(SliceSet(
    name=NAME, modality="XR", masks=None,
    summary="PneumoniaMNIST train split: 4,708 paediatric chest X-rays, 28 px",
    licence="CC BY 4.0 (MedMNIST v2, Yang et al. 2023)", intensity="per image, 1st-99th percentiles",
    available=lambda: (True, ""), loader=load,
))
