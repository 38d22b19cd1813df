"""A slice set from the user's own ``--data``: a folder of images, a MedMNIST-style ``.npz`` or a
manifest, read through medrep's image sources (:mod:`medrep.data.sources`), without masks.

Each path is read by the source named, else the one it looks like
(:func:`~medrep.data.sources.guess_source`); a MedMNIST file gives its train split. 2D images are
scaled by their own 1st-99th percentiles; a volume is scaled once and gives evenly spaced slices
along its three axes (see :mod:`.prepare`). The modality is unknown unless given (``OT``, DICOM's
"other").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...errors import DataError
from .prepare import SliceList, collect, is_empty, make_slice, robust_scale, volume_slices
from .registry import SliceSet


def _datasets(paths: list[Path], source: str | None) -> list:
    from ..sources import get_source, guess_source

    out = []
    for path in paths:
        found = get_source(source or guess_source(path), "image", where="--source")
        out.append(found.images({"source": found.name, "path": str(path)}, None))
    return out


def user_slice_set(paths: str | Path | Sequence[str | Path], source: str | None = None, modality: str = "OT",
                   name: str = "user") -> SliceSet:
    """The images under ``paths`` as a :class:`SliceSet` (not registered: it lives as long as the run)."""
    paths = [Path(p).expanduser() for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not paths:
        raise DataError("no data paths given", "--data")

    def available() -> tuple[bool, str]:
        missing = [str(p) for p in paths if not p.exists()]
        return (False, f"no such file or folder: {', '.join(missing)}") if missing else (True, "")

    def load(max_images: int, size: int, rng: np.random.Generator) -> SliceList:
        items = [(ds, i) for ds in _datasets(paths, source) for i in range(len(ds))]

        def emit(k: int, n: int, skipped: Counter) -> list:
            ds, i = items[k]
            sample = ds[i]
            pixels = np.asarray(sample["image"][0], dtype=np.float32)
            where = str(sample.get("meta", {}).get("path", paths[0]))
            item_id = f"{Path(where).name}[{i}]" if sample.get("meta", {}).get("format") == "medmnist" else Path(where).name
            scaled = robust_scale(pixels)
            if scaled.ndim == 3:
                spacing = tuple(float(s) for s in sample["spacing"])
                return volume_slices(scaled, None, n, (0, 1, 2), size, name, item_id, modality, skipped,
                                     view=sample["meta"].get("format") == "nifti", spacing=spacing)
            if is_empty(scaled):
                skipped["empty image"] += 1
                return []
            return [make_slice(scaled, None, size, name, item_id, modality)]

        return collect(len(items), max_images, rng, emit)

    return SliceSet(name=name, modality=modality, masks=None, summary=f"user data: {', '.join(map(str, paths))}",
                    licence="the user's", intensity="per image (or volume), 1st-99th percentiles",
                    available=available, loader=load)
