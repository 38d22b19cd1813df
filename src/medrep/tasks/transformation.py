"""Transformation tasks: the target is the input geometrically or photometrically transformed
(rotation, flips, zoom, brightness, gamma ...). Strength is the size of the transformation; the
direction (sign, axis, angle) is drawn from ``rng`` before anything depends on strength, so one seed
gives the same direction at every strength and a strength sweep is one trajectory.

Every geometric task resamples bilinearly (order 1) with zero fill outside the image, through
:func:`resample`/:func:`shifted`: one interpolation and boundary rule for all, so that neither tells
tasks apart. Intensity tasks clip to [0, 1], the range the image came in.

Failure variants. The default (the task's target of :func:`~medrep.tasks.base.mismatch`, a copy
rolled by about half the size and mirrored) is kept where the failure pair is no pair of the task nor
of a neighbour along its strength sweep. It is replaced by :func:`on_scrambled` (the task's target,
same random choices, of a band-scrambled copy) where the roll or the mirror is itself the task's kind
of transformation:

- flip_horizontal: the mismatch's mirror cancels the flip, so the failure target is the input rolled,
  not flipped at all: a translation pair (exactly so under a wrap boundary, and under our zero fill
  whenever the content clears the wrap lines);
- flip_vertical: mirror and flip make a 180 degree rotation of the rolled input: a rotation pair;
- translate: on content that is left-right symmetric and clears the wrap lines (an off-centre
  structure on a dark background) the mismatched copy *is* the image translated, by half its height
  or more, so after the task's own move (at most a quarter) the failure target is the image moved by
  about a quarter or more: just past the end of the range, a point further along the task's own
  sweep rather than a wrong pair (and under a wrap boundary, an instance).

A scrambled copy is no translation, flip, rotation or warp of the image, so its transformed copy is no
instance of any task here (tests/tasks/test_transformation_tasks.py checks both claims). Its price:
band seams a genuine target never has. Taking another task's genuine target as a failure was rejected:
failure samples are negatives for every anchor, so they would be negatives identical to that task's
positives. rotate keeps the default: rotation about the centre keeps distances from the centre, which
the roll changes, so no admissible rotation reaches the failure target (tested).
"""

from __future__ import annotations

import numpy as np

from .base import Generator, Pair, register_task

#: bilinear resampling, zero outside the image: the one rule of every geometric task
ORDER = 1
FILL = 0.0
#: band order of :func:`scramble`: no cyclic shift (a roll) nor reversal (a mirror) of 0..3, and
#: no two bands adjacent in the image stay adjacent, so every band edge is a seam
BANDS = (2, 0, 3, 1)


def sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


# --- geometry: pure helpers (tests check them against simple expectations) --------------------------

