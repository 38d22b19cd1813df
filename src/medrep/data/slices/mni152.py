"""``mni152``: nilearn's MNI152 (ICBM 2009a, symmetric) T1 template at 1 mm with a *derived*
tissue map: 0 background, 1 grey matter, 2 white matter, where the larger of nilearn's grey and
white matter probability maps exceeds 0.5 (the hard map is our rule; the probability maps are
nilearn's). The files ship inside the nilearn wheel (``nilearn/datasets/data``) and are read in
place, without importing nilearn (which pulls pandas and scikit-learn) and without any download.
The template is an average of 152 brains: smoother than any one scan.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np

from ...errors import DataError
from .prepare import SliceList, read_volume, robust_scale, volume_slices
from .registry import SliceSet, register_slice_set

NAME = "mni152"
FILES = {k: f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}


def data_dir() -> Path | None:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def _available() -> tuple[bool, str]:
    folder = data_dir()
    if folder is None:
        return False, "pip install nilearn (or medrep[taco])"
    missing = [f for f in FILES.values() if not (folder / f).is_file()]
    return (False, f"{', '.join(missing)} not in {folder}: this nilearn does not ship the template") if missing else (True, "")


def tissue_map(gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """0 background, 1 grey, 2 white matter: the larger map where it is above half its full scale."""
    full = max(float(gm.max()), float(wm.max()), 1e-6)
    labels = np.where(wm > gm, 2, 1).astype(np.int64)
    return np.where(np.maximum(gm, wm) > 0.5 * full, labels, 0)


def load(max_images: int, size: int, rng: np.random.Generator) -> SliceList:
    folder = data_dir()
    t1, spacing, _ = read_volume(folder / FILES["t1"])
    gm, wm = read_volume(folder / FILES["gm"])[0], read_volume(folder / FILES["wm"])[0]
    if gm.shape != t1.shape or wm.shape != t1.shape:
        raise DataError(f"tissue maps {gm.shape}, {wm.shape} are not on the template's grid {t1.shape}", folder / FILES["gm"])
    skipped = Counter()
    slices = volume_slices(robust_scale(t1), tissue_map(gm, wm), max_images, (0, 1, 2), size, NAME, FILES["t1"], "MR",
                           skipped, spacing=spacing)
    return SliceList(slices, skipped)


register_slice_set(SliceSet(
    name=NAME, modality="MR", masks="derived", summary="MNI152 2009a T1 template (nilearn); masks: grey / white matter",
    licence="MNI ICBM 2009a (free with copyright notice), shipped by nilearn (BSD-3)",
    intensity="per volume, 1st-99th percentiles", available=_available, loader=load,
))
