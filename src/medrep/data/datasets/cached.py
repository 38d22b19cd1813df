"""Shared item access for datasets: index checks, an optional in-memory cache of loaded samples,
and the per-item transform applied to a fresh copy so that it can never alter the cached one."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

Sample = dict[str, Any]


class CachedDataset(Dataset):
    cache: bool
    transform: Any
    _cache: dict[int, Sample]

    def _load_index(self, index: int) -> Sample:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Any:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)}")
        sample = self._cache.get(index)
        if sample is None:
            sample = self._load_index(index)
            if self.cache:
                self._cache[index] = sample
        sample = {**sample, "image": sample["image"].clone() if self.cache else sample["image"]}
        sample["meta"] = {**sample["meta"], "index": index}
        return self.transform(sample) if self.transform is not None else sample
