"""Reading medical images into sample dicts, and datasets over them.

A sample is ``{"image": (1, *spatial) float32, "spacing": (spatial_dims,) float32 mm,
"meta": dict of whitelisted non-identifying keys}`` plus ``label`` (int64) when known;
see :mod:`medrep.data.sample`. MONAI is imported lazily, on the first read.
"""

from .build import build_dataset
from .collate import collate
from .crops import CropDataset, CropSpec, index_to_world, sample_crops, world_of
from .datasets import FileDataset, FolderDataset, ImageRecord, scan_folder
from .intensity import ct_window, minmax_scale, percentile_scale
from .manifest import ManifestDataset, ManifestRow, read_manifest
from .medmnist import MedMNISTDataset, default_medmnist_path
from .preprocess import Preprocess, resize
from .readers import read_dicom, read_dicom_series, read_image, read_nifti, read_png
from .sample import META_KEYS

__all__ = [
    "META_KEYS",
    "CropDataset",
    "CropSpec",
    "FileDataset",
    "FolderDataset",
    "ImageRecord",
    "ManifestDataset",
    "ManifestRow",
    "MedMNISTDataset",
    "Preprocess",
    "build_dataset",
    "collate",
    "ct_window",
    "index_to_world",
    "default_medmnist_path",
    "minmax_scale",
    "percentile_scale",
    "read_dicom",
    "read_dicom_series",
    "read_image",
    "read_manifest",
    "read_nifti",
    "read_png",
    "resize",
    "sample_crops",
    "scan_folder",
    "world_of",
]
