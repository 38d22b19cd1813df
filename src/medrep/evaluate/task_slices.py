"""The images a task map is drawn on: 2D slices in [0, 1], each of one data set and one split.

:func:`load_task_slices` is the one place ``medrep evaluate taskmap`` turns its data arguments into
slices. Today it reads image sources (MedMNIST ``.npz`` files, image folders, manifests) through
:func:`medrep.data.build_dataset`; the registry of slice sets (``medrep.data.slices``) plugs in here
as a second way to name data, and the analysis itself only sees slice records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import DataError
from ..tasks.pairs import SliceLike

SPLITS = ("train", "test")
#: a folder without train/ and test/ subfolders holds out every HOLDOUT_EVERY-th image (sorted order)
HOLDOUT_EVERY = 4


@dataclass(frozen=True)
class TaskSlice:
    """A :class:`~medrep.tasks.pairs.SliceLike` with its split: ``test`` images are held out (the map,
    the kNN queries and the sweeps), ``train`` ones fit the kNN task probe."""

    image: np.ndarray  # (H, W) float32 in [0, 1]
    mask: np.ndarray | None
    source: str
    id: str
    split: str


def slice_splits(slices: Sequence[SliceLike], splits: Sequence[str] | None = None) -> list[str]:
    """Each slice's split: ``splits`` when given, else each record's ``split`` attribute."""
    if splits is None:
        if not all(hasattr(s, "split") for s in slices):
            raise DataError("slices carry no split; give splits (train or test per slice)", "splits")
        splits = [s.split for s in slices]
    splits = [str(s) for s in splits]
    if len(splits) != len(slices):
        raise DataError(f"{len(splits)} splits for {len(slices)} slices", "splits")
    bad = sorted(set(splits) - set(SPLITS))
    if bad:
        raise DataError(f"splits must be train or test, got {bad}", "splits")
    return splits


def load_task_slices(paths: Sequence[str | Path], size: int = 64, max_images: int | None = 64, seed: int = 0,
                     progress: bool = True) -> list[TaskSlice]:
    """Slices of every data path, ``max_images`` per split per path (a seeded choice; None: all): the
    image source guessed from the path (or ``medmnist``), gray, min-max scaled to [0, 1] and resized to
    ``size`` x ``size``. The data set is the file or folder name (made unique). A folder without
    ``train``/``test`` subfolders holds out every 4th image. No masks: image sources carry none."""
    from .frozen import data_config

    out: list[TaskSlice] = []
    names: list[str] = []
    for path in paths:
        data = data_config(None, str(path), size=[size])
        data.update(spatial_dims=2, intensity="minmax", class_folders=False, cache=False)
        name = _unique(Path(str(path).rstrip("/\\")).name.split(".")[0] or "data", names)
        names.append(name)
        for split, dataset, index in _splits(data, max_images, seed):
            for i in tqdm(index, desc=f"{name} {split}", unit="image", disable=not progress):
                image = np.asarray(dataset[int(i)]["image"], dtype=np.float32)
                if image.ndim != 3:
                    raise DataError(f"taskmap reads 2D images, got an image of shape {image.shape[1:]}", str(path))
                out.append(TaskSlice(np.clip(image.mean(axis=0), 0.0, 1.0), None, name, f"{name}/{split}/{int(i)}", split))
    return out


def _splits(data: dict, max_images: int | None, seed: int):
    """``(split, dataset, indices)`` for train and test."""
    from ..data import build_dataset

    root = Path(str(data["path"]))
    if data["source"] == "folder" and not all((root / s).is_dir() for s in SPLITS):
        whole = build_dataset({**data, "split": None}, split=None)
        index = np.arange(len(whole))
        parts = {"train": index[index % HOLDOUT_EVERY != HOLDOUT_EVERY - 1], "test": index[index % HOLDOUT_EVERY == HOLDOUT_EVERY - 1]}
        return [(s, whole, _choose(parts[s], max_images, seed)) for s in SPLITS]
    out = []
    for split in SPLITS:
        dataset = build_dataset(data, split=split)
        out.append((split, dataset, _choose(np.arange(len(dataset)), max_images, seed)))
    return out


def _choose(index: np.ndarray, max_images: int | None, seed: int) -> np.ndarray:
    if not len(index):
        raise DataError("a split has no images", "data")
    if max_images is None or len(index) <= max_images:
        return index
    return np.sort(np.random.default_rng(seed).choice(index, max_images, replace=False))


def _unique(name: str, taken: Sequence[str]) -> str:
    if name not in taken:
        return name
    n = 2
    while f"{name}_{n}" in taken:
        n += 1
    return f"{name}_{n}"
