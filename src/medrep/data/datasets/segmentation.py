"""Labelled image/mask pairs for dense evaluation, 2D and 3D, read from a folder into memory.

Layouts (a folder holds one of them, or ``train/`` and ``test/`` subfolders that each hold one):

- **MSD / nnU-Net**: ``imagesTr/*.nii.gz`` + ``labelsTr/*.nii.gz`` with the same names (an
  nnU-Net channel suffix ``_0000`` on the image is accepted). ``imagesTs/`` has no labels and is
  ignored.
- **2D folders**: ``images/*`` + ``masks/*`` (PNG or NIfTI), matched by name without extension.

Every pair is checked when read and a bad one raises a :class:`~medrep.errors.DataError` naming
the file: an image without mask or a mask without image, a mask whose shape differs from the
image's, non-integer mask values, labels outside ``[0, num_classes)``, NaN/inf voxels, unreadable
files. Hidden files (``._case.nii.gz`` from macOS archives, as in the MSD tarballs) are ignored.

Without split subfolders the cases are split once, by a fixed seed (0), into train and test
(``test_fraction`` of them, at least one). Images are scaled to [0, 1] by their own 5th-95th
intensity percentiles (one file = one scaling, before any slicing), so that no statistic crosses
from test to train. A 3D set read for a 2D model becomes slices across ``slice_axis``; the
slices of one volume keep its name as their ``case`` so Dice is computed per volume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from ..io.intensity import percentile_scale
from ..io.readers import NIFTI_SUFFIXES, PIL_SUFFIXES, read_image

LAYOUTS = (("imagesTr", "labelsTr"), ("images", "masks"))
PERCENTILES = (5.0, 95.0)


@dataclass
class SegItem:
    """One training or test unit: a scaled image and its integer mask (same spatial shape).

    ``name`` says where it came from (file, and slice when cut from a volume) for messages;
    ``case`` groups the slices of one volume so that Dice is computed per volume.
    """

    image: np.ndarray
    mask: np.ndarray
    name: str
    case: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.case = self.case or self.name


@dataclass
class SegTask:
    """Train and test items of one labelled data set, and how they were made."""

    train: list[SegItem]
    test: list[SegItem]
    num_classes: int
    class_names: list[str]
    spatial_dims: int
    info: dict[str, Any]


def _stem(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _image_files(folder: Path) -> dict[str, Path]:
    """Readable files by stem; two files with one stem are ambiguous and refused."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        name = path.name
        if name.startswith(".") or not path.is_file():
            continue
        if not (name.lower().endswith(NIFTI_SUFFIXES) or path.suffix.lower() in PIL_SUFFIXES):
            continue
        stem = _stem(name)
        if stem in found:
            raise DataError(f"two files named {stem!r} ({found[stem].name} and {name}): cannot tell which to pair", path)
        found[stem] = path
    return found


