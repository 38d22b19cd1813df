"""Datasets over image files: the shared machinery (bad-file policy, preprocessing, cache) and
:class:`FolderDataset`, every readable image under a folder.

Bad input is never skipped silently. With ``skip_bad=False`` the first unreadable file raises its
:class:`DataError`. With ``skip_bad=True`` every file is read once up front; those that fail are
left out and listed in ``dataset.skipped`` as ``(path, reason)`` so the caller can report them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...errors import DataError
from ..io.dicom import dicom_files_in, group_series, read_dicom_files
from ..io.readers import image_format, read_image
from .cached import CachedDataset

Sample = dict[str, Any]


@dataclass(frozen=True)
class ImageRecord:
    """One item of a file dataset: a file, a DICOM series folder, or an explicit list of slices."""

    path: str
    label: int | None = None
    files: tuple[str, ...] | None = None  # slices of one DICOM series, when a folder holds several
    extra: dict[str, Any] = field(default_factory=dict)  # extra manifest fields copied into the sample


class FileDataset(CachedDataset):
    """Reads :class:`ImageRecord` items into sample dicts: ``image``, ``spacing``, ``meta`` and
    ``label`` when the record has one, plus any ``extra`` fields.

    ``preprocess`` (e.g. :class:`Preprocess`) runs once per sample and its output may be cached
    in memory (``cache=True``, for small sets); ``transform`` (augmentation) runs on every access
    and is never cached.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        spatial_dims: int | None = None,
        preprocess: Callable[[Sample], Sample] | None = None,
        transform: Callable[[Sample], Any] | None = None,
        skip_bad: bool = False,
        cache: bool = False,
    ):
        if spatial_dims not in (None, 2, 3):
            raise DataError(f"must be 2, 3 or None, got {spatial_dims!r}", "data.spatial_dims")
        self.spatial_dims = spatial_dims
        self.preprocess = preprocess
        self.transform = transform
        self.skip_bad = bool(skip_bad)
        self.cache = bool(cache)
        self.skipped: list[tuple[str, str]] = []
        self._cache: dict[int, Sample] = {}
        self.records: list[ImageRecord] = list(records)
        if self.skip_bad:
            self._drop_bad()

    def _drop_bad(self) -> None:
        kept, cached = [], {}
        for record in self.records:
            try:
                sample = self._load(record)
            except DataError as exc:
                self.skipped.append((record.path, str(exc)))
                continue
            if self.cache:
                cached[len(kept)] = sample
            kept.append(record)
        self.records, self._cache = kept, cached

    def _load(self, record: ImageRecord) -> Sample:
        if record.files is not None:
            sample = read_dicom_files(record.files, record.path, self.spatial_dims)
        else:
            sample = read_image(record.path, self.spatial_dims)
        if self.preprocess is not None:
            sample = self.preprocess(sample)
        if record.label is not None:
            sample["label"] = torch.tensor(record.label, dtype=torch.int64)
        for key, value in record.extra.items():
            sample.setdefault(key, value)
        return sample

    def __len__(self) -> int:
        return len(self.records)

    def _load_index(self, index: int) -> Sample:
        return self._load(self.records[index])

    @property
    def labels(self) -> list[int | None]:
        return [r.label for r in self.records]


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def scan_folder(root: str | Path, spatial_dims: int | None = None) -> list[tuple[str, tuple[str, ...] | None]]:
    """Every image under ``root`` as ``(path, series_files)``, sorted; recursive, hidden entries skipped.

    DICOM files of one series in one folder (same SeriesInstanceUID, with positions) become one
    3D item unless ``spatial_dims`` is 2; when a folder holds several series, each is an item
    named ``"<folder> [series i of n]"`` carrying its file list. Other DICOM files, NIfTI and
    PNG/JPEG are one item each.
    Files of other types (text, JSON, ...) are not images and are ignored.
    """
    items: list[tuple[str, tuple[str, ...] | None]] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        dicoms = set(dicom_files_in(folder))
        for name in sorted(files):
            path = os.path.join(folder, name)
            if _is_hidden(name) or path in dicoms:
                continue
            if image_format(path) is not None:
                items.append((path, None))
        if not dicoms:
            continue
        if spatial_dims == 2 or len(dicoms) == 1:
            items.extend((p, None) for p in sorted(dicoms))
            continue
        series, singles = group_series(sorted(dicoms))
        if len(series) == 1 and not singles:
            items.append((folder, None))  # the whole folder is one series
        else:
            items.extend(
                (f"{folder} [series {i + 1} of {len(series)}]", tuple(files)) for i, files in enumerate(series)
            )
            items.extend((p, None) for p in singles)
    return sorted(items, key=lambda item: item[0])


class FolderDataset(FileDataset):
    """All readable images under ``root`` (see :func:`scan_folder`), or ``root`` alone when it is an image file.

    With ``class_folders=True`` each immediate subfolder of ``root`` is a class: its images get
    the label ``classes.index(subfolder name)`` (classes sorted by name); images directly in
    ``root`` are then an error, since they have no class.
    """

    def __init__(
        self,
        root: str | Path,
        spatial_dims: int | None = None,
        class_folders: bool = False,
        preprocess: Callable[[Sample], Sample] | None = None,
        transform: Callable[[Sample], Any] | None = None,
        skip_bad: bool = False,
        cache: bool = False,
    ):
        self.root = str(root)
        single = os.path.isfile(self.root) and image_format(self.root) is not None  # one volume, e.g. a CT to crop from
        if not (os.path.isdir(self.root) or single):
            raise DataError("no such folder" if not os.path.exists(self.root) else "not a folder or an image file", self.root)
        if single and class_folders:
            raise DataError("class folders need a folder, not one image file", self.root)
        items = [(self.root, None)] if single else scan_folder(self.root, spatial_dims)
        if not items:
            raise DataError("no image files found (looked for DICOM, NIfTI, PNG/JPEG/TIFF/BMP)", self.root)
        self.classes: list[str] = []
        records = []
        if class_folders:
            self.classes = sorted(
                e.name for e in os.scandir(self.root) if e.is_dir() and not _is_hidden(e.name)
            )
            for path, files in items:
                # a series folder is its own anchor; files and one series among several use their folder
                if files is not None:
                    anchor = Path(files[0]).parent
                else:
                    anchor = Path(path) if os.path.isdir(path) else Path(path).parent
                rel = anchor.relative_to(self.root)
                if not rel.parts:
                    raise DataError("with class folders, every image must be inside a class subfolder", path)
                records.append(ImageRecord(path, self.classes.index(rel.parts[0]), files))
        else:
            records = [ImageRecord(path, None, files) for path, files in items]
        super().__init__(records, spatial_dims, preprocess, transform, skip_bad, cache)
