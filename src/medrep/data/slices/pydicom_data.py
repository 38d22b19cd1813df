"""Real DICOM images from the test files of ``pydicom`` and ``pydicom-data``, one set per modality.

The packages ship many files that are *one* acquisition in several encodings (``RG3_UNCR``,
``RG3_J2KR``, ``RG3_J2KI`` ...) or a crop of another (``examples_overlay`` of
``MR-SIEMENS-DICOM-WithOverlays``); each set below lists one file per distinct acquisition, in an
encoding medrep's reader decodes without extra plug-ins. The sets hold few images; they add
acquisitions and scanners, not volume. Files are found with
``pydicom.data.get_testdata_file(name, download=False)``: never downloaded.

Left out, and why:

- ``RG1_UNCR`` (a 1955 x 1841 chest radiograph): its PixelSpacing is ``0\\0``, which medrep's DICOM
  reader refuses as a broken header;
- palette-colour ultrasound (``OBXXXX1A``, ``gdcm-US-ALOKA-16``, ``examples_palette``): the reader
  returns palette indices, not intensities;
- multi-frame ultrasound without frame spacing (``examples_ybr_color``, ``color3d_jpeg_baseline``):
  the reader refuses multi-frame files without SliceThickness/SpacingBetweenSlices;
- ``eCT_Supplemental`` (enhanced CT): its rescale sits in a functional group that the reader does
  not apply, so its values are not HU (and look wrong in any window);
- ``ExplVR_BigEnd``: a flat grey test pattern, not an ultrasound image;
- JPEG lossless and JPEG-LS files, which need ``pylibjpeg``/``gdcm`` decoders; the 16 x 16 DICOMDIR
  thumbnails; secondary captures (``SC_*``, test patterns), SEG, RTDOSE.

Intensity: CT whose header gives RescaleSlope/Intercept (so values are HU) by a soft-tissue window
[-160, 240] HU (level 40, width 400); everything else by its own 1st-99th percentiles.
Multi-frame files (``emri_small``, 10 frames) give their frames as slices.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ...errors import DataError
from ..io.readers import read_image
from .prepare import SliceList, collect, is_empty, make_slice, robust_scale, volume_slices, window
from .registry import SliceSet, register_slice_set

CT_WINDOW = (-160.0, 240.0)
SETS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "pydicom-ct": ("CT", ("693_UNCR.dcm", "CT_small.dcm", "explicit_VR-UN.dcm"),
                   "3 CT slices (head, neck, an abdomen of a pancreas study)"),
    "pydicom-mr": ("MR", ("MR2_UNCR.dcm", "MR_small.dcm", "emri_small.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm"),
                   "4 MR acquisitions (shoulder 1024 px, a 64 px slice, a 10-frame enhanced MR, liver)"),
    "pydicom-us": ("US", ("US1_UNCR.dcm", "color-pl.dcm"),
                   "2 ultrasound images (RGB, to luminance; one a transoesophageal echocardiogram)"),
    "pydicom-xr": ("XR", ("RG3_UNCR.dcm",), "1 computed radiograph (distal tibia, 1760 px)"),
    "pydicom-nm": ("NM", ("JPEG2000_UNC.dcm",), "1 whole-body bone scintigraphy (1024 x 256)"),
}


def find(name: str) -> str | None:
    """The installed test file ``name``, or None (pydicom is never asked to download it)."""
    from pydicom.data import get_testdata_file

    try:
        return get_testdata_file(name, download=False)
    except (ValueError, OSError):
        return None


def _available(name: str):
    def check() -> tuple[bool, str]:
        missing = [f for f in SETS[name][1] if find(f) is None]
        return (False, f"{', '.join(missing)} not installed: pip install pydicom-data (or medrep[taco])") if missing else (True, "")

    return check


def _scale(pixels: np.ndarray, meta: dict) -> np.ndarray:
    return window(pixels, *CT_WINDOW) if meta.get("modality") == "CT" and meta.get("rescale") else robust_scale(pixels)


def _loader(name: str):
    modality, files, _ = SETS[name]

    def load(max_images: int, size: int, rng: np.random.Generator) -> SliceList:
        def emit(i: int, n: int, skipped: Counter) -> list:
            path = find(files[i])
            if path is None:
                raise DataError("test file not installed (pip install pydicom-data)", files[i])
            sample = read_image(path)
            scaled = _scale(sample["image"][0].numpy(), sample["meta"])
            if scaled.ndim == 3:  # the frames of a multi-frame file
                return volume_slices(scaled, None, n, (0,), size, name, files[i], modality, skipped, view=False)
            if is_empty(scaled):
                skipped["empty image"] += 1
                return []
            return [make_slice(scaled, None, size, name, files[i], modality)]

        return collect(len(files), max_images, rng, emit)

    return load


for _name, (_modality, _files, _summary) in SETS.items():
    register_slice_set(SliceSet(
        name=_name, modality=_modality, masks=None, summary=f"pydicom-data: {_summary}",
        licence="pydicom / pydicom-data test files (MIT package; images from public DICOM sample sets)",
        intensity=f"CT with rescale: window {CT_WINDOW} HU; others per image (or per multi-frame file), 1st-99th percentiles",
        available=_available(_name), loader=_loader(_name),
    ))
