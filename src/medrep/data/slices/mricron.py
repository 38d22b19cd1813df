"""Templates and atlases of the Debian package ``mricron-data`` (``/usr/share/mricron/templates``).

- ``mricron-ch2better``: ``ch2better``, a 0.5 mm, contrast-enhanced rendering of Colin27 (the same
  subject as ``colin27-aal``, not a new one), with the Brodmann-area atlas (``brodmann``, 1 mm)
  brought onto its grid by nearest neighbour in world coordinates. A second label map of that brain.
- ``mricron-inia19``: the INIA19 rhesus macaque T1 template (brain extracted, 0.5 mm) with its
  NeuroMaps label map on the same grid: a non-human primate brain, a truly different data set.

Both label maps are real atlases (``masks="labels"``); slices are evenly spaced sagittal, coronal
and axial cuts through the atlas's bounding box, and cuts holding no label are skipped. The Debian
package is BSD-3 (Chris Rorden); the atlases keep their authors' terms (Brodmann map from MRIcro;
INIA19: Rohlfing et al. 2012, Front. Neuroinform.).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ...errors import DataError
from .prepare import SliceList, labels_on_grid, read_volume, robust_scale, volume_slices
from .registry import SliceSet, register_slice_set

#: where Debian installs the templates (tests point it at a tiny tree)
TEMPLATES = Path("/usr/share/mricron/templates")
SETS = {
    "mricron-ch2better": ("ch2better.nii.gz", "brodmann.nii.gz"),
    "mricron-inia19": ("inia19-t1-brain.nii.gz", "inia19-NeuroMaps.nii.gz"),
}


def _available(name: str):
    def check() -> tuple[bool, str]:
        missing = [f for f in SETS[name] if not (TEMPLATES / f).is_file()]
        return (False, f"{', '.join(missing)} not in {TEMPLATES}: apt-get install mricron-data") if missing else (True, "")

    return check


def _loader(name: str):
    def load(max_images: int, size: int, rng: np.random.Generator) -> SliceList:
        image_file, label_file = (TEMPLATES / f for f in SETS[name])
        image, spacing, affine = read_volume(image_file)
        labels, _, label_affine = read_volume(label_file)
        labels = labels.round().astype(np.int64)
        if labels.shape != image.shape:
            labels = labels_on_grid(labels, label_affine, affine, image.shape, str(label_file))
        elif not np.allclose(affine, label_affine, atol=1e-3):
            raise DataError("the atlas has the image's shape but another affine", label_file)
        skipped = Counter()
        slices = volume_slices(robust_scale(image), labels, max_images, (0, 1, 2), size, name, image_file.name, "MR", skipped,
                               spacing=spacing)
        return SliceList(slices, skipped)

    return load


register_slice_set(SliceSet(
    name="mricron-ch2better", modality="MR", masks="labels",
    summary="Colin27 'ch2better' T1 at 0.5 mm with the Brodmann-area atlas (same subject as colin27-aal)",
    licence="BSD-3 (Debian mricron-data, C. Rorden)", intensity="per volume, 1st-99th percentiles",
    available=_available("mricron-ch2better"), loader=_loader("mricron-ch2better"),
))
register_slice_set(SliceSet(
    name="mricron-inia19", modality="MR", masks="labels",
    summary="INIA19 rhesus macaque T1 template (0.5 mm, brain only) with NeuroMaps labels",
    licence="Debian mricron-data (BSD-3 package); INIA19 by Rohlfing et al. 2012: cite on use",
    intensity="per volume, 1st-99th percentiles", available=_available("mricron-inia19"), loader=_loader("mricron-inia19"),
))
