"""Batching sample dicts into the dict batches the models and methods take.

Tensors of the same shape are stacked (``image`` -> ``(B, C, *spatial)``, ``spacing`` ->
``(B, spatial_dims)``, ``label`` -> ``(B,)``); ``meta`` and other non-tensor values (e.g. report
text) become lists. Images of different sizes cannot be stacked: that is reported as a
:class:`DataError` pointing at ``data.size`` rather than a bare stacking error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import DataError


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of sample dicts into one batch dict (usable as a DataLoader ``collate_fn``)."""
    if not samples:
        raise DataError("cannot collate an empty list of samples")
    keys = list(samples[0])
    for i, sample in enumerate(samples):
        if set(sample) != set(keys):
            raise DataError(f"sample {i} has keys {sorted(sample)}, sample 0 has {sorted(keys)}", "batch")
    batch: dict[str, Any] = {}
    for key in keys:
        values = [s[key] for s in samples]
        if key == "meta" or not all(isinstance(v, torch.Tensor) for v in values):
            batch[key] = list(values)
            continue
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) > 1:
            where = "data.size" if key == "image" else key
            raise DataError(f"cannot batch {key!r} of different shapes {sorted(shapes)}; set data.size to resize", where)
        batch[key] = torch.stack(values)
    return batch
