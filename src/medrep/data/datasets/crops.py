"""Random crops of 2D images and 3D volumes, each with its centre in millimetres.

Physical space is explicit: a crop's centre is reported in the scanner (world) frame, through
``meta["affine"]`` (voxel index -> mm, NIfTI and DICOM) when the sample has one, else as
``index * spacing`` (PNG, MedMNIST: one pixel is the unit, ``meta["spacing_known"]`` False).
Indices are voxel *centres*: voxel ``i`` of an axis is at index ``i``, a crop of ``s`` voxels
starting at ``a`` has its centre at ``a + (s - 1) / 2``.

Two ways to define a crop:

- in voxels (``size``): a box of ``size`` voxels cut out of the image, no resampling;
- physically (``crop_mm``): a box of ``crop_mm`` millimetres per axis, resampled to ``size``
  voxels with (bi/tri)linear interpolation. Output voxel ``j`` of an axis samples index
  ``c + (j - (s - 1) / 2) * e / s``, with ``c`` the crop centre and ``e = crop_mm / spacing`` the
  extent in input voxels, so the output voxels tile the box exactly (spacing ``crop_mm / size``)
  and the box's centre is ``c``. Interpolation is linear, with no anti-aliasing: crops much
  coarser than the image alias (the design rule "never resample silently" is kept: the crop's
  voxel spacing is returned as ``spacing``).

A crop fits when its extent is at most the image's (``size <= shape``, or ``crop_mm <= shape *
spacing``); centres are drawn uniformly over the positions that keep the box inside the image
(the outer half voxel is border-replicated for physical crops). An image smaller than the crop
raises :class:`DataError` naming the file and both sizes.

2D images that carry a 3D affine (DICOM, 2D NIfTI) get 2D coordinates in the image plane's own
orthonormal frame (a QR factorisation of the affine's two columns), so in-plane distances are
exact whatever the plane's orientation. A sample resized by :class:`~medrep.data.Preprocess`
(``data.size``) keeps its original affine in ``meta``; the resize is folded into it here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ...errors import DataError, RecipeError
from .crop_config import check_crops

log = logging.getLogger(__name__)

__all__ = ["CropDataset", "Crops", "CropSpec", "index_to_world", "sample_crops", "world_of"]

Sample = dict[str, Any]
LOCK_WAIT_S = 600.0  # how long a process waits for another to write an mmap cache file


# --------------------------------------------------------------------------------------------
# voxel index -> mm


def index_to_world(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """``(M, t)`` (float64, ``M`` of shape ``(dims, dims)``) such that the position in mm of index
    ``p`` (a ``(dims,)`` vector of voxel-centre indices of ``sample["image"]``) is ``M @ p + t``.

    With ``meta["affine"]``: 3D volumes use the affine as it is; 2D images use the plane's
    orthonormal frame (distances exact). Without one: ``diag(spacing)``, ``t = 0``. When
    preprocessing resized the image (``meta["original_shape"]``), the resize is composed in:
    new index ``q`` lies at old index ``(q + 0.5) * old / new - 0.5`` (pixel-edge aligned, as
    MONAI's Resize).
    """
    image, meta = sample["image"], sample.get("meta") or {}
    dims = image.ndim - 1
    spacing = np.asarray(torch.as_tensor(sample["spacing"]).tolist(), dtype=np.float64)
    affine = meta.get("affine")
    if affine is None:
        return np.diag(spacing), np.zeros(dims)
    affine = np.asarray(affine, dtype=np.float64)
    linear, offset = affine[:3, :dims], affine[:3, 3].copy()
    original = meta.get("original_shape")
    if original is not None and list(original) != list(image.shape[1:]):
        scale = np.asarray(original, np.float64) / np.asarray(image.shape[1:], np.float64)
        offset = offset + linear @ (0.5 * scale - 0.5)
        linear = linear * scale[None, :]
    if dims == 3:
        return linear, offset
    q, r = np.linalg.qr(linear)  # (3, 2) orthonormal columns, (2, 2) upper triangular
    signs = np.where(np.diag(r) < 0, -1.0, 1.0)  # coordinates grow with the index axes
    q, r = q * signs[None, :], r * signs[:, None]
    return r, q.T @ offset


def world_of(sample: Sample, index: np.ndarray) -> np.ndarray:
    """Positions in mm of voxel-centre indices ``index`` ``(..., dims)`` of ``sample``."""
    linear, offset = index_to_world(sample)
    return np.asarray(index, np.float64) @ linear.T + offset


# --------------------------------------------------------------------------------------------
# drawing crops


@dataclass(frozen=True)
class CropSpec:
    """What to cut: ``k`` crops of ``size`` voxels, or of ``crop_mm`` resampled to ``size``."""

    k: int = 16
    size: int | tuple[int, ...] = 32
    crop_mm: float | tuple[float, ...] | None = None
    min_foreground: float | None = None
    threshold: float = 0.1
    max_tries: int = 50

    def per_axis(self, value, dims: int, where: str, name: str) -> np.ndarray:
        values = [value] * dims if isinstance(value, (int, float)) else list(value)
        if len(values) != dims:
            raise DataError(f"data.crops.{name} {list(values)} has {len(values)} values but the file holds a {dims}D image", where)
        return np.asarray(values, dtype=np.float64)


@dataclass
class Crops:
    """``image`` (K, C, *size) float32, ``centre_index`` (K, dims) float64 index of each crop
    centre in the source image, ``coords`` (K, dims) float64 mm, ``spacing`` (dims,) mm of the
    crop voxels, ``foreground`` (K,) fraction of voxels above the threshold."""

    image: torch.Tensor
    centre_index: np.ndarray
    coords: np.ndarray
    spacing: np.ndarray
    foreground: np.ndarray


def _linear_along(x: np.ndarray, axis: int, pos: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``x`` along ``axis`` at fractional indices ``pos`` (clamped to the ends).

    numpy, single-threaded: on small blocks torch's OpenMP threads cost more than they save, and
    far more on a busy machine."""
    n = x.shape[axis]
    p = np.clip(pos, 0.0, n - 1.0)
    if n == 1:
        return np.take(x, np.zeros(len(p), dtype=np.int64), axis=axis)
    i0 = np.minimum(np.floor(p).astype(np.int64), n - 2)
    shape = [1] * x.ndim
    shape[axis] = len(p)
    w = (p - i0).astype(x.dtype).reshape(shape)
    a = np.take(x, i0, axis=axis)
    return a + (np.take(x, i0 + 1, axis=axis) - a) * w


def _as_array(block) -> np.ndarray:
    """A float32 numpy copy of a (possibly float16, possibly memory-mapped) block, never a view."""
    if isinstance(block, torch.Tensor):
        block = block.numpy()
    return np.array(block, dtype=np.float32, order="C")


def _cut(volume, starts: Sequence[int], stops: Sequence[int]):
    """``volume[:, a0:b0, a1:b1, ...]`` for a tensor or numpy (memmap) array."""
    return volume[(slice(None), *(slice(int(a), int(b)) for a, b in zip(starts, stops)))]


def sample_crops(sample: Sample, spec: CropSpec, rng: np.random.Generator, where: str | None = None) -> Crops:
    """Draw ``spec.k`` crops of ``sample`` (its ``image`` may be a tensor or a numpy / memory-mapped
    array of any float dtype). Raises :class:`DataError` naming ``where`` (default
    ``meta["path"]``) when the image is smaller than the crop, or when ``spec.min_foreground`` is
    set and some crop finds no position with enough foreground in ``spec.max_tries`` draws."""
    image = sample["image"]
    meta = sample.get("meta") or {}
    where = where or meta.get("path") or "sample"
    dims = image.ndim - 1
    shape = np.asarray(image.shape[1:], dtype=np.int64)
    spacing = np.asarray(torch.as_tensor(sample["spacing"]).tolist(), dtype=np.float64)
    size = spec.per_axis(spec.size, dims, where, "size").astype(np.int64)
    physical = spec.crop_mm is not None
    if physical:
        crop_mm = spec.per_axis(spec.crop_mm, dims, where, "crop_mm")
        extent = crop_mm / spacing  # in input voxels
        out_spacing = crop_mm / size
    else:
        extent = size.astype(np.float64)
        out_spacing = spacing
    if np.any(extent > shape + 1e-9):
        what = (f"a crop of {crop_mm.tolist()} mm ({np.round(extent, 2).tolist()} voxels at spacing {spacing.tolist()} mm)"
                if physical else f"a crop of {size.tolist()} voxels")
        raise DataError(
            f"image of {shape.tolist()} voxels ({np.round(shape * spacing, 2).tolist()} mm) is smaller than {what}", where
        )
    lo, hi = extent / 2 - 0.5, shape - 0.5 - extent / 2  # range of centre indices that keep the box inside
    step = extent / size
    crops, centres, fractions = [], [], []
    for _ in range(spec.k):
        for _attempt in range(spec.max_tries):
            if physical:
                centre = lo + rng.random(dims) * (hi - lo)
                positions = [centre[d] + (np.arange(size[d]) - (size[d] - 1) / 2) * step[d] for d in range(dims)]
                starts = [max(0, int(np.floor(p[0]))) for p in positions]
                stops = [min(int(shape[d]), int(np.floor(p[-1])) + 2) for d, p in enumerate(positions)]
                crop = _as_array(_cut(image, starts, stops))
                for d in range(dims):
                    crop = _linear_along(crop, d + 1, positions[d] - starts[d])
            else:
                starts = [int(rng.integers(0, shape[d] - size[d] + 1)) for d in range(dims)]
                crop = _as_array(_cut(image, starts, [s + n for s, n in zip(starts, size)]))
                centre = np.asarray(starts, np.float64) + (size - 1) / 2
            fraction = float(np.count_nonzero(crop > spec.threshold)) / crop.size if spec.min_foreground is not None else 1.0
            if spec.min_foreground is None or fraction >= spec.min_foreground:
                break
        else:
            raise DataError(
                f"no crop of {size.tolist()} voxels{f' ({crop_mm.tolist()} mm)' if physical else ''} has a fraction "
                f">= {spec.min_foreground} of voxels above {spec.threshold} in {spec.max_tries} tries "
                "(lower data.crops.min_foreground or threshold, or set data.skip_bad to leave such images out)",
                where,
            )
        crops.append(np.ascontiguousarray(crop, dtype=np.float32))
        centres.append(centre)
        fractions.append(fraction)
    centre_index = np.stack(centres)
    return Crops(
        image=torch.from_numpy(np.stack(crops)),
        centre_index=centre_index,
        coords=world_of(sample, centre_index),
        spacing=np.asarray(out_spacing, np.float64),
        foreground=np.asarray(fractions),
    )


# --------------------------------------------------------------------------------------------
# the dataset


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", 0))


def _worker_id() -> int:
    info = torch.utils.data.get_worker_info()
    return 0 if info is None else info.id


def default_cache_dir() -> Path:
    return Path(os.environ.get("MEDREP_CACHE_DIR") or Path(tempfile.gettempdir()) / "medrep_cache")


class CropDataset(Dataset):
    """Item ``i`` is ``k`` random crops of image ``i`` of ``base``:

    ``{"image": (K, C, *size) float32, "coords": (K, dims) float32 mm (crop centres, world frame),
    "group": (K,) int64 = i, "spacing": (K, dims) mm of the crop voxels, "meta": base meta}``,
    plus ``label`` repeated ``(K,)`` when the base sample has one and any other base keys.
    :func:`medrep.data.datasets.collate` concatenates items into ``(B*K, ...)`` batches.

    A fresh set of crops is drawn at every access. ``seed=None`` draws from torch's global RNG
    (so ``seed_everything`` makes a run reproducible, and data-loader workers differ); an int
    gives this dataset its own stream. Either way the process rank is mixed in, so DDP ranks
    never draw the same crops of one image.

    Caching (``cache``): the decoded, preprocessed images are kept once per process
    (``"memory"``) in ``cache_dtype`` (float16 halves it), or written once as ``.npy`` files under
    ``cache_dir`` and memory-mapped (``"mmap"``): every process (DDP ranks, loader workers) then
    maps the same pages of the OS page cache instead of holding its own copy. ``None``: read the
    base dataset at every access (it may cache itself). Build ``base`` with ``cache=False`` when
    this dataset caches. The memory cache fills lazily, so with ``num_workers > 0`` every loader
    worker holds its own copy too; mmap avoids that. Measured (benchmarks/crop_cache_memory.py,
    Colin27 + head CT, 56.7 MB as float32): memory +57 MB per process, float16 +29 MB, mmap
    +57 MB RSS but +28 MB PSS per process with two processes (one copy in all).

    Bad images: too small for the crop, or (``min_foreground``) no crop with enough foreground
    in ``max_tries`` draws, raise :class:`DataError` naming the file. With ``skip_bad`` every image
    is probed once up front and those that fail are left out and listed in ``skipped`` (with the
    base dataset's own); an image that fails later draws is then left out and listed too, and
    another image's crops are returned in its place (their ``group`` is that image's index).
    """

    def __init__(
        self,
        base: Dataset,
        k: int = 16,
        size: int | Sequence[int] = 32,
        crop_mm: float | Sequence[float] | None = None,
        min_foreground: float | None = None,
        threshold: float = 0.1,
        max_tries: int = 50,
        seed: int | None = None,
        cache: str | None = "memory",
        cache_dtype: str = "float32",
        cache_dir: str | Path | None = None,
        skip_bad: bool = False,
        transform: Callable[[Sample], Any] | None = None,
    ):
        cfg = check_crops({"k": k, "size": list(size) if isinstance(size, (list, tuple)) else size,
                           "crop_mm": list(crop_mm) if isinstance(crop_mm, (list, tuple)) else crop_mm,
                           "min_foreground": min_foreground, "threshold": threshold, "max_tries": max_tries,
                           "cache": cache or "memory", "cache_dtype": cache_dtype,
                           "cache_dir": None if cache_dir is None else str(cache_dir)})
        self.spec = CropSpec(
            k=cfg["k"], size=tuple(cfg["size"]) if isinstance(cfg["size"], list) else cfg["size"],
            crop_mm=tuple(cfg["crop_mm"]) if isinstance(cfg["crop_mm"], list) else cfg["crop_mm"],
            min_foreground=cfg["min_foreground"], threshold=float(cfg["threshold"]), max_tries=cfg["max_tries"],
        )
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise RecipeError(f"must be an integer or null, got {seed!r}", "seed")
        self.base = base
        self.seed = seed
        self.cache = cache
        self.cache_dtype = np.float16 if cache_dtype == "float16" else np.float32
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.skip_bad = bool(skip_bad)
        self.transform = transform
        self._cache: dict[int, Sample] = {}
        self._calls = 0
        self._skipped: list[tuple[str, str]] = []
        self.indices = list(range(len(base)))  # dataset item -> base index
        self._bad: set[int] = set()
        if self.skip_bad:
            self._probe()

    # ---------------------------------------------------------------- loading and caching

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every image left out, by the base dataset and by cropping."""
        return list(getattr(self.base, "skipped", [])) + self._skipped

    def _source_key(self, b: int) -> str | None:
        """A key that changes when the file or the preprocessing does; None: cannot mmap it."""
        records = getattr(self.base, "records", None)
        parts: dict[str, Any] = {"dtype": np.dtype(self.cache_dtype).name,
                                 "preprocess": repr(getattr(self.base, "preprocess", None)),
                                 "spatial_dims": getattr(self.base, "spatial_dims", None)}
        if records is not None:
            record = records[b]
            files = list(record.files) if record.files is not None else [record.path]
            try:
                stats = [(f, os.stat(f).st_mtime_ns, os.stat(f).st_size) for f in files]
            except OSError:
                return None
            parts.update(path=record.path, stats=stats)
        elif getattr(self.base, "path", None) is not None:
            path = str(self.base.path)
            try:
                parts.update(path=path, split=getattr(self.base, "split", None), index=b, mtime=os.stat(path).st_mtime_ns)
            except OSError:
                return None
        else:
            return None
        return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def _light(self, sample: Sample) -> Sample:
        return {k: v for k, v in sample.items() if k != "image"}

    def _to_mmap(self, b: int, sample: Sample | None) -> Sample | None:
        """The sample with its image memory-mapped from ``cache_dir``. One process writes each file
        (an exclusive lock file; the others wait for it), so that all map the same pages."""
        key = self._source_key(b)
        if key is None:
            return None
        npy, side, lock = (self.cache_dir / f"{key}{ext}" for ext in (".npy", ".json", ".lock"))
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + LOCK_WAIT_S
        while not side.is_file():
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if time.monotonic() > deadline:  # a writer that died: take over
                    lock.unlink(missing_ok=True)
                    deadline = time.monotonic() + LOCK_WAIT_S
                time.sleep(0.05)
                continue
            try:
                os.close(fd)
                if not side.is_file() and not self._write_mmap(b, sample, npy, side):
                    return None
            finally:
                lock.unlink(missing_ok=True)
        info = json.loads(side.read_text())
        out: Sample = {"image": np.load(npy, mmap_mode="r"), "spacing": torch.tensor(info["spacing"], dtype=torch.float32),
                       "meta": info["meta"], **info["extra"]}
        if info["label"] is not None:
            out["label"] = torch.tensor(info["label"], dtype=torch.int64)
        return out

    def _write_mmap(self, b: int, sample: Sample | None, npy: Path, side: Path) -> bool:
        if sample is None:
            sample = self.base[b]
        light = self._light(sample)
        label = light.pop("label", None)
        try:
            text = json.dumps({"spacing": [float(s) for s in light.pop("spacing")], "meta": light.pop("meta"),
                               "label": None if label is None else int(label), "extra": light})
        except (TypeError, ValueError):
            return False  # a field that JSON cannot hold: keep this image in memory
        tmp = self.cache_dir / f".{npy.stem}.{os.getpid()}.tmp.npy"
        np.save(tmp, np.ascontiguousarray(sample["image"].numpy(), dtype=self.cache_dtype))
        os.replace(tmp, npy)
        tmp_side = self.cache_dir / f".{npy.stem}.{os.getpid()}.tmp.json"
        tmp_side.write_text(text)
        os.replace(tmp_side, side)  # last: its presence means the .npy is complete
        return True

    def _load(self, b: int) -> Sample:
        sample = self._cache.get(b)
        if sample is not None:
            return sample
        if self.cache == "mmap":
            sample = self._to_mmap(b, None)
            if sample is None:
                log.warning("cannot key image %d for the mmap cache; keeping it in memory", b)
        if sample is None:
            sample = self.base[b]
            if self.cache is not None and self.cache_dtype != np.float32:
                sample = {**sample, "image": sample["image"].to(torch.float16)}
        if self.cache is not None:
            self._cache[b] = sample
        return sample

    # ---------------------------------------------------------------- drawing

    def _rng(self, index: int) -> np.random.Generator:
        if self.seed is None:
            entropy = int(torch.randint(0, 2**62, (1,)).item())
            return np.random.default_rng([entropy, index, _rank()])
        self._calls += 1
        return np.random.default_rng([self.seed, index, _rank(), _worker_id(), self._calls])

    def _crops(self, b: int, rng: np.random.Generator) -> tuple[Sample, Crops]:
        sample = self._load(b)
        where = (sample.get("meta") or {}).get("path") or f"image {b}"
        return sample, sample_crops(sample, self.spec, rng, where)

    def _probe(self) -> None:
        kept = []
        for b in self.indices:
            try:
                self._crops(b, np.random.default_rng([self.seed or 0, b]))
            except DataError as exc:
                self._skipped.append((exc.where or f"image {b}", str(exc)))
                self._cache.pop(b, None)
                continue
            kept.append(b)
        if not kept:
            reasons = "; ".join(r for _, r in self._skipped[:3])
            raise DataError(f"no image of the {len(self.indices)} yields crops: {reasons}", "data.crops")
        self.indices = kept

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)}")
        rng = self._rng(index)
        item = index
        for _ in range(len(self.indices)):
            if item not in self._bad:
                try:
                    sample, crops = self._crops(self.indices[item], rng)
                    break
                except DataError as exc:
                    if not self.skip_bad:
                        raise
                    self._bad.add(item)
                    self._skipped.append((exc.where or f"image {item}", str(exc)))
                    log.warning("leaving out %s", exc)
            item = (item + 1) % len(self.indices)
        else:
            raise DataError("every image failed to yield crops; see dataset.skipped", "data.crops")
        k = crops.image.shape[0]
        out: Sample = {k_: v for k_, v in sample.items() if k_ not in ("image", "spacing", "label", "meta")}
        out.update(
            image=crops.image,
            coords=torch.as_tensor(crops.coords, dtype=torch.float32),
            group=torch.full((k,), item, dtype=torch.int64),
            spacing=torch.as_tensor(crops.spacing, dtype=torch.float32).expand(k, -1).clone(),
            meta={**(sample.get("meta") or {}), "index": item},
        )
        if "label" in sample:
            out["label"] = torch.as_tensor(sample["label"]).expand(k).clone()
        return self.transform(out) if self.transform is not None else out
