"""Write small image files in real formats (DICOM, NIfTI, PNG, MedMNIST .npz) for tests and demos.

Tests must not depend on data that may be absent, so they build their own files with the same
libraries real scanners' files are read with. The DICOM writers add fake patient tags on purpose,
so that tests can check that no patient data reaches a sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: Fake identifying values written into every synthetic DICOM file.
FAKE_PATIENT = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID-7731-SECRET",
    "PatientBirthDate": "19450203",
    "AccessionNumber": "ACC99881",
    "InstitutionName": "Saint Nowhere Hospital",
    "StudyDate": "20200102",
    "ReferringPhysicianName": "Who^Doctor",
}


def write_dicom(
    path: str | Path,
    pixels: np.ndarray,
    *,
    pixel_spacing: Sequence[float] | None = (0.7, 0.8),
    position: Sequence[float] | None = (0.0, 0.0, 0.0),
    orientation: Sequence[float] | None = (1, 0, 0, 0, 1, 0),
    slope: float | None = None,
    intercept: float | None = None,
    series_uid: str | None = None,
    instance: int = 1,
    modality: str = "CT",
    photometric: str = "MONOCHROME2",
    slice_thickness: float | None = None,
) -> Path:
    """One single-frame DICOM file from a 2D integer array (rows, cols) of stored values."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    pixels = np.asarray(pixels)
    if pixels.ndim != 2:
        raise ValueError("write_dicom takes a 2D (rows, cols) array")
    signed = np.issubdtype(pixels.dtype, np.signedinteger)
    pixels = pixels.astype(np.int16 if signed else np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    for key, value in FAKE_PATIENT.items():
        setattr(ds, key, value)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.Modality = modality
    ds.InstanceNumber = instance
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if signed else 0
    if pixel_spacing is not None:
        ds.PixelSpacing = [float(v) for v in pixel_spacing]
    if position is not None:
        ds.ImagePositionPatient = [float(v) for v in position]
    if orientation is not None:
        ds.ImageOrientationPatient = [float(v) for v in orientation]
    if slice_thickness is not None:
        ds.SliceThickness = slice_thickness
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_ct_series(
    folder: str | Path,
    volume: np.ndarray,
    *,
    slice_gap: float = 2.5,
    pixel_spacing: Sequence[float] = (0.7, 0.8),
    origin: Sequence[float] = (-10.0, 20.0, 30.0),
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    slope: float = 2.0,
    intercept: float = -1024.0,
    shuffle_seed: int | None = 0,
    series_uid: str | None = None,
) -> list[Path]:
    """A CT series: ``volume[k]`` (rows, cols) is the slice at ``origin + k * slice_gap * normal``.

    File names are shuffled and InstanceNumbers reversed, so a reader that sorted by either would
    stack the slices wrongly.
    """
    from pydicom.uid import generate_uid

    volume = np.asarray(volume)
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, col)
    uid = series_uid or generate_uid()
    order = np.arange(len(volume))
    if shuffle_seed is not None:
        np.random.default_rng(shuffle_seed).shuffle(order)
    paths = []
    for name_index, k in enumerate(order):
        position = np.asarray(origin, float) + k * slice_gap * normal
        paths.append(
            write_dicom(
                Path(folder) / f"img{name_index:03d}.dcm",
                volume[k],
                pixel_spacing=pixel_spacing,
                position=position,
                orientation=orientation,
                slope=slope,
                intercept=intercept,
                series_uid=uid,
                instance=len(volume) - int(k),
            )
        )
    return paths


def write_nifti(path: str | Path, array: np.ndarray, spacing: Sequence[float] = (0.5, 0.8, 2.0),
                origin: Sequence[float] | None = None, affine: np.ndarray | None = None) -> Path:
    """A NIfTI file with a diagonal affine of the given voxel sizes (anisotropic by default) and the
    world position of voxel 0 (``origin``, default 0); a 4x4 ``affine`` replaces both (a crop of a
    real volume keeps its axis directions), its column lengths becoming the voxel sizes."""
    import nibabel as nib

    array = np.asarray(array)
    if affine is not None:
        affine = np.asarray(affine, dtype=np.float64)
        spacing = np.linalg.norm(affine[:3, :3], axis=0).tolist()
    else:
        spatial = [float(s) for s in spacing][: min(array.ndim, 3)]
        affine = np.diag([*spatial, *([1.0] * (3 - len(spatial))), 1.0])
        if origin is not None:
            affine[:3, 3] = [float(v) for v in origin]
    img = nib.Nifti1Image(array, affine)
    img.header.set_zooms(tuple(float(s) for s in spacing[: array.ndim]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def write_png(path: str | Path, array: np.ndarray) -> Path:
    """A PNG from a uint8 (rows, cols) or (rows, cols, 3) array, or a uint16 (rows, cols) array."""
    from PIL import Image

    array = np.asarray(array)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_medmnist(path: str | Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """A MedMNIST-layout .npz: ``{split: (images, labels)}`` -> keys ``{split}_images``, ``{split}_labels``."""
    arrays = {}
    for split, (images, labels) in splits.items():
        arrays[f"{split}_images"] = np.asarray(images)
        arrays[f"{split}_labels"] = np.asarray(labels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


#: what :func:`write_example_image` writes per image dimensionality
EXAMPLE_SUFFIX = {2: ".png", 3: ".nii.gz"}


def write_example_image(path: str | Path, value: float, seed: int) -> Path:
    """One small image of brightness ``value`` plus seeded noise, for the sources' example trees:
    a 32x32 uint8 image (format from the suffix: PNG, JPEG...) or, for ``.nii.gz``, a 20x18x12
    float32 volume with 1x1x2.5 mm voxels (a real, anisotropic spacing)."""
    rng = np.random.default_rng(seed)
    if str(path).endswith(".nii.gz"):
        return write_nifti(path, (value + rng.normal(0, 10, (20, 18, 12))).astype(np.float32), (1.0, 1.0, 2.5))
    return write_png(path, np.clip(value + rng.integers(-20, 21, (32, 32)), 0, 255).astype(np.uint8))
