"""Turn images and volumes into :class:`Slice` records: intensity scaling, slicing, resizing.

Shared by every slice-set module, so that all of them scale, cut and resize the same way:

- **Intensity** to [0, 1]: CT in HU by a fixed window (:func:`window`; HU keep their meaning
  across scans), everything else by its own robust range, the 1st-99th percentiles
  (:func:`robust_range`; MR, X-ray and ultrasound values are relative). A volume is scaled once,
  by percentiles of the whole volume, so that its slices stay comparable.
- **Slices** of a volume (:func:`volume_slices`): evenly spaced along each requested axis through
  the *informative part* (the bounding box of the label map where there is one, else of voxels
  above 10% of the scaled range), excluding the box's two end planes. A slice is skipped, and
  counted by reason, when less than 5% of it is foreground or, for a labelled set, when it holds
  no label.
- **Size**: an image is padded to a square (centred, with 0, the black of the scaled image) and
  resized to ``size x size``: bilinear with antialiasing for the image (a 1,760 px radiograph
  shrinks to 64 px without aliasing), nearest neighbour for the label map, so that labels stay
  labels. Padding rather than cropping keeps all of a long image (a whole-body scan) in view.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import DataError

#: a slice with less foreground than this fraction is skipped as empty
MIN_FOREGROUND = 0.05
#: scaled intensity above which a pixel counts as foreground
FOREGROUND = 0.1
PERCENTILES = (1.0, 99.0)


@dataclass(frozen=True)
class Slice:
    """One 2D image of a slice set: ``image`` (H, W) float32 in [0, 1], ``mask`` (H, W) int64 or None,
    the set it came from, ``id`` (file, and slice or array index) and its modality (XR, CT, MR, US, NM)."""

    image: np.ndarray
    mask: np.ndarray | None
    source: str
    id: str
    modality: str


class SliceList(list):
    """A list of :class:`Slice` that also says what was left out: ``skipped[reason] = count``."""

    def __init__(self, items=(), skipped: Counter | None = None):
        super().__init__(items)
        self.skipped: Counter = Counter() if skipped is None else skipped


def window(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """``[low, high]`` linearly to [0, 1], clipped (a CT window in HU, or a robust range)."""
    if not high > low:
        return np.zeros(x.shape, np.float32)
    return np.clip((np.asarray(x, np.float32) - low) / (high - low), 0.0, 1.0).astype(np.float32)


def robust_range(x: np.ndarray, percentiles: tuple[float, float] = PERCENTILES, max_values: int = 2_000_000) -> tuple[float, float]:
    """The image's (or volume's) percentiles; large volumes are strided down to about
    ``max_values`` values first (a percentile does not need every voxel)."""
    x = np.asarray(x)
    step = max(1, int(np.ceil((x.size / max_values) ** (1 / x.ndim))))
    sample = x[tuple(slice(None, None, step) for _ in range(x.ndim))]
    low, high = np.percentile(sample, percentiles)
    return float(low), float(high)


def robust_scale(x: np.ndarray) -> np.ndarray:
    return window(x, *robust_range(x))


def square_resize(image: np.ndarray, mask: np.ndarray | None, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Pad to a centred square with 0, then resize to ``size``: image bilinear with antialiasing,
    mask nearest neighbour."""
    h, w = image.shape
    side = max(h, w)
    pad = ((side - h) // 2, side - h - (side - h) // 2), ((side - w) // 2, side - w - (side - w) // 2)
    image = np.pad(image, pad)
    t = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None]
    if side != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=side > size, align_corners=False)
    out = t[0, 0].clamp_(0.0, 1.0).numpy()
    if mask is None:
        return out, None
    m = torch.from_numpy(np.pad(mask, pad).astype(np.float32))[None, None]
    if side != size:
        m = F.interpolate(m, size=(size, size), mode="nearest-exact")
    return out, m[0, 0].numpy().round().astype(np.int64)


def make_slice(image: np.ndarray, mask: np.ndarray | None, size: int, source: str, id: str, modality: str) -> Slice:
    """A :class:`Slice` from a scaled 2D image (and mask of the same shape)."""
    if mask is not None and mask.shape != image.shape:
        raise DataError(f"mask shape {mask.shape} differs from image shape {image.shape}", id)
    image, mask = square_resize(image, mask, size)
    return Slice(image, mask, source, id, modality)


def is_empty(image: np.ndarray) -> bool:
    """Too little foreground to be worth a task (background, a slice beyond the anatomy)."""
    return float((image > FOREGROUND).mean()) < MIN_FOREGROUND


def informative_box(scaled: np.ndarray, mask: np.ndarray | None) -> list[tuple[int, int]]:
    """Per axis ``[lo, hi]`` (inclusive) of the labels, else of the foreground; the whole volume if neither."""
    where = mask > 0 if mask is not None else scaled > FOREGROUND
    if not where.any():
        return [(0, n - 1) for n in scaled.shape]
    idx = [np.flatnonzero(where.any(axis=tuple(a for a in range(scaled.ndim) if a != ax))) for ax in range(scaled.ndim)]
    return [(int(i[0]), int(i[-1])) for i in idx]


def spread(lo: int, hi: int, n: int) -> list[int]:
    """``n`` evenly spaced distinct indices strictly inside ``[lo, hi]`` when it is wide enough."""
    if n <= 0:
        return []
    inner = np.linspace(lo, hi, n + 2)[1:-1] if hi - lo >= n + 1 else np.linspace(lo, hi, min(n, hi - lo + 1))
    return sorted(set(int(round(v)) for v in inner))