def resample(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``out[p] = image[c + matrix @ (p - c)]`` about the centre ``c``: the output-to-input map of
    scipy's ``affine_transform``, bilinear, zero fill."""
    from scipy import ndimage

    centre = (np.asarray(image.shape, float) - 1) / 2
    offset = centre - matrix @ centre
    return ndimage.affine_transform(image, matrix, offset=offset, order=ORDER, mode="constant", cval=FILL)


def shifted(image: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """The image moved by ``(dy, dx)`` pixels (down, right), bilinear, zero fill."""
    from scipy import ndimage

    return ndimage.shift(image, (dy, dx), order=ORDER, mode="constant", cval=FILL)


def warped(image: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """``out[p] = image[p + displacement[:, p]]`` for a ``(2, H, W)`` field (rows, columns)."""
    from scipy import ndimage

    grid = np.indices(image.shape, dtype=np.float64)
    return ndimage.map_coordinates(image, grid + displacement, order=ORDER, mode="constant", cval=FILL)


def smooth_field(shape: tuple[int, int], rng: np.random.Generator, nodes: int = 5) -> np.ndarray:
    """A ``(2, H, W)`` displacement field of unit peak length, smooth on the scale of a quarter of
    the image: a cubic spline through a ``nodes x nodes`` grid of Gaussian displacements (the same
    draws at every image size, so the field is resolution independent)."""
    from scipy import ndimage

    coarse = rng.standard_normal((2, nodes, nodes))
    rows, cols = (np.linspace(0, nodes - 1, n) for n in shape)
    where = np.stack(np.meshgrid(rows, cols, indexing="ij"))
    field = np.stack([ndimage.map_coordinates(c, where, order=3, mode="nearest") for c in coarse])
    peak = np.sqrt((field ** 2).sum(0)).max()
    return field / max(peak, 1e-12)


def scramble(a: np.ndarray) -> np.ndarray:
    """The image cut into 4 row bands and 4 column bands, each reordered by :data:`BANDS`: the same
    pixels, no longer one scene; deterministic, so a failure variant is seeded by ``rng`` alone."""
    def order(n: int) -> np.ndarray:
        edges = np.linspace(0, n, len(BANDS) + 1).round().astype(int)
        return np.concatenate([np.arange(edges[b], edges[b + 1]) for b in BANDS])

    return np.ascontiguousarray(a[..., order(a.shape[-2]), :][..., order(a.shape[-1])])


def on_scrambled(make: Generator) -> Generator:
    """Failure variant of a task whose input is the image: the task's target (same random choices)
    of a scrambled copy of the image."""
    def fail(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
        return image, make(scramble(image), None, rng, strength)[1]

    return fail


# --- geometric tasks --------------------------------------------------------------------------------

@register_task("rotate", "transformation", "rotate about the centre by up to 45 degrees (direction drawn), bilinear, zero fill")
def rotate(image, mask, rng, strength):
    from scipy import ndimage

    return image, ndimage.rotate(image, sign(rng) * 45.0 * strength, reshape=False, order=ORDER, mode="constant", cval=FILL)


# A mirror is all or nothing: a blend of the image and its mirror is a double exposure (another task),
# not a weaker flip. So strength does nothing, and a strength ordering has no meaning (monotone=False).
def _flip_horizontal(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
    return image, image[:, ::-1]


def _flip_vertical(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
    return image, image[::-1, :]


flip_horizontal = register_task(
    "flip_horizontal", "transformation", "mirror left-right (about the vertical centre line); strength does nothing "
    "(a mirror has no size); failure: the mirror of a band-scrambled copy", fail=on_scrambled(_flip_horizontal),
    monotone=False)(_flip_horizontal)
flip_vertical = register_task(
    "flip_vertical", "transformation", "mirror top-bottom (about the horizontal centre line); strength does nothing "
    "(a mirror has no size); failure: the mirror of a band-scrambled copy", fail=on_scrambled(_flip_vertical),
    monotone=False)(_flip_vertical)


def _translate(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
    angle = rng.uniform(0.0, 2 * np.pi)
    h, w = image.shape
    return image, shifted(image, 0.25 * strength * h * np.sin(angle), 0.25 * strength * w * np.cos(angle))


translate = register_task(
    "translate", "transformation", "move the image by up to a quarter of its size (strength x 0.25 x height and "
    "width along a drawn direction), bilinear, zero fill; failure: the same move of a band-scrambled copy",
    fail=on_scrambled(_translate))(_translate)


@register_task("zoom", "transformation", "magnify (centre crop) or shrink (zero border) about the centre by a factor "
               "1.5^strength, in or out drawn: up to 1.5x in or 1/1.5 out, bilinear")
def zoom(image, mask, rng, strength):
    factor = 1.5 ** (sign(rng) * strength)
    return image, resample(image, np.eye(2) / factor)


@register_task("shear", "transformation", "shear about the centre along rows or columns (drawn), direction drawn: a line "
               "r pixels from the centre slides by strength x 0.5 x r pixels (up to 26.6 degrees), bilinear, zero fill")
def shear(image, mask, rng, strength):
    along_rows = rng.random() < 0.5
    k = sign(rng) * 0.5 * strength
    matrix = np.array([[1.0, k], [0.0, 1.0]]) if along_rows else np.array([[1.0, 0.0], [k, 1.0]])
    return image, resample(image, matrix)


@register_task("elastic", "transformation", "smooth random warp (a field smooth on a quarter of the image, drawn); "
               "its largest displacement is strength x 6 % of the image side, bilinear, zero fill")
def elastic(image, mask, rng, strength):
    field = smooth_field(image.shape, rng)
    return image, warped(image, field * (0.06 * strength * max(image.shape)))


# --- intensity tasks --------------------------------------------------------------------------------

@register_task("brightness", "transformation", "add a constant to every pixel, up to +-0.3 of the intensity range "
               "(strength x 0.3, sign drawn), clipped to [0, 1]")
def brightness(image, mask, rng, strength):
    return image, np.clip(image + sign(rng) * 0.3 * strength, 0.0, 1.0)


@register_task("contrast", "transformation", "scale intensity differences from the image mean by 2^strength, up or "
               "down drawn: up to twice or half the contrast, clipped to [0, 1]")
def contrast(image, mask, rng, strength):
    mean = image.mean()
    return image, np.clip(mean + 2.0 ** (sign(rng) * strength) * (image - mean), 0.0, 1.0)


@register_task("gamma", "transformation", "gamma curve x^g with g = 2^strength or 2^-strength (drawn): from the "
               "identity to g = 2 (darker mid-tones) or 0.5 (brighter); 0 and 1 stay fixed")
def gamma(image, mask, rng, strength):
    return image, image ** (2.0 ** (sign(rng) * strength))


# Inversion is all or nothing for the reason a flip is: the blend (1 - s) x + s (1 - x) is the flat
# image 0.5 at s = 0.5, whatever x, so the midpoint of its sweep is no task at all (monotone=False).
@register_task("invert", "transformation", "negative image, 1 - x (0 -> 1, 1 -> 0); strength does nothing: a "
               "partial blend is a flat grey image half way", monotone=False)
def invert(image, mask, rng, strength):
    return image, 1.0 - image


def equalised(image: np.ndarray) -> np.ndarray:
    """Histogram equalisation: each pixel becomes the fraction of pixels at or below it, rescaled so
    that the darkest value maps to 0 and the brightest to 1 (a constant image is returned as is)."""
    flat = image.ravel()
    n_min = np.count_nonzero(flat == flat.min())
    if n_min == flat.size:
        return image
    below = np.searchsorted(np.sort(flat), flat, side="right")
    return ((below - n_min) / (flat.size - n_min)).reshape(image.shape).astype(np.float32)


# A blend of two increasing maps of x is still an increasing map (unlike invert's), so strength can
# be a blend weight here.
@register_task("histogram_equalise", "transformation", "histogram equalisation blended in: target = (1 - strength) x "
               "+ strength x equalised(x); at 1 the intensities are spread to a flat histogram over [0, 1]")
def histogram_equalise(image, mask, rng, strength):
    return image, (1.0 - strength) * image + strength * equalised(image)


@register_task("window_level", "transformation", "CT-like display window: the range shown narrows from all of [0, 1] "
               "to 0.2 wide (5x contrast) about a level drawn between the image's 25th and 75th percentile; "
               "outside clips to black or white")
def window_level(image, mask, rng, strength):
    level = float(np.quantile(image, rng.uniform(0.25, 0.75)))
    low = strength * (level - 0.1)
    high = 1.0 - strength * (1.0 - (level + 0.1))
    return image, np.clip((image - low) / (high - low), 0.0, 1.0)


@register_task("posterise", "transformation", "quantise to 2^(8 - 7 x strength) evenly spaced grey levels (nearest): "
               "256 (8-bit, near identity) at 0 down to 2 (a threshold at 0.5) at 1")
def posterise(image, mask, rng, strength):
    steps = max(int(round(2.0 ** (8.0 - 7.0 * strength))), 2) - 1
    return image, np.round(image * steps) / steps
