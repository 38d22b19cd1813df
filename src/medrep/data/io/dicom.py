"""DICOM files and series as samples, with physical geometry and without patient data.

Pixels are decoded by MONAI's ``PydicomReader`` (which also applies RescaleSlope/Intercept,
so CT comes out in HU). Two of its defaults do not fit medrep and are changed or replaced:

- ``swap_ij=True`` (MONAI's default) transposes every slice to (cols, rows) to mimic ITK; we pass
  ``swap_ij=False`` so a 2D image is (rows, cols) exactly like pydicom's ``pixel_array`` and
  ``spacing`` is PixelSpacing ``[row spacing, col spacing]`` in that order.
- For a series folder it sorts slices by InstanceNumber and takes the slice spacing from the
  z coordinate only (and ignores missing geometry). We sort slices ourselves by
  ImagePositionPatient projected on the slice normal, take the spacing from those projections,
  and refuse series that mix sizes, orientations or several SeriesInstanceUIDs.

Privacy: files are parsed with ``specific_tags`` limited to :data:`READ_TAGS`, so patient tags
(names, IDs, dates, institution, ...) are never even held in memory, and pydicom's warnings,
which can quote tag values, are silenced while reading.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from .sample import make_sample

#: The only DICOM attributes medrep reads: pixel encoding, geometry and rescale. Nothing else.
READ_TAGS = [
    "SOPClassUID",
    "Modality",
    "SeriesInstanceUID",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "NumberOfFrames",
    "SharedFunctionalGroupsSequence",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "PixelData",
    "FloatPixelData",
    "DoubleFloatPixelData",
]
HEADER_TAGS = ["SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "NumberOfFrames", "Rows", "Columns"]
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _monai_reader():
    """A fresh reader per call: MONAI's readers keep per-read state (file names), so none is shared."""
    from monai.data import PydicomReader  # imported lazily: MONAI takes seconds to import

    return PydicomReader(swap_ij=False, prune_metadata=True, specific_tags=READ_TAGS)


