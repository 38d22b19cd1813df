"""``medpix-ct`` and ``medpix-mr``: the CT and MR images of MedPix 2.0 (``$MEDREP_DATA/medpix2``).

The images are PNG exports already windowed by their authors (no HU), of every body region and
plane, so each is scaled by its own percentiles. The modality comes from the ``Type`` field of
``Descriptions.json`` (read by :func:`~medrep.data.sources.medpix2.read_descriptions`). Research
use only; never redistribute.
"""

from __future__ import annotations

import numpy as np

from ..io.readers import read_image
from ..sources.medpix2 import read_descriptions
from .prepare import SliceList, is_empty, make_slice, pick, robust_scale
from .registry import SliceSet, files_here, register_slice_set, shared_path


def _root():
    return shared_path("medpix2")


def _available() -> tuple[bool, str]:
    root = _root()
    return files_here([None if root is None else root / "Descriptions.json"], "MedPix 2.0 folder medpix2/")


def _loader(kind: str, name: str):
    def load(max_images: int, size: int, rng: np.random.Generator) -> SliceList:
        root = _root()
        stems = [r["image"] for r in read_descriptions(root) if r.get("Type") == kind]
        out = SliceList()
        for i in pick(len(stems), max_images, rng):
            path = root / "images" / f"{stems[i]}.png"
            image = robust_scale(read_image(path, 2)["image"][0].numpy())
            if is_empty(image):
                out.skipped["empty image"] += 1
                continue
            out.append(make_slice(image, None, size, name, path.name, kind))
        return out

    return load


for _kind in ("CT", "MR"):
    _name = f"medpix-{_kind.lower()}"
    register_slice_set(SliceSet(
        name=_name, modality=_kind, masks=None,
        summary=f"MedPix 2.0 {_kind} images (PNG, all body regions and planes)",
        licence="MedPix 2.0 (Siragusa et al. 2025; NLM MedPix): research use, do not redistribute",
        intensity="per image, 1st-99th percentiles (PNG exports carry no HU)",
        available=_available, loader=_loader(_kind, _name),
    ))
