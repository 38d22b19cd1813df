"""``folder``: every readable image under a folder (:class:`~medrep.data.FolderDataset`).

A folder has splits only as subfolders (``root/train``, ``root/test``, ...): a split is read from
``root/<split>`` when that folder exists, and asking for any other split than the recipe's is an
error, so that evaluation never silently runs on the training images. ``data.class_folders``
takes labels from class-named subfolders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import DataError
from ..datasets.files import FolderDataset
from ..synthetic import EXAMPLE_SUFFIX, write_example_image
from .registry import Source, register_source, source_path


def folder_images(data: dict[str, Any], split: str | None, **common) -> FolderDataset:
    root = source_path("folder", data)
    if root.is_file():  # one image file: no splits
        return FolderDataset(root, class_folders=bool(data.get("class_folders", False)), **common)
    if split is not None and (root / split).is_dir():
        root = root / split
    elif split not in (None, data.get("split")):
        raise DataError(f"has no subfolder {split!r} for that split; use split subfolders or a manifest", str(data["path"]))
    return FolderDataset(root, class_folders=bool(data.get("class_folders", False)), **common)


def folder_example(root: Path, spatial_dims: int = 2) -> dict[str, Any]:
    """``root/<split>/<class>/<n>.png`` (or ``.nii.gz`` volumes): 6 train and 2 test images, classes
    ``bright`` and ``dark`` as class folders."""
    for i in range(8):
        split, word = "train" if i < 6 else "test", ("bright", "dark")[i % 2]
        write_example_image(Path(root) / split / word / f"{i}{EXAMPLE_SUFFIX[spatial_dims]}", 200 if word == "bright" else 40, i)
    return {"source": "folder", "path": str(root), "class_folders": True}


register_source(Source(
    name="folder", kind="image", summary="a folder of images (PNG, JPEG, NIfTI, DICOM); split subfolders optional",
    images=folder_images, options={"class_folders": False},  # labels from class-named subfolders
    matches=Path.is_dir, example=folder_example,
))
