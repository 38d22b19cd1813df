"""``colin27-aal``: Colin27's T1 brain MRI with the AAL atlas (116 regions) on its 1 mm grid.

Read from ``$MEDREP_DATA/volumes`` (the files of the ``colin27-lobes`` segmentation source). The
mask is the raw AAL label map (ids 1..116, 0 outside the atlas), a real label map; slices are
evenly spaced sagittal, coronal and axial cuts through the atlas's bounding box, and cuts that
hold no label are skipped.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ...errors import DataError
from ..sources.colin27_lobes import FILES
from .prepare import SliceList, read_volume, robust_scale, volume_slices
from .registry import SliceSet, files_here, register_slice_set, shared_path

NAME = "colin27-aal"


def _paths():
    root = shared_path("volumes")
    return [None if root is None else root / f for f in FILES[:2]]


def load(max_images: int, size: int, rng: np.random.Generator) -> SliceList:
    t1_path, aal_path = _paths()
    t1, spacing, _ = read_volume(t1_path)
    aal = read_volume(aal_path)[0]
    if aal.shape != t1.shape:
        raise DataError(f"the atlas {aal.shape} is not on the T1's grid {t1.shape}", aal_path)
    skipped = Counter()
    slices = volume_slices(robust_scale(t1), aal.round().astype(np.int64), max_images, (0, 1, 2), size, NAME,
                           t1_path.name, "MR", skipped, spacing=spacing)
    return SliceList(slices, skipped)


register_slice_set(SliceSet(
    name=NAME, modality="MR", masks="labels", summary="Colin27 T1 (one subject, 1 mm) with the AAL atlas, 116 regions",
    licence="BSD-3 (Debian mricron-data)", intensity="per volume, 1st-99th percentiles",
    available=lambda: files_here(_paths(), "volumes/colin27_t1.nii.gz and colin27_aal.nii.gz"), loader=load,
))
