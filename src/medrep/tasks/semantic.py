"""Semantic tasks: the target says *what* is where (a structure's mask, its contour, box, centre,
distance map ...). Those that need a label map have ``needs_mask``; which structure of a label map a
sample shows is drawn from ``rng`` among the labels present. Three tasks need no mask (``edges``,
``foreground``, ``intensity_classes``), so images without label maps still give semantic samples.

Every target is scaled to [0, 1]. Lengths (thickness, margin, sigma, saturation distance) are in
pixels of the image as given, as in ``segment_structure``. A structure cut by the image's edge has
no boundary along that edge: distances are to pixels outside the structure, not to the frame.
Each task keeps the default failure variant (the target of a mismatched copy of the image or mask,
with the same drawn label): a genuine-looking target of the wrong content."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .base import Pair, register_task


def pick_label(mask: np.ndarray, rng: np.random.Generator) -> int:
    labels = np.unique(mask)
    labels = labels[labels > 0]
    return int(rng.choice(labels))


def _depth(fg: np.ndarray) -> np.ndarray:
    """Euclidean distance (pixels) from each pixel of ``fg`` to the nearest pixel outside it (1 on
    its boundary, 0 outside). A structure filling the whole image has no boundary: inf."""
    if fg.all():  # scipy's transform returns garbage without a single background pixel
        return np.full(fg.shape, np.inf)
    return ndimage.distance_transform_edt(fg)


def _box(fg: np.ndarray) -> tuple[int, int, int, int]:
    """First and last row, first and last column of ``fg`` (inclusive)."""
    rows, cols = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def _in_box(shape: tuple[int, ...], r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    rows, cols = np.arange(shape[0])[:, None], np.arange(shape[1])[None, :]
    return (rows >= r0) & (rows <= r1) & (cols >= c0) & (cols <= c1)


def _spots(shape: tuple[int, ...], centres: np.ndarray, sigma: float) -> np.ndarray:
    """Peak-1 Gaussian spots at ``centres`` ((N, 2) row, col), merged by their maximum: the Gaussian of
    the distance to the nearest centre, so one exp, and one (H, W) buffer however many labels an atlas has."""
    rows, cols = np.arange(shape[0], dtype=np.float32), np.arange(shape[1], dtype=np.float32)
    d2 = np.full(shape, np.inf, np.float32)
    for cy, cx in centres:
        np.minimum(d2, ((rows - cy) ** 2)[:, None] + ((cols - cx) ** 2)[None, :], out=d2)
    return np.exp(-d2 / (2.0 * sigma**2))


def _otsu(image: np.ndarray) -> float:
    """Otsu's threshold over a 256-bin histogram of [0, 1]: the cut maximising between-class variance."""
    hist = np.bincount(np.clip((image * 256).astype(np.int64), 0, 255).ravel(), minlength=256).astype(np.float64)
    centres = (np.arange(256) + 0.5) / 256
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (m0 / w0 - (m0[-1] - m0) / w1) ** 2
    between = np.nan_to_num(between[:-1])  # a cut after the last bin leaves one class empty
    return float((np.argmax(between) + 1) / 256)


@register_task("segment_structure", "semantic", "binary mask of one labelled structure (drawn from the labels present); "
               "strength dilates the structure's mask by up to 3 pixels", needs_mask=True)
def segment_structure(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, strength: float) -> Pair:
    fg = mask == pick_label(mask, rng)
    steps = int(round(3 * strength))
    if steps:
        fg = ndimage.binary_dilation(fg, iterations=steps)
    return image, fg.astype(np.float32)


@register_task("segment_multiclass", "semantic", "every labelled structure at once as one map: the k-th smallest of the "
               "n labels present has value k/n, background 0; strength grows every structure into the background by up "
               "to 3 pixels (each background pixel takes its nearest label, so neighbours meet halfway)", needs_mask=True)
def segment_multiclass(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, strength: float) -> Pair:
    labels = np.unique(mask)
    labels = labels[labels > 0]
    grown = mask
    if strength > 0 and (mask == 0).any():
        dist, (iy, ix) = ndimage.distance_transform_edt(mask == 0, return_indices=True)
        grown = np.where(dist <= 3.0 * strength, mask[iy, ix], mask)
    rank = np.searchsorted(labels, grown) + 1  # 1..n on labels; background is masked out below
    return image, np.where(grown > 0, rank / len(labels), 0.0)


@register_task("contour", "semantic", "the boundary band of one labelled structure (drawn): its pixels within a distance "
               "of the outside; strength sets the band's thickness from 1 to 4 pixels", needs_mask=True)
def contour(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, strength: float) -> Pair:
    depth = _depth(mask == pick_label(mask, rng))
    return image, (depth > 0) & (depth <= 1.0 + 3.0 * strength)


@register_task("bounding_box", "semantic", "filled axis-aligned bounding box of one labelled structure (drawn); strength "
               "widens the box by a margin of 0 to 4 pixels on every side (clipped to the image)", needs_mask=True)
