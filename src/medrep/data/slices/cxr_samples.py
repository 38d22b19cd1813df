"""``cxr-samples``: the chest X-ray fixtures of ``$MEDREP_DATA/cxr_samples``: two NIH ChestX-ray14
PNGs and one SIIM DICOM (MONOCHROME1 is inverted by the reader, so bright means dense)."""

from __future__ import annotations

import numpy as np

from ..io.readers import read_image
from .prepare import SliceList, is_empty, make_slice, pick, robust_scale
from .registry import SliceSet, files_here, register_slice_set, shared_path

NAME = "cxr-samples"
FILES = ("00000001_000.png", "00027426_000.png", "siim_sample.dcm")


def _paths():
    root = shared_path("cxr_samples")
    return [None if root is None else root / f for f in FILES]


def load(max_images: int, size: int, rng: np.random.Generator) -> SliceList:
    paths, out = _paths(), SliceList()
    for i in pick(len(paths), max_images, rng):
        image = robust_scale(read_image(paths[i], 2)["image"][0].numpy())
        if is_empty(image):
            out.skipped["empty image"] += 1
            continue
        out.append(make_slice(image, None, size, NAME, paths[i].name, "XR"))
    return out


register_slice_set(SliceSet(
    name=NAME, modality="XR", masks=None, summary="2 NIH ChestX-ray14 PNGs + 1 SIIM chest DICOM (format fixtures)",
    licence="NIH: no restrictions, attribution requested; SIIM sample: Apache-2.0 test file",
    intensity="per image, 1st-99th percentiles",
    available=lambda: files_here(_paths(), "the cxr_samples/ fixtures"), loader=load,
))
