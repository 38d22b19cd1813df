"""Build the dataset a recipe's ``data`` section describes, from the source registry.

``data.source`` names a registered source (:mod:`medrep.data.sources`). An image source builds
its own dataset; with ``data.crops`` set it is wrapped in a
:class:`~medrep.data.datasets.crops.CropDataset` (K random crops per image with their centres in
mm); the crop dataset then owns the cache (``data.cache``, in ``data.crops.cache_dtype``, per
process or memory-mapped), so the images are not cached twice.

An image-report source gives its rows (the same rows retrieval reads) as an
:class:`~medrep.data.datasets.image_text_dataset.ImageTextDataset` (batch it with the source's
``collate``); texts stay strings, the method tokenises them. What a reader left out under
``data.skip_bad`` is in the dataset's ``reader_report`` (the reader's summary: studies per split,
skipped studies by reason).
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from ..errors import DataError
from .datasets.crop_config import check_crops
from .datasets.crops import CropDataset
from .datasets.image_text_dataset import ImageTextDataset
from .datasets.preprocess import Preprocess
from .sources import PRETRAIN_KINDS, Source, get_source, read_pairs, source_path


def build_dataset(data_cfg: dict[str, Any], split: str | None = None, transform=None, train: bool = True) -> Dataset:
    """A dataset for ``split`` (default ``data_cfg['split']``) of ``data_cfg['source']``.

    ``train`` matters to image-report sources only: True gives one random image of a study per
    access (pretraining), False all of them (retrieval pools them per study).
    """
    source = get_source(data_cfg.get("source", "medmnist"), PRETRAIN_KINDS)
    if source.kind == "mixed":  # each part reads its own split unless one is asked for
        return source.mixed(data_cfg, split)
    split = data_cfg.get("split") if split is None else split
    if source.kind == "tasks":
        if transform is not None or check_crops(data_cfg.get("crops")) is not None:
            raise DataError(f"task source {source.name!r} takes no transform or crops (data.crop is its joint crop)", "data.source")
        return source.task_samples(data_cfg, split)
    if source.kind == "image_text":
        if transform is not None or check_crops(data_cfg.get("crops")) is not None:
            raise DataError(f"image-report source {source.name!r} takes no transform or crops", "data.source")
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


def _images(data_cfg: dict[str, Any], source: Source, split: str | None, transform, cache: bool) -> Dataset:
    return source.images(
        data_cfg, split, preprocess=Preprocess.from_config(data_cfg), transform=transform,
        spatial_dims=data_cfg.get("spatial_dims"), skip_bad=bool(data_cfg.get("skip_bad", False)), cache=cache,
    )


def _image_text(data_cfg: dict[str, Any], source: Source, split: str | None, train: bool) -> ImageTextDataset:
    """Rows from the source's reader, then the split, as an :class:`ImageTextDataset`.

    ``skip_bad`` is the readers': studies without text or with a missing image are left out and
    counted (``reader_report["skipped"]``); a generic manifest is written by hand, so any bad row
    in it stays an error naming the row. Images are read lazily, so an unreadable file that
    exists still fails when it is first loaded.
    """
    rows, report = read_pairs(data_cfg)
    if split is not None and not any(r.split == split for r in rows):
        present = sorted({r.split for r in rows if r.split is not None})
        known = f"splits present: {', '.join(present)}" if present else "no study has a split; set data.split: null for all"
        raise DataError(f"no study of {source_path(source.name, data_cfg)} has split {split!r}; {known}", "data.split")
    dataset = ImageTextDataset(
        rows, preprocess=Preprocess.from_config(data_cfg), split=split, spatial_dims=data_cfg.get("spatial_dims"), train=train,
    )
    dataset.reader_report = report
    return dataset
