"""Build the dataset a recipe's ``data`` section describes (see ``medrep.recipe.DEFAULTS``).

With ``data.crops`` set, the image dataset is wrapped in a :class:`~medrep.data.crops.CropDataset`
(K random crops per image with their centres in mm); the crop dataset then owns the cache
(``data.cache``, in ``data.crops.cache_dtype``, per process or memory-mapped), so the images are
not cached twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..errors import DataError
from ..recipe import check_crops
from .crops import CropDataset
from .datasets import FolderDataset
from .manifest import ManifestDataset
from .medmnist import MedMNISTDataset
from .preprocess import Preprocess

SOURCES = ("medmnist", "folder", "manifest")


def build_dataset(data_cfg: dict[str, Any], split: str | None = None, transform=None) -> Dataset:
    """A dataset for ``split`` (default ``data_cfg['split']``) of ``data_cfg['source']``.

    A ``folder`` source has splits only as subfolders (``root/train``, ``root/test``, ...): a
    split is read from ``root/<split>`` when that folder exists, and asking for any other split is
    an error, so that evaluation never silently runs on the training images.
    """
    source = data_cfg.get("source", "medmnist")
    if source not in SOURCES:
        raise DataError(f"must be one of {', '.join(SOURCES)}, got {source!r}", "data.source")
    split = data_cfg.get("split") if split is None else split
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
