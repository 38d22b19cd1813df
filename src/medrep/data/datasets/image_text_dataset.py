"""A torch Dataset over :class:`~medrep.data.datasets.image_text.ImageTextRow` studies, and its collate.

Training sees one image of a study per access, drawn at random, so a two-view chest X-ray study
yields both views over the epochs without doubling the batch. Evaluation sees every image of the
study (``images``: ``(N, C, *spatial)``) so that retrieval can pool them into one study embedding.
Images are read with :func:`~medrep.data.io.readers.read_image` and a
:class:`~medrep.data.datasets.preprocess.Preprocess`, so intensity and size options act as everywhere else.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ...errors import DataError
from ..io.readers import read_image
from ..io.reports import clean_text, split_sentences
from .image_text import ImageTextRow

Sample = dict[str, Any]


class PackedRows(Sequence[ImageTextRow]):
    """Rows kept as one byte string (each row pickled, with their end offsets), decoded on access.

    A list of row objects would cost each forked loader worker a private copy of every row it
    serves: reading a Python object writes its reference count, and the write copies its page. Over
    an epoch of CT-RATE's ~50,000 studies that is a copy of all the rows (their report texts) per
    worker; a byte string is read without being written, so its pages stay shared. The bytes are
    this process's own, never read from a file, so unpickling them runs nothing foreign.
    """

    def __init__(self, rows: Sequence[ImageTextRow]):
        self._data, self._ends = bytearray(), np.empty(len(rows), dtype=np.int64)
        for i, row in enumerate(rows):  # appended one by one: packing holds the rows and one copy, not two
            self._data += pickle.dumps(row, protocol=pickle.HIGHEST_PROTOCOL)
            self._ends[i] = len(self._data)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int | slice) -> Any:  # a row, or a list of them for a slice
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = range(len(self))[index]  # negative indices, and IndexError past the end
        start = int(self._ends[index - 1]) if index else 0
        return pickle.loads(memoryview(self._data)[start : int(self._ends[index])])


class ImageTextDataset(Dataset):
    """Items ``{"image" | "images", "spacing", "text", "sentences", "study", "meta"}`` plus ``label``
    when known; ``spacing`` is each image's voxel size in mm after preprocessing (``(spatial_dims,)``
    in training, ``(N, spatial_dims)`` in evaluation).

    ``text`` is the report on one line (:func:`~medrep.data.io.reports.clean_text`) and
    ``sentences`` its :func:`~medrep.data.io.reports.split_sentences`. Class-name labels become
    indices into ``classes`` (sorted over all rows, so every split shares one mapping).

    The training draw depends on ``seed``, on torch's initial seed (so DataLoader workers and
    epochs differ, and ``seed_everything`` makes a run repeatable), on the index and on how
    often this copy of the dataset has served it. The rows are :class:`PackedRows`, and that count is
    one array entry per row, allocated up front, so that a loader worker's memory does not grow with
    the number of studies it serves.
    """

    def __init__(
        self,
        rows: Sequence[ImageTextRow],
        preprocess: Callable[[Sample], Sample] | None = None,
        split: str | None = None,
        spatial_dims: int | None = None,
        train: bool = True,
        seed: int = 0,
    ):
        if spatial_dims not in (None, 2, 3):
            raise DataError(f"must be 2, 3 or None, got {spatial_dims!r}", "data.spatial_dims")
        rows = list(rows)
        labels = [r.label for r in rows if r.label is not None]
        self.classes: list[str] = sorted({str(v) for v in labels}) if any(isinstance(v, str) for v in labels) else []
        if split is not None:
            present = sorted({r.split for r in rows if r.split is not None})
            rows = [r for r in rows if r.split == split]
            if not rows:
                raise DataError(f"no study has split {split!r}; splits present: {', '.join(present) or 'none'}", "split")
        self.rows = PackedRows(rows)
        self.preprocess = preprocess
        self.split = split
        self.spatial_dims = spatial_dims
        self.train = bool(train)
        self.seed = int(seed)
        self._draws = np.zeros(len(rows), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def _read(self, path: str) -> tuple[torch.Tensor, torch.Tensor]:
        sample = read_image(path, self.spatial_dims)
        if self.preprocess is not None:
            sample = self.preprocess(sample)
        return sample["image"], sample["spacing"]

    def _pick(self, index: int, choices: int) -> int:
        count = int(self._draws[index])
        self._draws[index] = count + 1
        rng = np.random.default_rng([self.seed, torch.initial_seed() % 2**63, index, count])
        return int(rng.integers(choices))

    def label_of(self, row: ImageTextRow) -> int | None:
        if row.label is None:
            return None
        return self.classes.index(str(row.label)) if self.classes else int(row.label)

    def __getitem__(self, index: int) -> Sample:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)}")
        row = self.rows[index]
        meta: dict[str, Any] = {"index": index, "split": row.split, "patient": row.patient}
        item: Sample = {}
        if self.train:
            path = row.images[self._pick(index, len(row.images))]
            (item["image"], item["spacing"]), meta["path"] = self._read(path), path
        else:
            images, spacings = zip(*(self._read(p) for p in row.images))
            shapes = sorted({tuple(i.shape) for i in images})
            if len(shapes) > 1:
                raise DataError(f"study {row.study}: images of shapes {shapes} cannot be stacked; set data.size to resize", "data.size")
            item["images"], item["spacing"], meta["paths"] = torch.stack(images), torch.stack(spacings), list(row.images)
        item.update(text=clean_text(row.report, row.source), sentences=split_sentences(row.report), study=row.study, meta=meta)
        label = self.label_of(row)
        if label is not None:
            item["label"] = torch.tensor(label, dtype=torch.int64)
        return item


def _stack(tensors: list[torch.Tensor], what: str) -> torch.Tensor:
    flat = what == "images"
    shapes = sorted({tuple(t.shape[1:] if flat else t.shape) for t in tensors})
    if len(shapes) > 1:
        raise DataError(f"cannot batch {what!r} of different shapes {shapes}; set data.size to resize", "data.size")
    return torch.cat(tensors) if flat else torch.stack(tensors)


def collate_image_text(batch: Sequence[Sample]) -> dict[str, Any]:
    """Batch :class:`ImageTextDataset` items (a DataLoader ``collate_fn``).

    Train items: ``image`` ``(B, C, *spatial)`` and ``spacing`` ``(B, spatial_dims)``. Eval items:
    ``images`` ``(sum N_b, C, *spatial)`` and ``spacing`` ``(sum N_b, spatial_dims)`` flat, with
    ``image_study`` ``(sum N_b,)`` giving the item (0..B-1) each image belongs to, for pooling with
    ``index_add_`` or ``scatter``. ``text``, ``sentences``, ``study`` and ``meta``
    stay lists; ``label`` ``(B,)`` when every item has one.
    """
    if not batch:
        raise DataError("cannot collate an empty list of samples", "batch")
    modes = {"image" in item for item in batch}
    if len(modes) > 1:
        raise DataError("a batch mixes training items (one image) and evaluation items (all images)", "batch")
    out: dict[str, Any] = {key: [item[key] for item in batch] for key in ("text", "sentences", "study", "meta")}
    if modes == {True}:
        out["image"] = _stack([item["image"] for item in batch], "image")
        out["spacing"] = torch.stack([item["spacing"] for item in batch])
    else:
        out["images"] = _stack([item["images"] for item in batch], "images")
        out["spacing"] = torch.cat([item["spacing"] for item in batch])
        counts = [len(item["images"]) for item in batch]
        out["image_study"] = torch.repeat_interleave(torch.arange(len(batch)), torch.tensor(counts))
    has_label = ["label" in item for item in batch]
    if any(has_label) and not all(has_label):
        raise DataError("some items of the batch have a label and some do not", "batch")
    if all(has_label):
        out["label"] = torch.stack([item["label"] for item in batch])
    return out