def bounding_box(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, strength: float) -> Pair:
    r0, r1, c0, c1 = _box(mask == pick_label(mask, rng))
    m = int(round(4 * strength))
    return image, _in_box(image.shape, r0 - m, r1 + m, c0 - m, c1 + m)


@register_task("box_outline", "semantic", "outline of the tight bounding box of one labelled structure (drawn); strength "
               "thickens the outline inward from 1 to 3 pixels", needs_mask=True)
def box_outline(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, strength: float) -> Pair:
    r0, r1, c0, c1 = _box(mask == pick_label(mask, rng))
    t = 1 + int(round(2 * strength))
    return image, _in_box(image.shape, r0, r1, c0, c1) & ~_in_box(image.shape, r0 + t, r1 - t, c0 + t, c1 - t)


@register_task("centroid_heatmap", "semantic", "a peak-1 Gaussian spot at the centroid (centre of mass, sub-pixel; it may "
               "lie outside a non-convex structure) of one labelled structure (drawn); strength sets the spot's sigma "
               "from 1 to 6 pixels", needs_mask=True)
def centroid_heatmap(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, strength: float) -> Pair:
    centre = np.argwhere(mask == pick_label(mask, rng)).mean(axis=0)
    return image, _spots(image.shape, centre[None].astype(np.float32), 1.0 + 5.0 * strength)


@register_task("detect_centroids", "semantic", "detection of every labelled structure at once: a peak-1 Gaussian spot at "
               "each label's centroid (spots merged by their maximum); strength sets sigma from 1 to 6 pixels",
               needs_mask=True)
def detect_centroids(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, strength: float) -> Pair:
    labels = np.unique(mask)
    labels = labels[labels > 0]
    centres = np.asarray(ndimage.center_of_mass(np.ones(mask.shape), mask, labels), dtype=np.float32).reshape(-1, 2)
    return image, _spots(image.shape, centres, 1.0 + 5.0 * strength)


@register_task("distance_map", "semantic", "distance from each pixel of one labelled structure (drawn) to the nearest "
               "pixel outside it (1 pixel on its boundary, growing inward; 0 outside), divided by a saturation "
               "distance and clipped at 1; strength sets the saturation distance from 2 to 16 pixels", needs_mask=True)
def distance_map(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, strength: float) -> Pair:
    depth = _depth(mask == pick_label(mask, rng))
    return image, np.minimum(depth / (2.0 + 14.0 * strength), 1.0)


@register_task("signed_distance", "semantic", "signed distance to the boundary of one labelled structure (drawn), "
               "positive inside, negative outside, the boundary half a pixel from each side's pixels; mapped to [0, 1] "
               "as 0.5 + 0.5 * clip(d / D, -1, 1) (0.5 on the boundary); strength sets the saturation distance D from "
               "2 to 16 pixels", needs_mask=True)
def signed_distance(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, strength: float) -> Pair:
    fg = mask == pick_label(mask, rng)
    signed = np.where(fg, _depth(fg) - 0.5, 0.5 - _depth(~fg))
    return image, 0.5 + 0.5 * np.clip(signed / (2.0 + 14.0 * strength), -1.0, 1.0)


@register_task("edges", "semantic", "where the edges are, no mask needed: Sobel gradient magnitude of the image after a "
               "Gaussian pre-smoothing, scaled to peak 1 (a flat image has none); strength sets the smoothing sigma "
               "from 0 to 3 pixels (0: none), keeping coarser edges only")
def edges(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
    smooth = ndimage.gaussian_filter(image, 3.0 * strength) if strength > 0 else image
    mag = np.hypot(ndimage.sobel(smooth, axis=0), ndimage.sobel(smooth, axis=1))
    peak = mag.max()
    return image, mag / peak if peak > 1e-6 else np.zeros_like(mag)


@register_task("foreground", "semantic", "body / foreground mask, no mask needed: pixels above a threshold, holes "
               "filled (speckle above it stays); strength lowers the threshold from the image's Otsu level to a quarter "
               "of it, taking in fainter tissue (skin, lung fields, fat)")
def foreground(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
    # A lower threshold gives a superset, and hole filling keeps supersets, so the mask only grows with strength.
    return image, ndimage.binary_fill_holes(image > _otsu(image) * (1.0 - 0.75 * strength))


# Not monotone: each class count re-cuts every level, so the k-class map is not "between" its neighbours. On a
# continuous image the mean distance from the 2-class map is 1/6, 1/6, 1/5 of the range for k = 3, 4, 5: flat
# from 3 to 4, and with tied intensities (a CT's air) it can fall.
@register_task("intensity_classes", "semantic", "tissue classes by intensity, no mask needed: the image cut at its "
               "equal-population quantiles into k classes, class c of k shown as c / (k - 1); strength sets k from 2 "
               "to 5", monotone=False)
def intensity_classes(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
    k = 2 + int(round(3 * strength))
    cuts = np.quantile(image, np.arange(1, k) / k)
    return image, np.searchsorted(cuts, image, side="right") / (k - 1)
