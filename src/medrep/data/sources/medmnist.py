"""``medmnist``: MedMNIST ``.npz`` files (and the PneumoniaMNIST copy shipped as medrep's demo data).

A MedMNIST file holds ``{split}_images`` and ``{split}_labels`` per split: 2D images as
``(N, H, W)`` (gray) or ``(N, H, W, 3)`` (RGB), 3D volumes as ``(N, D, H, W)``, uint8; labels
``(N, 1)`` class ids, or ``(N, K)`` 0/1 columns for the multi-label sets (ChestMNIST's 14
findings), kept whole: a sample's label is then a ``(K,)`` vector, which the fine-tuning
evaluation scores as multi-label and the frozen probes refuse by name. MedMNIST images were resampled to a fixed size
from sources of varying resolution, so they carry no physical spacing: spacing is 1.0 per axis
(a voxel is the unit) and ``meta["spacing_known"]`` is False.

PneumoniaMNIST (Yang et al., MedMNIST v2, 2023) is distributed under CC BY 4.0.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import DataError
from ..datasets.cached import CachedDataset
from ..datasets.files import Sample
from ..io.readers import LUMA
from ..synthetic import write_medmnist
from .registry import Source, register_source

PACKAGED = "pneumoniamnist.npz"


def default_medmnist_path(path: str | Path | None = None) -> Path:
    """The MedMNIST file to use: ``path`` if given (it must exist), else
    ``$MEDREP_DATA/medmnist/pneumoniamnist.npz`` when present, else the copy packaged with medrep."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise DataError("no such MedMNIST .npz file", path)
        return path
    root = os.environ.get("MEDREP_DATA")
    if root:
        candidate = Path(root) / "medmnist" / PACKAGED
        if candidate.is_file():
            return candidate
    packaged = resources.files("medrep.data") / "assets" / PACKAGED
    if not packaged.is_file():
        raise DataError("the packaged PneumoniaMNIST is missing; pass data.path", "data.path")
    return Path(str(packaged))


def load_npz_split(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of one split, loaded fully (npz members are compressed: per-item reads
    would inflate the whole array each time)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            splits = sorted(k[: -len("_images")] for k in keys if k.endswith("_images"))
            if f"{split}_images" not in keys:
                raise DataError(f"no split {split!r}; splits present: {', '.join(splits) or 'none'}", path)
            images = npz[f"{split}_images"]
            labels = npz[f"{split}_labels"] if f"{split}_labels" in keys else None
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError("no such MedMNIST .npz file", path) from exc
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise DataError(f"cannot read MedMNIST .npz ({type(exc).__name__}: {exc})", path) from exc
    if labels is None:
        raise DataError(f"has {split}_images but no {split}_labels", path)
    if images.ndim not in (3, 4):
        raise DataError(f"{split}_images must be (N,H,W), (N,H,W,3) or (N,D,H,W), got {images.shape}", path)
    labels = labels.reshape(len(labels), -1) if labels.ndim > 1 else labels.reshape(-1, 1)
    if len(labels) != len(images):
        raise DataError(f"{split}: {len(images)} images but {len(labels)} labels", path)
    if not np.issubdtype(images.dtype, np.number) or not np.isfinite(images).all():
        raise DataError(f"{split}_images must hold finite numbers", path)
    if labels.shape[1] > 1 and not np.isin(labels, (0, 1)).all():
        raise DataError(f"{split}_labels has {labels.shape[1]} columns: multi-label targets must be 0/1", path)
    return images, (labels[:, 0] if labels.shape[1] == 1 else labels).astype(np.int64)


class MedMNISTDataset(CachedDataset):
    """One split of a MedMNIST ``.npz`` as sample dicts with ``image``, ``spacing``, ``label``, ``meta``.

    ``grayscale=True`` turns RGB sets into one luminance channel (medrep's models default to
    one input channel); ``False`` keeps 3 channels. ``skip_bad`` exists for a uniform dataset
    interface: array rows cannot be individually unreadable, so ``skipped`` stays empty.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        split: str = "train",
        transform: Callable[[Sample], Any] | None = None,
        preprocess: Callable[[Sample], Sample] | None = None,
        grayscale: bool = True,
        spatial_dims: int | None = None,
        skip_bad: bool = False,
        cache: bool = False,
    ):
        self.path = default_medmnist_path(path)
        self.split = split
        images, self.targets = load_npz_split(self.path, split)
        rgb = images.ndim == 4 and images.shape[-1] == 3
        if rgb and grayscale:
            images = images.astype(np.float32) @ LUMA
        elif rgb:
            images = np.moveaxis(images, -1, 1)  # (N, 3, H, W)
        self.images = images if (rgb and not grayscale) else images[:, None]  # channel-first
        self.color_to_gray = rgb and grayscale
        self.spatial_dims = self.images.ndim - 2
        if spatial_dims is not None and spatial_dims != self.spatial_dims:
            raise DataError(
                f"split {split!r} holds {self.spatial_dims}D images, expected {spatial_dims}D", self.path
            )
        self.transform, self.preprocess = transform, preprocess
        self.skip_bad, self.skipped = bool(skip_bad), []
        self.cache = bool(cache)
        self._cache: dict[int, Sample] = {}

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labels(self) -> list[int] | list[list[int]]:
        return self.targets.tolist()

    def _load(self, index: int) -> Sample:
        image = torch.from_numpy(np.ascontiguousarray(self.images[index], dtype=np.float32))
        meta = {
            "path": str(self.path),
            "format": "medmnist",
            "split": self.split,
            "spatial_shape": list(image.shape[1:]),
            "spacing_known": False,
        }
        if self.color_to_gray:
            meta["color_to_gray"] = True
        sample = {
            "image": image,
            "spacing": torch.ones(self.spatial_dims, dtype=torch.float32),
            "meta": meta,
        }
        if self.preprocess is not None:
            sample = self.preprocess(sample)
        sample["label"] = torch.as_tensor(self.targets[index], dtype=torch.int64)  # () class id or (K,) multi-label
        return sample

    def _load_index(self, index: int) -> Sample:
        return self._load(index)


def write_example_npz(path: str | Path, n: int = 64, size: int = 16, seed: int = 0, spatial_dims: int = 2) -> Path:
    """A MedMNIST-layout file (``n`` train, ``n // 4`` val, ``n // 2`` test images of ``size`` px per
    axis, uint8, labels ``(N, 1)``) whose two classes differ in brightness, so a model can learn them."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, count in (("train", n), ("val", n // 4), ("test", n // 2)):
        labels = rng.integers(0, 2, size=(count, 1))
        images = rng.integers(0, 120, size=(count, *[size] * spatial_dims)) + 100 * labels.reshape(count, *[1] * spatial_dims)
        splits[split] = (images.astype(np.uint8), labels.astype(np.uint8))
    return write_medmnist(path, splits)


def medmnist_example(root: Path, spatial_dims: int = 2) -> dict[str, Any]:
    """``root/tinymnist.npz``: 8 train, 2 val and 4 test images of 28 px (2D) or 28^3 (3D, as the
    MedMNIST 3D sets), no physical spacing."""
    return {"source": "medmnist", "path": str(write_example_npz(Path(root) / "tinymnist.npz", 8, 28, 0, spatial_dims))}


register_source(Source(
    name="medmnist", kind="image", summary="a MedMNIST .npz (default: $MEDREP_DATA/medmnist/pneumoniamnist.npz or the packaged copy)",
    images=lambda data, split, **common: MedMNISTDataset(data.get("path"), split=split or "train", **common),
    matches=lambda path: Path(path).suffix == ".npz", example=medmnist_example,
))
