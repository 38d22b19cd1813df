"""Reading medical images into sample dicts, and datasets over them.

A sample is ``{"image": (1, *spatial) float32, "spacing": (spatial_dims,) float32 mm,
"meta": dict of whitelisted non-identifying keys}`` plus ``label`` (int64) when known;
see :mod:`medrep.data.io.sample`. MONAI is imported lazily, on the first read.

Layout: :mod:`.io` reads files (images, reports, atlas labels); :mod:`.datasets` holds the generic
datasets (files, folders, manifests, crops, image-report rows, segmentation folders) and batching;
:mod:`.sources` holds the public data sets, one module each, in a registry that the recipe checks,
the engine, the CLI and the evaluations ask (:func:`get_source`). This package imports neither
``medrep.recipe`` nor ``medrep.evaluate``.
"""

from .build import build_dataset
from .datasets.collate import collate
from .datasets.crops import CropDataset, CropSpec, index_to_world, sample_crops, world_of
from .datasets.files import FileDataset, FolderDataset, ImageRecord, scan_folder
from .datasets.manifest import ManifestDataset, ManifestRow, read_manifest
from .datasets.preprocess import Preprocess, resize
from .io.intensity import ct_window, minmax_scale, percentile_scale
from .io.readers import read_dicom, read_dicom_series, read_image, read_nifti, read_png
from .io.sample import META_KEYS
from .sources import Source, get_source, register_source, source_names
from .sources.medmnist import MedMNISTDataset, default_medmnist_path

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
    "Source",
    "build_dataset",
    "collate",
    "ct_window",
    "default_medmnist_path",
    "get_source",
    "index_to_world",
    "minmax_scale",
    "percentile_scale",
    "read_dicom",
    "read_dicom_series",
    "read_image",
    "read_manifest",
    "read_nifti",
    "read_png",
    "register_source",
    "resize",
    "sample_crops",
    "scan_folder",
    "source_names",
    "world_of",
]