@contextlib.contextmanager
def _quiet():
    """Hide pydicom's and MONAI's warnings while reading: pydicom's may quote tag values."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _floats(ds, keyword: str) -> list[float] | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return [float(v) for v in (value if isinstance(value, Sequence) and not isinstance(value, str) else [value])]
    except (TypeError, ValueError):
        return None


def _shared_pixel_measures(ds) -> Any:
    try:
        return ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def _pixel_spacing(ds, where) -> tuple[list[float], bool]:
    """(row spacing, col spacing) in mm and whether it is known; 1.0 mm when the file has none."""
    for source in (ds, _shared_pixel_measures(ds)):
        if source is None:
            continue
        for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
            values = _floats(source, keyword)
            if values is not None:
                if len(values) != 2:
                    raise DataError(f"{keyword} must hold 2 values, got {values}", where)
                return values, True
    return [1.0, 1.0], False


def _slice_gap(ds) -> float | None:
    for source in (ds, _shared_pixel_measures(ds)):
        if source is None:
            continue
        for keyword in ("SpacingBetweenSlices", "SliceThickness"):
            values = _floats(source, keyword)
            if values:
                return values[0]
    return None


def _orientation(ds, where) -> np.ndarray | None:
    """(row cosine, col cosine, normal) as a 3x3 array, or None when the file has no orientation."""
    iop = _floats(ds, "ImageOrientationPatient")
    if iop is None:
        return None
    if len(iop) != 6 or not np.all(np.isfinite(iop)):
        raise DataError("ImageOrientationPatient must hold 6 finite values", where)
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:])
    normal = np.cross(row, col)
    if np.linalg.norm(normal) < 1e-3:
        raise DataError("ImageOrientationPatient has parallel row and column directions", where)
    return np.stack([row, col, normal / np.linalg.norm(normal)])


def _affine_ras(columns: Sequence[np.ndarray], origin: np.ndarray) -> list[list[float]]:
    """A voxel-index -> RAS mm affine from the LPS direction*spacing columns of each array axis."""
    affine = np.eye(4)
    for i, column in enumerate(columns):
        affine[:3, i] = column
    affine[:3, 3] = origin
    return (LPS_TO_RAS @ affine).tolist()


def _dcmread_header(path: str):
    import pydicom

    with _quiet():
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS)


def _decode(path: str, where) -> tuple[Any, np.ndarray]:
    """(dataset restricted to READ_TAGS, pixels rescaled by MONAI) for one file; DataError on any failure."""
    if not os.path.exists(path):
        raise DataError("no such file", where)
    if os.path.isdir(path):
        raise DataError("is a folder, not a DICOM file (use read_dicom_series)", where)
    reader = _monai_reader()
    try:
        with _quiet():
            ds = reader.read(path)
            if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
                raise DataError("DICOM file has no pixel data", where)
            array, _ = reader.get_data(ds)
    except DataError:
        raise
    except Exception as exc:  # pydicom, decoders and numpy raise many types for broken files
        raise DataError(f"cannot read DICOM file ({type(exc).__name__}: {exc})", where) from exc
    return ds, np.asarray(array)


def _to_gray(array: np.ndarray, ds, meta: dict) -> np.ndarray:
    """Colour DICOM (SamplesPerPixel 3, decoded to RGB) to luminance; others unchanged."""
    if int(ds.get("SamplesPerPixel", 1) or 1) > 1:
        array = array[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        meta["color_to_gray"] = True
    return array


def _rescale_meta(ds) -> dict[str, float] | None:
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is None and intercept is None:
        return None
    return {"slope": float(1.0 if slope is None else slope), "intercept": float(0.0 if intercept is None else intercept)}


def _invert_monochrome1(array: np.ndarray, ds, meta: dict) -> np.ndarray:
    """MONOCHROME1 shows low values bright; invert over the stored value range so bright means high."""
    photometric = str(ds.get("PhotometricInterpretation", "") or "")
    meta["photometric"] = photometric
    meta["inverted"] = photometric == "MONOCHROME1"
    if not meta["inverted"]:
        return array
    bits = int(ds.get("BitsStored", 16) or 16)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if int(ds.get("PixelRepresentation", 0) or 0) else (0, 2**bits - 1)
    rescale = meta.get("rescale") or {"slope": 1.0, "intercept": 0.0}
    lo, hi = (v * rescale["slope"] + rescale["intercept"] for v in (lo, hi))
    return (lo + hi) - array.astype(np.float32)


def read_dicom(path: str | Path, spatial_dims: int | None = None) -> dict[str, Any]:
    """One DICOM file as a sample: 2D (rows, cols), or 3D (frames, rows, cols) when multi-frame.

    Pixels agree with ``pydicom``'s ``pixel_array`` after RescaleSlope/Intercept;
    ``spacing`` is PixelSpacing (else ImagerPixelSpacing, else 1.0 with ``spacing_known=False``),
    plus the frame spacing first for multi-frame files.
    """
    where = str(path)
    ds, array = _decode(where, where)
    meta: dict[str, Any] = {"path": where, "format": "dicom", "modality": str(ds.get("Modality", "") or "")}
    rescale = _rescale_meta(ds)
    if rescale is not None:
        meta["rescale"] = rescale
    array = _invert_monochrome1(_to_gray(array, ds, meta), ds, meta)
    (dr, dc), known = _pixel_spacing(ds, where)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    orient = _orientation(ds, where)
    ipp = _floats(ds, "ImagePositionPatient")
    gap = _slice_gap(ds)
    if frames > 1:
        if gap is None:
            raise DataError("multi-frame DICOM without SpacingBetweenSlices or SliceThickness", where)
        spacing = [gap, dr, dc]
        meta["axes"] = ["frame", "row", "col"]
    else:
        spacing = [dr, dc]
        meta["axes"] = ["row", "col"]
    meta["spacing_known"] = known
    if orient is not None and ipp is not None and len(ipp) == 3:
        row_cos, col_cos, normal = orient
        in_plane = [col_cos * dr, row_cos * dc]  # axis "row" moves down a column, axis "col" along a row
        slice_step = normal * (gap or 1.0)
        cols = [slice_step, *in_plane] if frames > 1 else [*in_plane, slice_step]
        meta["affine"] = _affine_ras(cols, np.asarray(ipp))
        meta["origin"] = [row[3] for row in meta["affine"][:3]]
    return make_sample(array, spacing, meta, where, spatial_dims)


def dicom_files_in(folder: str | Path) -> list[str]:
    """Files in ``folder`` (not recursive) that look like DICOM: a .dcm/.dicom/.ima name or a DICM preamble."""
    import pydicom.misc

    out = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.is_file() or entry.name.startswith("."):
            continue
        lower = entry.name.lower()
        if lower.endswith((".dcm", ".dicom", ".ima")):
            out.append(entry.path)
        elif "." not in entry.name:
            try:
                if pydicom.misc.is_dicom(entry.path):
                    out.append(entry.path)
            except OSError:
                continue
    return out


def group_series(files: Sequence[str]) -> tuple[list[list[str]], list[str]]:
    """Split DICOM files into series (>= 2 files sharing a SeriesInstanceUID, each with a position)
    and single files (everything else, read one by one). Unreadable headers count as single files,
    so that the error surfaces when the file is read.
    """
    by_uid: dict[str, list[str]] = {}
    singles: list[str] = []
    for path in files:
        try:
            ds = _dcmread_header(path)
        except Exception:  # broken file: reported when read
            singles.append(path)
            continue
        uid = ds.get("SeriesInstanceUID")
        if uid and ds.get("ImagePositionPatient") is not None and int(ds.get("NumberOfFrames", 1) or 1) == 1:
            by_uid.setdefault(str(uid), []).append(path)
        else:
            singles.append(path)
    series = []
    for group in by_uid.values():
        if len(group) >= 2:
            series.append(group)
        else:
            singles.extend(group)
    return series, sorted(singles)


def read_dicom_files(files: Sequence[str], where: str | Path, spatial_dims: int | None = None) -> dict[str, Any]:
    """Stack the slices of one series into (slice, row, col), sorted along the slice normal.

    Slice spacing is the median gap between ImagePositionPatient projected on the normal; uneven
    gaps (a missing slice), duplicate positions, differing sizes, orientations or pixel spacings,
    and several SeriesInstanceUIDs are errors, since any of them would make the spacing a lie.
    """
    where = str(where)
    if not files:
        raise DataError("no DICOM files found", where)
    headers = []
    for path in files:
        try:
            headers.append(_dcmread_header(path))
        except Exception as exc:
            raise DataError(f"cannot read DICOM file ({type(exc).__name__}: {exc})", path) from exc
    uids = {str(h.get("SeriesInstanceUID", "")) for h in headers}
    if len(uids) > 1:
        raise DataError(f"holds {len(uids)} DICOM series; put each series in its own folder", where)
    decoded = [_decode(path, path) for path in files]
    datasets = [d for d, _ in decoded]
    shapes = {a.shape for _, a in decoded}
    if len(shapes) > 1:
        raise DataError(f"slices differ in size: {sorted(shapes)}", where)
    if int(datasets[0].get("NumberOfFrames", 1) or 1) > 1:
        raise DataError("a series folder must hold single-frame slices, found a multi-frame file", where)
    orient = _orientation(datasets[0], files[0])
    if orient is None:
        raise DataError("slices have no ImageOrientationPatient, cannot order them", where)
    for ds, path in zip(datasets, files):
        other = _orientation(ds, path)
        if other is None or not np.allclose(other, orient, atol=1e-4):
            raise DataError("slices differ in ImageOrientationPatient", where)
    spacings = {tuple(round(v, 6) for v in _pixel_spacing(ds, where)[0]) for ds in datasets}
    if len(spacings) > 1:
        raise DataError(f"slices differ in PixelSpacing: {sorted(spacings)}", where)
    positions = []
    for ds, path in zip(datasets, files):
        ipp = _floats(ds, "ImagePositionPatient")
        if ipp is None or len(ipp) != 3 or not np.all(np.isfinite(ipp)):
            raise DataError("slice has no valid ImagePositionPatient", path)
        positions.append(np.asarray(ipp))
    row_cos, col_cos, normal = orient
    depth = np.array([p @ normal for p in positions])
    order = np.argsort(depth, kind="stable")
    depth = depth[order]
    if len(files) > 1:
        gaps = np.diff(depth)
        if np.any(gaps <= 1e-6):
            raise DataError("two slices share the same position (zero slice spacing)", where)
        gap = float(np.median(gaps))
        if np.any(np.abs(gaps - gap) > 0.02 * gap + 1e-3):
            raise DataError(
                f"uneven slice spacing ({gaps.min():.4g} to {gaps.max():.4g} mm): a slice may be missing", where
            )
        step = (positions[order[-1]] - positions[order[0]]) / (len(files) - 1)
    else:
        gap = _slice_gap(datasets[0])
        if gap is None:
            raise DataError("a single-slice series needs SpacingBetweenSlices or SliceThickness", where)
        step = normal * gap
    first = datasets[order[0]]
    meta: dict[str, Any] = {
        "path": where,
        "format": "dicom_series",
        "modality": str(first.get("Modality", "") or ""),
        "axes": ["slice", "row", "col"],
        "num_files": len(files),
    }
    rescales = [_rescale_meta(ds) for ds in datasets]
    if rescales[order[0]] is not None:
        meta["rescale"] = rescales[order[0]]
    slices = []
    for i in order:
        slice_meta = {"rescale": rescales[i]} if rescales[i] else {}
        slices.append(_invert_monochrome1(_to_gray(decoded[i][1], datasets[i], slice_meta), datasets[i], slice_meta))
    for key in ("photometric", "inverted", "color_to_gray"):
        if key in slice_meta:
            meta[key] = slice_meta[key]
    volume = np.stack(slices, axis=0)
    (dr, dc), known = _pixel_spacing(first, where)
    meta["spacing_known"] = known
    meta["affine"] = _affine_ras([step, col_cos * dr, row_cos * dc], positions[order[0]])
    meta["origin"] = [row[3] for row in meta["affine"][:3]]
    return make_sample(volume, [gap, dr, dc], meta, where, spatial_dims)


def read_dicom_series(folder: str | Path, spatial_dims: int | None = None) -> dict[str, Any]:
    """All DICOM files directly in ``folder`` as one 3D volume (slice, row, col); see :func:`read_dicom_files`."""
    where = str(folder)
    if not os.path.exists(where):
        raise DataError("no such folder", where)
    if not os.path.isdir(where):
        raise DataError("not a folder (a DICOM series is read from the folder of its slices)", where)
    return read_dicom_files(dicom_files_in(where), where, spatial_dims)
