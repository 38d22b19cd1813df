"""Read one image file (or DICOM series folder) into a sample dict, whatever its format.

Every reader returns ``{"image", "spacing", "meta"}`` as described in :mod:`medrep.data.io.sample`
and turns every failure (missing, corrupt or truncated file, NaN voxels, bad spacing, wrong
dimensionality) into a :class:`~medrep.errors.DataError` that names the file, so one bad file
in a data set of thousands is found at once.

Axis conventions, per format:

- PNG/JPEG and 2D DICOM: (rows, cols) as displayed. MONAI's ``PILReader`` transposes to
  (cols, rows) by default (``reverse_indexing=True``); we pass ``reverse_indexing=False``.
- DICOM series: (slice, row, col), slices ordered along the slice normal (see :mod:`.dicom`).
- NIfTI: the stored voxel order (i, j, k), not reoriented; ``spacing`` is the length of each
  affine column (the pixdim of a consistent header) and ``meta["affine"]`` maps (i, j, k) to RAS mm.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from .dicom import read_dicom, read_dicom_series
from .sample import make_sample

__all__ = ["read_dicom", "read_dicom_series", "read_nifti", "read_png", "read_image", "image_format", "IMAGE_SUFFIXES"]

PIL_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff", ".bmp": "bmp"}
NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
#: File name endings that :func:`read_image` reads (plus extensionless DICOM files and series folders).
IMAGE_SUFFIXES = tuple(PIL_SUFFIXES) + NIFTI_SUFFIXES + DICOM_SUFFIXES
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as PIL's "L" conversion


def _pil_to_supported(img):
    """Bring PIL's modes to gray, gray+alpha or RGB(A) that numpy can turn into luminance."""
    if img.mode in ("LA", "La"):
        return img.getchannel(0)
    if img.mode == "1":
        return img.convert("L")
    if img.mode not in ("L", "I", "I;16", "I;16B", "I;16L", "F", "RGB", "RGBA"):
        return img.convert("RGB")
    return img


def _pil_reader():
    """Fresh per call, as MONAI's readers keep per-read state."""
    from monai.data import PILReader  # lazy: MONAI takes seconds to import

    return PILReader(converter=_pil_to_supported, reverse_indexing=False)


def _nibabel_reader():
    from monai.data import NibabelReader

    return NibabelReader(as_closest_canonical=False, squeeze_non_spatial_dims=False)


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise DataError("no such file", path)
    if os.path.isdir(path):
        raise DataError("is a folder, expected an image file", path)


def _monai_read(reader, where: str, what: str) -> tuple[Any, np.ndarray]:
    """Read with a MONAI reader; any failure becomes a DataError naming the file (PIL, nibabel,
    gzip and numpy raise many exception types for broken or truncated files)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = reader.read(where)
            array, _ = reader.get_data(img)
        return img, np.asarray(array)
    except Exception as exc:
        raise DataError(f"cannot read {what} ({type(exc).__name__}: {exc})", where) from exc


def read_png(path: str | Path, spatial_dims: int | None = None) -> dict[str, Any]:
    """A PNG/JPEG/TIFF/BMP image as a 2D (rows, cols) sample; colour becomes luminance.

    These formats carry no physical spacing: spacing is 1.0 per axis and ``spacing_known`` False.
    16-bit gray PNGs keep their full range.
    """
    where = str(path)
    _check_file(where)
    _, array = _monai_read(_pil_reader(), where, "image file")
    meta: dict[str, Any] = {
        "path": where,
        "format": PIL_SUFFIXES.get(Path(where).suffix.lower(), "image"),
        "axes": ["row", "col"],
        "spacing_known": False,
    }
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = array[..., :3].astype(np.float32) @ LUMA
        meta["color_to_gray"] = True
    return make_sample(array, [1.0] * array.ndim, meta, where, spatial_dims)


def _raw_pixdim(img, where: str) -> np.ndarray:
    """pixdim as stored: nibabel's loader silently turns zero voxel sizes into 1 and negative ones
    into their absolute value, which would hide a broken header."""
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(where) as fobj:
            header = type(img.header).from_fileobj(fobj, check=False)
        return np.asarray(header["pixdim"], dtype=np.float64)
    except Exception as exc:
        raise DataError(f"cannot read NIfTI header ({type(exc).__name__}: {exc})", where) from exc


def read_nifti(path: str | Path, spatial_dims: int | None = None) -> dict[str, Any]:
    """A NIfTI (.nii / .nii.gz) volume in stored voxel order, scaled by scl_slope/scl_inter.

    A trailing axis of length 1 is dropped (a 4D file with one volume, or an (X, Y, 1) image
    when ``spatial_dims`` is 2); true 4D data (time series, several channels) is refused.
    """
    where = str(path)
    _check_file(where)
    img, array = _monai_read(_nibabel_reader(), where, "NIfTI file")
    affine = np.asarray(img.affine, dtype=np.float64)
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim > 3:
        raise DataError(f"4D NIfTI of shape {tuple(array.shape)}: medrep reads one 2D or 3D volume per file", where)
    if array.ndim == 3 and spatial_dims == 2 and array.shape[-1] == 1:
        array = array[..., 0]
    if not np.all(np.isfinite(affine)):
        raise DataError("the NIfTI affine holds NaN or infinite values", where)
    pixdim = _raw_pixdim(img, where)[1 : array.ndim + 1]
    if not np.all(np.isfinite(pixdim)) or np.any(pixdim <= 0):
        raise DataError(f"voxel size (pixdim) must be positive, the file says {pixdim.tolist()} mm", where)
    spacing = np.linalg.norm(affine[:3, : array.ndim], axis=0)
    meta = {
        "path": where,
        "format": "nifti",
        "axes": ["i", "j", "k"][: array.ndim],
        "affine": affine.tolist(),
        "origin": affine[:3, 3].tolist(),
        "spacing_known": True,
    }
    return make_sample(array, spacing, meta, where, spatial_dims)


def image_format(path: str | Path) -> str | None:
    """``dicom_series`` | ``dicom`` | ``nifti`` | ``pil``, or None when medrep cannot read it."""
    path = Path(path)
    if path.is_dir():
        return "dicom_series"
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(DICOM_SUFFIXES):
        return "dicom"
    if path.suffix.lower() in PIL_SUFFIXES:
        return "pil"
    if "." not in path.name and path.is_file():
        import pydicom.misc

        try:
            return "dicom" if pydicom.misc.is_dicom(path) else None
        except OSError:
            return None
    return None


def read_image(path: str | Path, spatial_dims: int | None = None) -> dict[str, Any]:
    """Read any supported image: a folder is a DICOM series, files go by their extension.

    ``spatial_dims`` (2 or 3), when given, is checked: a file of another dimensionality raises.
    """
    where = str(path)
    if not os.path.exists(where):
        raise DataError("no such file or folder", where)
    kind = image_format(where)
    if kind is None:
        raise DataError(f"unknown image format; medrep reads {', '.join(IMAGE_SUFFIXES)} and DICOM folders", where)
    reader = {"dicom_series": read_dicom_series, "dicom": read_dicom, "nifti": read_nifti, "pil": read_png}[kind]
    return reader(where, spatial_dims=spatial_dims)
