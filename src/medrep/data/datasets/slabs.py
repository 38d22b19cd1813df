"""The slab split of crops from one volume: train and test crop centres on a grid, taken from
alternating slabs along one axis so that no test crop shares a voxel with a train crop.

Used by the region probe (:mod:`medrep.evaluate.regions`) and by the ``colin27-regions`` image-text
crops (:mod:`medrep.data.sources.colin27_regions`), so it lives in the data layer: the data package
never imports the evaluation package. :func:`check_disjoint` is the assertion both run on every split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import MedrepError


def as_int_tuple(value: int | Sequence[int], dims: int, what: str) -> tuple[int, ...]:
    """One positive integer per axis from one or ``dims`` of them; ``what`` (the option) is named in the error."""
    vals = [value] * dims if isinstance(value, (int, np.integer)) else list(value)
    if len(vals) != dims or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in vals):
        raise MedrepError(f"must be a positive integer or {dims} of them, got {value!r}", what)
    return tuple(int(v) for v in vals)


def _grid(lo: int, hi: int, stride: int) -> np.ndarray:
    """Positions lo..hi (inclusive) every ``stride``, centred in the interval."""
    span = hi - lo
    return np.arange(lo + (span % stride) // 2, hi + 1, stride)


def slab_centres(
    mask: np.ndarray, crop_shape: Sequence[int], stride: int | Sequence[int], slab_axis: int = 2,
    slab_width: int | None = None, gap: int | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Grid centres over the bounding box of ``mask``, split into alternating slabs along ``slab_axis``.

    ``gap`` defaults to 0 (crops of the two splits may touch but share no voxel) when the crop
    spans the full crop size along the axis, and to ``max(crop) - extent`` when it is thinner (2D
    slice patches along the slab axis: train and test slices then lie a crop size apart, as 3D
    crops would). Slabs of ``slab_width`` voxels (default: the crop extent along the axis plus ``gap``) tile the
    box's extent along the axis (centred; the remainder at both ends is unused); even slabs are
    train, odd ones test. Centres whose crop does not lie inside its slab shrunk by ``gap // 2``
    and ``gap - gap // 2`` at its two faces are left out. Returns (train centres, test centres, info):
    all centres, not yet filtered by label.
    """
    dims = mask.ndim
    crop_shape = tuple(int(e) for e in crop_shape)
    strides = as_int_tuple(stride, dims, "--stride")
    if slab_axis not in range(dims):
        raise MedrepError(f"must be one of {list(range(dims))} for a {dims}D volume, got {slab_axis!r}", "--slab-axis")
    extent = crop_shape[slab_axis]
    if gap is None:
        gap = max(crop_shape) - extent
    if isinstance(gap, bool) or not isinstance(gap, (int, np.integer)) or gap < 0:
        raise MedrepError(f"must be a non-negative integer, got {gap!r}", "--gap")
    width = extent + int(gap) if slab_width is None else int(slab_width)
    if width < extent + gap:
        raise MedrepError(f"slab width {width} cannot hold a crop of {extent} voxels plus a gap of {gap}", "--slab-width")
    nz = np.argwhere(mask)
    if nz.size == 0:
        raise MedrepError("the label map is empty (all background)", "labels")
    lo, hi = nz.min(axis=0), nz.max(axis=0)
    length = int(hi[slab_axis] - lo[slab_axis] + 1)
    n_slabs = length // width
    if n_slabs < 2:
        raise MedrepError(f"the labelled extent along axis {slab_axis} is {length} voxels: too short for two slabs of "
                          f"{width}; use a smaller --crop or --slab-width", "--slab-axis")
    first = int(lo[slab_axis]) + (length - n_slabs * width) // 2
    half = extent // 2
    g_lo, g_hi = int(gap) // 2, int(gap) - int(gap) // 2
    axes = [_grid(int(lo[a]), int(hi[a]), strides[a]) if a != slab_axis else None for a in range(dims)]
    parts: list[list[np.ndarray]] = [[], []]
    slabs = []
    for s in range(n_slabs):
        a = first + s * width
        starts = np.arange(a + g_lo, a + width - g_hi - extent + 1, strides[slab_axis])
        along = starts + half
        slabs.append({"slab": s, "split": "train" if s % 2 == 0 else "test", "from": a, "to": a + width, "centres": along.tolist()})
        grid = np.meshgrid(*[along if ax is None else ax for ax in axes], indexing="ij")
        parts[s % 2].append(np.stack([g.reshape(-1) for g in grid], axis=1))
    train, test = (np.concatenate(p).astype(np.int64) if p else np.zeros((0, dims), np.int64) for p in parts)
    info = {"slab_axis": slab_axis, "slab_width": width, "gap": int(gap), "n_slabs": n_slabs, "slabs": slabs,
            "bbox": [lo.tolist(), hi.tolist()], "stride": list(strides)}
    return train, test, info


def check_disjoint(train: np.ndarray, test: np.ndarray, crop_shape: Sequence[int], slab_axis: int | None = None, gap: int = 0) -> None:
    """Raise MedrepError if any test crop shares a voxel with a train crop, or (with ``slab_axis``)
    if along that axis a train and a test crop are closer than ``gap`` voxels."""
    crop = np.asarray(crop_shape, dtype=np.int64)
    train = np.asarray(train, dtype=np.int64).reshape(-1, len(crop))
    test = np.asarray(test, dtype=np.int64).reshape(-1, len(crop))
    if slab_axis is not None:
        need = crop[slab_axis] + gap
        tr, te = np.unique(train[:, slab_axis]), np.unique(test[:, slab_axis])
        d = np.abs(tr[:, None] - te[None, :])
        if d.size and d.min() < need:
            i, j = np.unravel_index(np.argmin(d), d.shape)
            raise MedrepError(f"train and test crops centred at {tr[i]} and {te[j]} along axis {slab_axis} are closer than "
                              f"crop + gap = {need} voxels", "slab split")
    for start in range(0, len(test), 512):  # chunked pairwise box overlap test
        diff = np.abs(test[start : start + 512, None, :] - train[None, :, :])
        overlap = np.all(diff < crop[None, None, :], axis=2)
        if overlap.any():
            i, j = np.argwhere(overlap)[0]
            raise MedrepError(f"test crop at {test[start + i].tolist()} overlaps train crop at {train[j].tolist()}", "slab split")
