"""The sample dict every reader and dataset returns, and the checks that make it trustworthy.

A sample is a plain dict:

- ``image``: float32 tensor, channel-first, ``(1, H, W)`` in 2D or ``(1, D0, D1, D2)`` in 3D.
- ``spacing``: float32 tensor of length ``spatial_dims``; ``spacing[i]`` is the voxel size in mm
  along spatial axis ``i`` of ``image`` (that is, along ``image.shape[1 + i]``).
- ``meta``: a plain dict built only from :data:`META_KEYS` (no DICOM tag is ever copied through
  wholesale, so patient-identifying tags cannot leak into batches, logs or checkpoints).
- ``label`` (datasets only, when known): int64 scalar tensor.

Keeping the contract in one place lets every reader share the same validation: finite voxels,
positive spacing and the expected dimensionality, each failing with a :class:`DataError` that
names the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import DataError

#: The only keys a sample's ``meta`` may hold. Each is technical and non-identifying.
META_KEYS = frozenset(
    {
        "path",  # the file or series folder read
        "format",  # dicom | dicom_series | nifti | png | jpeg | tiff | bmp | medmnist
        "spatial_shape",  # list[int], shape of the image without its channel axis
        "axes",  # names of the spatial axes in order, e.g. ["row", "col"] or ["slice", "row", "col"]
        "affine",  # 4x4 list of floats: voxel index -> RAS millimetres, when the file defines it
        "origin",  # list of 3 floats: RAS position in mm of voxel 0, when the file defines it
        "spacing_known",  # False when the format has no physical spacing and 1.0 mm was assumed
        "modality",  # DICOM Modality (CT, MR, CR, ...)
        "photometric",  # DICOM PhotometricInterpretation
        "inverted",  # True when MONOCHROME1 was inverted so that bright means high
        "rescale",  # {"slope": float, "intercept": float} applied to DICOM pixels
        "num_files",  # slices stacked into a DICOM series volume
        "color_to_gray",  # True when an RGB(A) image was converted to luminance
        "split",  # data split the sample came from
        "index",  # position in its source (npz array row, dataset index)
        "intensity",  # intensity normalisation applied by preprocessing
        "original_shape",  # spatial shape before preprocessing resized it
        "original_spacing",  # spacing before preprocessing resized it
    }
)


def clean_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Keep only whitelisted keys; a guard so that no reader can pass raw header fields on."""
    return {k: v for k, v in meta.items() if k in META_KEYS}


def make_sample(
    array: np.ndarray,
    spacing: Any,
    meta: dict[str, Any],
    where: str | Path,
    spatial_dims: int | None = None,
) -> dict[str, Any]:
    """Validate a spatial array (no channel axis) and its spacing, and build the sample dict.

    Raises :class:`DataError` naming ``where`` for a wrong dimensionality, non-finite voxels or
    a spacing that is not finite and strictly positive.
    """
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise DataError(f"expected a 2D or 3D image, got an array of shape {tuple(array.shape)}", where)
    if spatial_dims is not None and array.ndim != spatial_dims:
        raise DataError(
            f"expected a {spatial_dims}D image, the file holds a {array.ndim}D image of shape {tuple(array.shape)}",
            where,
        )
    if min(array.shape) < 1:
        raise DataError(f"empty image of shape {tuple(array.shape)}", where)
    spacing_arr = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if spacing_arr.size != array.ndim:
        raise DataError(f"spacing {spacing_arr.tolist()} does not match a {array.ndim}D image", where)
    if not np.all(np.isfinite(spacing_arr)) or np.any(spacing_arr <= 0):
        raise DataError(f"spacing must be finite and positive, got {spacing_arr.tolist()} mm", where)
    image = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if not bool(torch.isfinite(image).all()):
        bad = int((~torch.isfinite(image)).sum())
        raise DataError(f"image holds {bad} NaN or infinite voxel(s)", where)
    meta = clean_meta({**meta, "spatial_shape": list(array.shape)})
    return {
        "image": image.unsqueeze(0),
        "spacing": torch.tensor(spacing_arr, dtype=torch.float32),
        "meta": meta,
    }


def spatial_dims_of(sample: dict[str, Any]) -> int:
    """2 or 3: the number of spatial axes of a sample's channel-first image."""
    return sample["image"].ndim - 1
