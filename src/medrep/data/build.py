"""Build the dataset a recipe's ``data`` section describes (see ``medrep.recipe.DEFAULTS``).

With ``data.crops`` set, the image dataset is wrapped in a :class:`~medrep.data.crops.CropDataset`
(K random crops per image with their centres in mm); the crop dataset then owns the cache
(``data.cache``, in ``data.crops.cache_dtype``, per process or memory-mapped), so the images are
not cached twice.

Image-report sources (``image_text``, ``medpix2``, ``iu_xray``, ``mimic_cxr``) give an
:class:`~medrep.data.image_text_dataset.ImageTextDataset` (batch it with
:func:`~medrep.data.image_text_dataset.collate_image_text`); texts stay strings, the method
tokenises them. What a reader left out under ``data.skip_bad`` is in the dataset's
``reader_report`` (the reader's summary: studies per split, skipped studies by reason).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..errors import DataError
from ..recipe import IMAGE_SOURCES, IMAGE_TEXT_SOURCES, check_crops
from .crops import CropDataset
from .datasets import FolderDataset
from .image_text import read_image_text_manifest
from .image_text_dataset import ImageTextDataset
from .image_text_sources import iu_xray_pairs, medpix2_pairs, mimic_cxr_pairs
from .manifest import ManifestDataset
from .medmnist import MedMNISTDataset
from .preprocess import Preprocess

SOURCES = IMAGE_SOURCES + IMAGE_TEXT_SOURCES
#: where data.path defaults to under $MEDREP_DATA (the shared data's layout)
DEFAULT_PATHS = {"medpix2": "medpix2", "iu_xray": "iu_xray/annotation.json"}


def build_dataset(data_cfg: dict[str, Any], split: str | None = None, transform=None, train: bool = True) -> Dataset:
    """A dataset for ``split`` (default ``data_cfg['split']``) of ``data_cfg['source']``.

    A ``folder`` source has splits only as subfolders (``root/train``, ``root/test``, ...): a
    split is read from ``root/<split>`` when that folder exists, and asking for any other split is
    an error, so that evaluation never silently runs on the training images.

    ``train`` matters to image-report sources only: True gives one random image of a study per
    access (pretraining), False all of them (retrieval pools them per study).
    """
    source = data_cfg.get("source", "medmnist")
    if source not in SOURCES:
        raise DataError(f"must be one of {', '.join(SOURCES)}, got {source!r}", "data.source")
    split = data_cfg.get("split") if split is None else split
    if source in IMAGE_TEXT_SOURCES:
        if transform is not None or check_crops(data_cfg.get("crops")) is not None:
            raise DataError(f"image-report source {source!r} takes no transform or crops", "data.source")
        return _image_text(data_cfg, source, split, train)
    crops = check_crops(data_cfg.get("crops"), data_cfg.get("spatial_dims"))
    if crops is None:
        return _images(data_cfg, source, split, transform, cache=bool(data_cfg.get("cache", False)))
    cache = bool(data_cfg.get("cache", False))
    # skip_bad reads every image up front: keep them then, the crop dataset takes them over
    base = _images(data_cfg, source, split, None, cache=cache and bool(data_cfg.get("skip_bad", False)))
    dataset = CropDataset(
        base, k=crops["k"], size=crops["size"], crop_mm=crops["crop_mm"], min_foreground=crops["min_foreground"],
        threshold=crops["threshold"], max_tries=crops["max_tries"], cache=crops["cache"] if cache else None,
        cache_dtype=crops["cache_dtype"], cache_dir=crops["cache_dir"], skip_bad=bool(data_cfg.get("skip_bad", False)),
        transform=transform,
    )
    if getattr(base, "cache", False) and hasattr(base, "_cache"):
        base._cache.clear()  # the crop dataset has loaded what it kept; do not hold two copies
        base.cache = False
    return dataset


def _images(data_cfg: dict[str, Any], source: str, split: str | None, transform, cache: bool) -> Dataset:
    common = {
        "preprocess": Preprocess.from_config(data_cfg),
        "transform": transform,
        "spatial_dims": data_cfg.get("spatial_dims"),
        "skip_bad": bool(data_cfg.get("skip_bad", False)),
        "cache": cache,
    }
    path = data_cfg.get("path")
    if source == "medmnist":
        return MedMNISTDataset(path, split=split or "train", **common)
    if path is None:
        raise DataError(f"source {source!r} needs data.path", "data.path")
    if source == "manifest":
        return ManifestDataset(path, split=split, **common)
    root = Path(path)
    if split is not None and (root / split).is_dir():
        root = root / split
    elif split not in (None, data_cfg.get("split")):
        raise DataError(f"has no subfolder {split!r} for that split; use split subfolders or a manifest", path)
    return FolderDataset(root, class_folders=bool(data_cfg.get("class_folders", False)), **common)


def _image_text_path(data_cfg: dict[str, Any], source: str) -> Path:
    path = data_cfg.get("path")
    shared = os.environ.get("MEDREP_DATA")
    if path is None and source in DEFAULT_PATHS and shared:
        path = Path(shared) / DEFAULT_PATHS[source]
    if path is None:
        hint = f" (or set $MEDREP_DATA to a folder holding {DEFAULT_PATHS[source]})" if source in DEFAULT_PATHS else ""
        raise DataError(f"source {source!r} needs data.path{hint}", "data.path")
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"does not exist (source {source!r})", path)
    return path


def _image_text(data_cfg: dict[str, Any], source: str, split: str | None, train: bool) -> ImageTextDataset:
    """Rows from the source's reader, then the split, as an :class:`ImageTextDataset`.

    ``skip_bad`` is the readers': studies without text or with a missing image are left out and
    counted (``reader_report["skipped"]``); a generic manifest is written by hand, so any bad row
    in it stays an error naming the row. Images are read lazily, so an unreadable file that
    exists still fails when it is first loaded.
    """
    path, skip_bad = _image_text_path(data_cfg, source), bool(data_cfg.get("skip_bad", False))
    if source == "image_text":
        rows = read_image_text_manifest(path)
        report: dict[str, Any] = {"dataset": "image_text", "root": str(path), "skipped": {}, "examples": {}}
    elif source == "medpix2":
        rows, report = medpix2_pairs(path, field=data_cfg.get("text_field") or "caption", skip_bad=skip_bad)
    elif source == "iu_xray":
        image_root = data_cfg.get("image_root") or path.parent
        rows, report = iu_xray_pairs(path, image_root, skip_bad=skip_bad)
    else:
        rows, report = mimic_cxr_pairs(path, skip_bad=skip_bad)
    if split is not None and not any(r.split == split for r in rows):
        present = sorted({r.split for r in rows if r.split is not None})
        known = f"splits present: {', '.join(present)}" if present else "no study has a split; set data.split: null for all"
        raise DataError(f"no study of {path} has split {split!r}; {known}", "data.split")
    dataset = ImageTextDataset(
        rows, preprocess=Preprocess.from_config(data_cfg), split=split, spatial_dims=data_cfg.get("spatial_dims"), train=train,
    )
    dataset.reader_report = report
    return dataset