def take(volume: np.ndarray, axis: int, index: int, view: bool) -> np.ndarray:
    """One slice; ``view`` turns a RAS-ordered NIfTI slice so that up is superior (or anterior in axial)."""
    cut = np.take(volume, index, axis=axis)
    return np.ascontiguousarray(np.rot90(cut) if view else cut)


def volume_slices(
    scaled: np.ndarray,
    mask: np.ndarray | None,
    n: int,
    axes: tuple[int, ...],
    size: int,
    source: str,
    name: str,
    modality: str,
    skipped: Counter,
    view: bool = True,
    spacing: tuple[float, ...] | None = None,
) -> list[Slice]:
    """Up to ``n`` slices of a scaled 3D volume, shared among ``axes`` (see the module docstring)."""
    if scaled.ndim != 3:
        raise DataError(f"expected a 3D volume, got shape {scaled.shape}", name)
    if mask is not None and mask.shape != scaled.shape:
        raise DataError(f"label map shape {mask.shape} differs from the volume's {scaled.shape}", name)
    box = informative_box(scaled, mask)
    out: list[Slice] = []
    for axis, k in zip(axes, budget(n, len(axes))):
        for index in spread(*box[axis], k):
            image = take(scaled, axis, index, view)
            labels = None if mask is None else take(mask, axis, index, view)
            if spacing is not None:
                in_plane = [float(spacing[a]) for a in range(3) if a != axis]
                image, labels = square_pixels(image, labels, tuple(in_plane[::-1] if view else in_plane))
            if is_empty(image):
                skipped["empty slice"] += 1
            elif labels is not None and not labels.any():
                skipped["slice without labels"] += 1
            else:
                out.append(make_slice(image, labels, size, source, f"{name}[axis {axis} slice {index}]", modality))
    return out


def square_pixels(image: np.ndarray, mask: np.ndarray | None, spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray | None]:
    """Resample a slice of anisotropic pixels (a CT of 1.5 mm slices cut coronally) to square pixels
    of the finer spacing, so that anatomy keeps its shape; image bilinear, mask nearest."""
    fine = min(spacing)
    shape = tuple(max(1, int(round(n * s / fine))) for n, s in zip(image.shape, spacing))
    if shape == image.shape:
        return image, mask
    t = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None]
    t = F.interpolate(t, size=shape, mode="bilinear", align_corners=False)
    if mask is not None:
        m = F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None], size=shape, mode="nearest-exact")
        mask = m[0, 0].numpy().round().astype(np.int64)
    return t[0, 0].numpy(), mask


def labels_on_grid(labels: np.ndarray, label_affine: np.ndarray, image_affine: np.ndarray, image_shape: tuple[int, ...],
                   where: str) -> np.ndarray:
    """A label volume resampled by nearest neighbour onto an image's voxel grid (both axis-aligned,
    as atlases and templates are; a rotated affine is refused). Voxels outside the label volume get 0."""
    la, ia = np.asarray(label_affine, float), np.asarray(image_affine, float)
    if np.abs(la[:3, :3] - np.diag(np.diag(la[:3, :3]))).max() > 1e-6 or np.abs(ia[:3, :3] - np.diag(np.diag(ia[:3, :3]))).max() > 1e-6:
        raise DataError("label map and image must have axis-aligned affines to be matched", where)
    index = []
    for a in range(3):
        world = ia[a, 3] + ia[a, a] * np.arange(image_shape[a])
        index.append(np.rint((world - la[a, 3]) / la[a, a]).astype(np.int64))
    inside = [(i >= 0) & (i < n) for i, n in zip(index, labels.shape)]
    out = labels[np.ix_(*[np.clip(i, 0, n - 1) for i, n in zip(index, labels.shape)])]
    return np.where(inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :], out, 0).astype(np.int64)


def budget(n: int, parts: int) -> list[int]:
    """``n`` split as evenly as possible into ``parts`` (the first ones get the remainder)."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)] if parts else []


def pick(count: int, max_images: int, rng: np.random.Generator) -> np.ndarray:
    """Which of ``count`` items to read: all when they fit, else a sorted random subset drawn with ``rng``."""
    if count <= max_images:
        return np.arange(count)
    return np.sort(rng.choice(count, size=max_images, replace=False))


def read_volume(path) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    """A 3D file through medrep's readers: (array, spacing in mm per axis, affine or identity)."""
    from ..io.readers import read_image

    sample = read_image(path, 3)
    affine = np.asarray(sample["meta"].get("affine", np.eye(4)), dtype=np.float64)
    return sample["image"][0].numpy(), tuple(float(s) for s in sample["spacing"]), affine


def collect(count: int, max_images: int, rng: np.random.Generator, emit) -> SliceList:
    """Read up to ``max_images`` slices from ``count`` items (files, volumes): :func:`pick` which,
    then ``emit(index, n, skipped)`` for each, where ``n`` is what is left of the budget shared among
    the items still to read (a 2D file takes 1, a volume up to ``n`` slices)."""
    chosen = pick(count, max_images, rng)
    out, skipped = SliceList(), Counter()
    for left, i in zip(range(len(chosen), 0, -1), chosen):
        n = max(1, (max_images - len(out)) // left)
        out.extend(emit(int(i), n, skipped))
    out.skipped = skipped
    del out[max_images:]
    return out
