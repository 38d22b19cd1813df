"""Several sources in one run (2D image-report pairs, 3D volume-report pairs, volumes alone): the
``mixed`` source's dataset, batch sampler and collate.

Grouped sub-batches, not per-step alternation: every step holds ``n_i`` items of each part ``i``
(``n_i`` from the part weights and ``data.batch_size``), and each part is collated on its own, so a
forward pass sees homogeneous tensors (one shape per part) while one step still holds 2D images
and 3D volumes. Why: a method whose loss spans the step (UniMedI's CLIP matrix) then puts a 2D
image and a 3D volume in the same softmax, which is what ties both to one report space; and every
parameter (the 2D and the 3D tokenizer) gets a gradient at every step, which DDP requires. With
alternation a step would use one tokenizer, DDP would need ``find_unused_parameters``, and every
rank would have to draw the same part.

Within a part, items are drawn with replacement, by a generator seeded from the run seed and the
draw id the sampler yields (like TaCo's task batches), so under DDP each rank draws its own items
and a part smaller than its share of an epoch simply repeats.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch.utils.data import BatchSampler, Dataset

from ...errors import DataError


def part_sizes(weights: Sequence[float], batch_size: int) -> list[int]:
    """Items of each part in a batch of ``batch_size``: proportional to ``weights`` (largest
    remainders get the rounding), at least one each (taken from the largest part)."""
    if batch_size < len(weights):
        raise DataError(f"must be at least the number of parts ({len(weights)}), got {batch_size}", "data.batch_size")
    share = np.asarray(weights, float) / float(np.sum(weights)) * batch_size
    sizes = np.floor(share).astype(int)
    for i in np.argsort(-(share - sizes), kind="stable")[: batch_size - int(sizes.sum())]:
        sizes[i] += 1
    for i in np.flatnonzero(sizes == 0):
        sizes[int(np.argmax(sizes))] -= 1
        sizes[i] = 1
    return sizes.tolist()


class MixedDataset(Dataset):
    """Items ``(part, index)`` -> the part's item with ``part`` added. ``len`` is the sum of the
    parts' lengths (what an epoch counts); ``skipped`` and ``reader_report`` gather the parts'."""

    def __init__(self, parts: Sequence[Dataset], names: Sequence[str], weights: Sequence[float],
                 collates: Sequence[Callable], seed: int = 0):
        if not (len(parts) == len(names) == len(weights) == len(collates)) or not parts:
            raise DataError("give one name, weight and collate per part, and at least one part", "data.parts")
        for name, part in zip(names, parts):
            if len(part) == 0:
                raise DataError(f"part {name!r} has no items", "data.parts")
        self.parts, self.names, self.weights, self.collates = list(parts), list(names), list(weights), list(collates)
        self.seed = int(seed)
        self.skipped = [(path, f"[{name}] {why}") for name, part in zip(names, parts) for path, why in getattr(part, "skipped", [])]
        counts, examples = {}, {}
        for name, part in zip(names, parts):
            report = getattr(part, "reader_report", None) or {}
            counts |= {f"[{name}] {why}": n for why, n in report.get("skipped", {}).items()}
            examples |= {f"[{name}] {why}": ids for why, ids in report.get("examples", {}).items()}
        self.reader_report = {"skipped": counts, "examples": examples}

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        part, index = key
        return self.parts[part][index] | {"part": part}


class MixedBatchSampler(BatchSampler):
    """Batches of ``part_sizes(weights, batch_size)`` items per part over the draw ids ``sampler``
    yields; keeps BatchSampler's signature so Lightning can rebuild it over a DistributedSampler."""

    def __init__(self, sampler, batch_size: int, drop_last: bool):
        super().__init__(sampler, batch_size, drop_last)
        dataset = getattr(sampler, "dataset", None) or getattr(sampler, "data_source", None)
        if not isinstance(dataset, MixedDataset):
            raise TypeError("MixedBatchSampler draws over a MixedDataset's sampler")
        self.lengths, self.seed = [len(p) for p in dataset.parts], dataset.seed
        self.sizes = part_sizes(dataset.weights, batch_size)

    def __iter__(self):
        for draws in super().__iter__():
            if len(draws) < self.batch_size:
                continue  # a short last batch cannot hold every part's share
            rng = np.random.default_rng([self.seed, int(draws[0])])
            yield [(part, int(rng.integers(self.lengths[part]))) for part, n in enumerate(self.sizes) for _ in range(n)]


MixedDataset.batch_sampler_class = MixedBatchSampler  # the engine's loader batches a MixedDataset with it


def collate_mixed(items: Sequence[dict[str, Any]], collates: Sequence[Callable] | None = None,
                  names: Sequence[str] | None = None) -> dict[str, Any]:
    """``{"parts": [batch of part 0, batch of part 1, ...]}``, each batched by its own source's
    collate (passed by :class:`MixedCollate`) and named (``name``); parts in order, absent ones left out."""
    by_part: dict[int, list] = {}
    for item in items:
        item = dict(item)
        by_part.setdefault(item.pop("part"), []).append(item)
    parts = []
    for part in sorted(by_part):
        batch = collates[part](by_part[part]) if collates else by_part[part]
        parts.append(batch | {"name": names[part] if names else str(part)})
    return {"parts": parts}


class MixedCollate:
    """A picklable ``collate_fn`` (DataLoader workers) bound to a MixedDataset's parts."""

    def __init__(self, dataset: MixedDataset):
        self.collates, self.names = dataset.collates, dataset.names

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return collate_mixed(items, self.collates, self.names)