def pair_files(images_dir: Path, masks_dir: Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs matched by name; any file left without its partner is an error."""
    images, masks = _image_files(images_dir), _image_files(masks_dir)
    if not images:
        raise DataError("no image files (NIfTI or PNG) here", images_dir)
    pairs, used = [], set()
    for stem, image in images.items():
        key = stem if stem in masks else stem[:-5] if stem.endswith("_0000") and stem[:-5] in masks else None
        if key is None:
            raise DataError(f"image has no mask: expected {masks_dir / stem}.* beside it", image)
        pairs.append((image, masks[key]))
        used.add(key)
    for stem, mask in masks.items():
        if stem not in used:
            raise DataError(f"mask has no image: expected {images_dir / stem}.*", mask)
    return pairs


def _layout(folder: Path) -> tuple[Path, Path] | None:
    for images, masks in LAYOUTS:
        a, b = folder / images, folder / masks
        if a.is_dir() != b.is_dir():
            have, lack = (a, b) if a.is_dir() else (b, a)
            raise DataError(f"{have.name}/ has no {lack.name}/ beside it", folder)
        if a.is_dir():
            return a, b
    return None


def find_pairs(root: str | Path) -> dict[str, list[tuple[Path, Path]]]:
    """``{"all": pairs}`` for a one-split folder, ``{"train": ..., "test": ...}`` for split subfolders."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("no such folder", root)
    layout = _layout(root)
    if layout is not None:
        return {"all": pair_files(*layout)}
    splits = {s: _layout(root / s) for s in ("train", "test") if (root / s).is_dir()}
    if not splits:
        raise DataError("not a segmentation folder: expected imagesTr/ + labelsTr/, images/ + masks/, or train/ and test/ "
                        "subfolders holding one of them", root)
    for split in ("train", "test"):
        if splits.get(split) is None:
            raise DataError(f"no {split}/ folder with imagesTr/ + labelsTr/ or images/ + masks/", root / split)
    return {split: pair_files(*layout) for split, layout in splits.items()}


def check_mask(mask: np.ndarray, num_classes: int, where: str | Path) -> np.ndarray:
    """Integer labels in ``[0, num_classes)`` as int64, else a DataError naming ``where``."""
    if not np.all(np.isfinite(mask)):
        raise DataError("mask holds NaN or infinite values", where)
    if not np.array_equal(mask, np.round(mask)):
        raise DataError("mask holds non-integer values: a mask must be a single-channel map of integer labels", where)
    values = np.unique(mask).astype(np.int64)
    bad = [int(v) for v in values if v < 0 or v >= num_classes]
    if bad:
        hint = " (a 0/255 binary mask? store 1 for the structure)" if bad[-1] == 255 else ""
        raise DataError(f"label values {bad[:10]} outside the {num_classes} declared classes [0, {num_classes - 1}]; "
                        f"check --num-classes{hint}", where)
    return mask.astype(np.int64)


def read_mask(path: Path, spatial_dims: int | None = None) -> np.ndarray:
    """A label map as stored: PNG palette indices stay indices (a generic image reader would turn a
    palette into colours), gray PNGs and NIfTI files are read as they are."""
    if path.suffix.lower() not in PIL_SUFFIXES:
        return read_image(path, spatial_dims)["image"][0].numpy()
    from PIL import Image

    try:
        with Image.open(path) as img:
            array = np.asarray(img)
    except Exception as exc:
        raise DataError(f"cannot read mask ({type(exc).__name__}: {exc})", path) from exc
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        if not all(np.array_equal(array[..., 0], array[..., c]) for c in range(1, min(3, array.shape[-1]))):
            raise DataError("colour mask: a mask must be a single-channel (or palette) map of integer labels", path)
    return array[..., 0] if array.ndim == 3 else array


def read_pair(image_path: Path, mask_path: Path, num_classes: int, spatial_dims: int | None = None,
              percentiles: tuple[float, float] = PERCENTILES) -> SegItem:
    """Read, check and scale one pair (NaN/inf and unreadable files are caught by the readers)."""
    image = read_image(image_path, spatial_dims)["image"]
    mask = read_mask(mask_path, spatial_dims)
    if tuple(mask.shape) != tuple(image.shape[1:]):
        raise DataError(f"mask of shape {tuple(mask.shape)} differs from its image's {tuple(image.shape[1:])} ({image_path})",
                        mask_path)
    labels = check_mask(mask, num_classes, mask_path)
    scaled = percentile_scale(image, *percentiles)[0].numpy()
    return SegItem(scaled, labels, str(image_path), meta={"mask": str(mask_path)})


def slices_of(item: SegItem, axis: int) -> list[SegItem]:
    """The 2D slices of a 3D item across ``axis``; each keeps the volume as its case."""
    if item.image.ndim != 3:
        raise DataError(f"expected a 3D volume to slice, got shape {item.image.shape}", item.name)
    return [SegItem(np.ascontiguousarray(np.take(item.image, i, axis)), np.ascontiguousarray(np.take(item.mask, i, axis)),
                    f"{item.name}[axis {axis} slice {i}]", case=item.case, meta={**item.meta, "slice": i, "axis": axis})
            for i in range(item.image.shape[axis])]


def to_dims(items: list[SegItem], spatial_dims: int, slice_axis: int = 2) -> list[SegItem]:
    """Items of ``spatial_dims``: 3D volumes are sliced for a 2D model; 2D images cannot feed a 3D one."""
    out: list[SegItem] = []
    for item in items:
        if item.image.ndim == spatial_dims:
            out.append(item)
        elif item.image.ndim == 3 and spatial_dims == 2:
            out.extend(slices_of(item, slice_axis))
        else:
            raise DataError(f"a {item.image.ndim}D image cannot feed a {spatial_dims}D model", item.name)
    return out


def split_cases(pairs: list[tuple[Path, Path]], test_fraction: float, seed: int = 0) -> tuple[list, list]:
    """A fixed random case split: ``test_fraction`` of the cases (at least one, never all) are test."""
    if len(pairs) < 2:
        raise DataError("one labelled case cannot be split into train and test; add cases or give train/ and test/ "
                        "subfolders", pairs[0][0] if pairs else "data")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"must lie in (0, 1), got {test_fraction}", "--test-fraction")
    n_test = min(len(pairs) - 1, max(1, round(test_fraction * len(pairs))))
    order = np.random.default_rng(seed).permutation(len(pairs))
    test = set(order[:n_test].tolist())
    return [p for i, p in enumerate(pairs) if i not in test], [p for i, p in enumerate(pairs) if i in test]


def load_segmentation_folder(root: str | Path, num_classes: int, spatial_dims: int | None = None, slice_axis: int = 2,
                             test_fraction: float = 0.2, percentiles: tuple[float, float] = PERCENTILES) -> SegTask:
    """Every pair under ``root`` read and checked; train/test from split subfolders, else a fixed case split.

    ``spatial_dims`` is the model's: None keeps the data's own (all files must agree).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise DataError(f"need at least 2 classes (background and one structure), got {num_classes!r}", "--num-classes")
    found = find_pairs(root)
    splits = dict(zip(("train", "test"), split_cases(found["all"], test_fraction))) if "all" in found else found
    read_dims = 2 if any(_layout_of(p[0]) == "images" for p in splits["train"]) else None
    items = {s: [read_pair(i, m, int(num_classes), read_dims, percentiles) for i, m in pairs] for s, pairs in splits.items()}
    data_dims = {it.image.ndim for its in items.values() for it in its}
    if len(data_dims) > 1:
        raise DataError(f"the folder mixes 2D and 3D images ({sorted(data_dims)}D)", root)
    dims = spatial_dims or data_dims.pop()
    info = {"source": "folder", "root": str(root), "layout": "split folders" if "all" not in found else "one folder",
            "split": "train/ and test/ folders" if "all" not in found else f"fixed random case split (seed 0), test fraction "
            f"{test_fraction}", "cases": {s: [str(i) for i, _ in pairs] for s, pairs in splits.items()},
            "intensity": {"percentiles": list(percentiles), "per": "file"}}
    if dims == 2 and read_dims is None and any(it.image.ndim == 3 for it in items["train"]):
        info["slice_axis"] = int(slice_axis)
    return SegTask(to_dims(items["train"], dims, slice_axis), to_dims(items["test"], dims, slice_axis), int(num_classes),
                   ["background"] + [f"class_{c}" for c in range(1, int(num_classes))], dims, info)


def _layout_of(image_path: Path) -> str:
    return image_path.parent.name
