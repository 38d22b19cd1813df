"""Batching sample dicts into the dict batches the models and methods take.

Tensors of the same shape are stacked (``image`` -> ``(B, C, *spatial)``, ``spacing`` ->
``(B, spatial_dims)``, ``label`` -> ``(B,)``); ``meta`` and other non-tensor values (e.g. report
text) become lists. Images of different sizes cannot be stacked: that is reported as a
:class:`DataError` pointing at ``data.size`` rather than a bare stacking error.

Samples of K crops (from :class:`~medrep.data.datasets.crops.CropDataset`, recognised by their ``group``
key) are concatenated instead: every tensor has the K crops first, so a batch of B such samples
holds ``image`` ``(B*K, C, *size)``, ``coords`` ``(B*K, dims)``, ``group`` ``(B*K,)``,
``spacing`` ``(B*K, dims)`` (and ``label`` ``(B*K,)``), row ``b*K + j`` being crop ``j`` of
sample ``b``; ``meta`` stays one entry per sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ...errors import DataError


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of sample dicts into one batch dict (usable as a DataLoader ``collate_fn``)."""
    if not samples:
        raise DataError("cannot collate an empty list of samples")
    keys = list(samples[0])
    for i, sample in enumerate(samples):
        if set(sample) != set(keys):
            raise DataError(f"sample {i} has keys {sorted(sample)}, sample 0 has {sorted(keys)}", "batch")
    batch: dict[str, Any] = {}
    crops = "group" in keys
    for key in keys:
        values = [s[key] for s in samples]
        if key == "meta" or not all(isinstance(v, torch.Tensor) for v in values):
            batch[key] = list(values)
            continue
        if crops:
            batch[key] = _concat(key, values)
            continue
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) > 1:
            where = "data.size" if key == "image" else key
            raise DataError(f"cannot batch {key!r} of different shapes {sorted(shapes)}; set data.size to resize", where)
        batch[key] = torch.stack(values)
    return batch


def _concat(key: str, values: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate per-sample crop tensors ``(K, ...)`` along the crop axis."""
    shapes = {tuple(v.shape[1:]) for v in values}
    if any(v.ndim == 0 for v in values) or len(shapes) > 1:
        where = "data.crops.size" if key == "image" else key
        raise DataError(f"cannot concatenate crops of {key!r} with shapes {sorted({tuple(v.shape) for v in values})}", where)
    return torch.cat(values)
