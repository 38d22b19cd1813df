"""Training patches for dense fine-tuning: the patch size rule, the label fraction, seeded draws.

**Patch size.** Square (2D) or cubic (3D) patches of ``patch`` voxels, a multiple of 16 (four
poolings of the U-Net; for another encoder, of its coarsest reduction, e.g. 32 for a ResNet with the
ImageNet stem). Default (``patch=None``): 256 in 2D and 64 in 3D, each axis capped at the largest
training extent rounded up to that multiple, so 2D slices smaller than 256 are taken whole. An
encoder that takes one input size only (a ViT: its ``img_size``) sets the patch; another ``patch``
is an error. An item smaller than the patch along an axis is padded (centred; image with its
minimum, mask with background). An explicit ``patch`` larger than *every* training item along some
axis (beyond that rounding) would train on padding only, so it is refused with an error naming the
largest item.

**Label fraction.** ``unit="items"`` (2D always; 3D with 10 or more training volumes): a
fraction f keeps ``max(1, round(f * n))`` items (slices, images or volumes), the first of one
permutation per seed, so smaller fractions are subsets of larger ones; patches are then drawn at
fresh random positions in the kept items. ``unit="patches"`` (3D with fewer than 10 volumes, as
Colin27's one training hemisphere): a pool of ``pool`` patch positions (volume uniform, then
position uniform) is drawn once per seed and f keeps its first ``max(1, round(f * pool))``
positions: the annotated patches. ``n_train`` is the number of items or positions kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..data.datasets.segmentation import SegItem
from ..errors import MedrepError

DEFAULT_PATCH = {2: 256, 3: 64}
MIN_VOLUMES_FOR_ITEMS = 10


def _up(n: int, multiple: int = 16) -> int:
    return -(-int(n) // multiple) * multiple


def resolve_patch(patch: int | None, items: Sequence[SegItem], dims: int, multiple: int = 16,
                  why: str = "the U-Net pools 4 times", size: Sequence[int] | None = None) -> tuple[int, ...]:
    """Patch shape per axis under the rule above. ``multiple`` and ``why``: what the model's input
    sizes must divide by, and why (a ResNet decoder: its coarsest reduction); ``size``: the one
    input size the model takes (a ViT's ``img_size``), which is then the patch."""
    if size is not None:
        size = tuple(int(s) for s in size)
        if patch is not None and (patch,) * dims != size:
            raise MedrepError(f"{why}, so the training patch and sliding window are {'x'.join(map(str, size))}; got --patch "
                              f"{patch}: leave --patch out (it is then taken from the encoder)"
                              + (f" or use --patch {size[0]}" if len(set(size)) == 1 else ""), "--patch")
        return size
    extents = np.array([it.image.shape for it in items])
    fit = [_up(n, multiple) for n in extents.max(axis=0)]
    if patch is None:
        return tuple(min(_up(DEFAULT_PATCH[dims], multiple), f) for f in fit)
    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < multiple or patch % multiple:
        raise MedrepError(f"must be a positive multiple of {multiple} ({why}), got {patch!r}", "--patch")
    for axis, f in enumerate(fit):
        if patch > f:
            largest = items[int(extents[:, axis].argmax())]
            raise MedrepError(f"--patch {patch} is larger than every training item along axis {axis}: the largest, this one, "
                              f"has {extents[:, axis].max()} voxels there; use --patch {min(fit)} or less", largest.name)
    return (int(patch),) * dims


def label_unit(unit: str, items: Sequence[SegItem], dims: int) -> str:
    if unit == "auto":
        return "items" if dims == 2 or len(items) >= MIN_VOLUMES_FOR_ITEMS else "patches"
    if unit not in ("items", "patches"):
        raise MedrepError(f"must be auto, items or patches, got {unit!r}", "label_unit")
    return unit


def _pad_to(array: np.ndarray, shape: Sequence[int], value: float) -> np.ndarray:
    pad = [((max(0, s - n)) // 2, max(0, s - n) - max(0, s - n) // 2) for n, s in zip(array.shape, shape)]
    return np.pad(array, pad, constant_values=value) if any(p != (0, 0) for p in pad) else array


class PatchSampler:
    """Seeded patches of ``items`` at a fixed label fraction, as (B, 1, *patch) tensors."""

    def __init__(self, items: Sequence[SegItem], patch: tuple[int, ...], fraction: float, seed: int, unit: str, pool: int = 200):
        self.patch = tuple(patch)
        self.images = [_pad_to(it.image, patch, float(it.image.min())) for it in items]
        self.masks = [_pad_to(it.mask, patch, 0) for it in items]
        self.unit = unit
        pick = np.random.default_rng(seed)
        if unit == "items":
            keep = max(1, round(fraction * len(items)))
            self.kept = pick.permutation(len(items))[:keep].tolist()
            self.positions: list[tuple[int, tuple[int, ...]]] = []
            self.n_train = keep
        else:
            drawn = [self._random_position(int(pick.integers(len(items))), pick) for _ in range(pool)]
            self.positions = drawn[: max(1, round(fraction * pool))]
            self.kept = sorted({i for i, _ in self.positions})
            self.n_train = len(self.positions)
        self.rng = np.random.default_rng([seed, 1])

    def _random_position(self, i: int, rng: np.random.Generator) -> tuple[int, tuple[int, ...]]:
        shape = self.images[i].shape
        return i, tuple(int(rng.integers(n - p + 1)) for n, p in zip(shape, self.patch))

    def draw(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.positions:
            refs = [self.positions[int(j)] for j in self.rng.integers(len(self.positions), size=batch_size)]
        else:
            refs = [self._random_position(int(self.rng.choice(self.kept)), self.rng) for _ in range(batch_size)]
        cuts = [tuple(slice(s, s + p) for s, p in zip(start, self.patch)) for _, start in refs]
        x = np.stack([self.images[i][c] for (i, _), c in zip(refs, cuts)])[:, None]
        y = np.stack([self.masks[i][c] for (i, _), c in zip(refs, cuts)])[:, None]
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(np.ascontiguousarray(y))
