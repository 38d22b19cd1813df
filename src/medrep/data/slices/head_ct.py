"""``head-ct``: one real head CT (``$MEDREP_DATA/volumes/head_ct.nii.gz``, HU, 0.96 x 0.96 x 1.5 mm)
with *derived* masks: 0 air (HU < -300), 1 soft tissue, 2 bone (HU >= 300).

The masks are thresholds, not an expert's outline: a task that segments them learns the rule
(they include the head rest and anything else that dense). The image is shown in a wide brain
window, [-100, 200] HU (level 50, width 300): grey and white matter stay apart, bone is white.
Slices through the body's bounding box, along all three axes with pixels made square.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from .prepare import SliceList, read_volume, volume_slices, window
from .registry import SliceSet, files_here, register_slice_set, shared_path

NAME = "head-ct"
WINDOW = (-100.0, 200.0)
BODY_HU, BONE_HU = -300.0, 300.0


def derived_mask(hu: np.ndarray) -> np.ndarray:
    """0 air, 1 soft tissue, 2 bone, by HU thresholds."""
    return (hu >= BODY_HU).astype(np.int64) + (hu >= BONE_HU).astype(np.int64)


def _path():
    root = shared_path("volumes")
    return None if root is None else root / "head_ct.nii.gz"


def load(max_images: int, size: int, rng: np.random.Generator) -> SliceList:
    hu, spacing, _ = read_volume(_path())
    skipped = Counter()
    slices = volume_slices(window(hu, *WINDOW), derived_mask(hu), max_images, (0, 1, 2), size, NAME, _path().name, "CT",
                           skipped, spacing=spacing)
    return SliceList(slices, skipped)


register_slice_set(SliceSet(
    name=NAME, modality="CT", masks="derived", summary="one head CT volume; masks: air / soft tissue / bone by HU thresholds",
    licence="GPL-2 (Debian invesalius-examples)", intensity=f"CT window {WINDOW} HU",
    available=lambda: files_here([_path()], "volumes/head_ct.nii.gz"), loader=load,
))
