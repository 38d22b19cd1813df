"""Manifests: a CSV/TSV or JSONL list of images with optional label and split.

A manifest is the portable way to describe a data set that lives elsewhere (hospital exports,
public benchmarks): one row per image with a ``path`` (relative paths are resolved against the
manifest's own folder, so a data set folder can be moved as a whole), an optional ``label``
(an integer class or a class name) and an optional ``split`` (train/val/test...). Other columns
(e.g. ``report``) can be copied into the samples with ``fields``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import DataError
from .files import FileDataset, ImageRecord, Sample

CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}
JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class ManifestRow:
    """One manifest row: ``path`` resolved; ``label`` an int, a class name or None; ``row`` counts data rows from 1."""

    path: str
    label: int | str | None
    split: str | None
    row: int
    fields: dict[str, Any] = field(default_factory=dict)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _label(value: Any, where: str, row: int) -> int | str | None:
    """An int class, a class name, or None; a fractional number is not a class."""
    if _blank(value):
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        raise DataError(f"row {row}: label {value!r} is neither an integer class nor a class name", where)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            return text
    raise DataError(f"row {row}: label {value!r} is neither an integer class nor a class name", where)


def table_records(path: Path, key_columns: Sequence[str] = ("path",)) -> list[tuple[int, str, dict[str, Any]]]:
    """(row number, ``"line N"``, mapping) for every data row of a CSV/TSV or JSON-lines file.

    CSV fields may hold line breaks inside quotes (reports do), so the place is the line where the
    row ends. A CSV needs at least one of ``key_columns``.
    """
    name = path.name.lower()
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"manifest is not UTF-8 text ({exc})", path) from exc
    except OSError as exc:
        raise DataError(f"cannot read manifest ({exc.strerror or exc})", path) from exc
    rows: list[tuple[int, str, dict[str, Any]]] = []
    if suffix in CSV_SUFFIXES:
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=CSV_SUFFIXES[suffix])
        try:
            for record in reader:
                clean = {(k or "").strip(): v for k, v in record.items() if k is not None}
                rows.append((len(rows) + 1, f"line {reader.line_num}", clean))
        except csv.Error as exc:
            raise DataError(f"line {reader.line_num}: malformed CSV ({exc})", path) from exc
        columns = [(f or "").strip() for f in reader.fieldnames or []]
        if reader.fieldnames is not None and not set(key_columns) & set(columns):
            wanted = " or ".join(repr(c) for c in key_columns)
            raise DataError(f"no {wanted} column; columns: {', '.join(columns)}", path)
    elif name.endswith(JSONL_SUFFIXES):
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"row {len(rows) + 1} (line {line_no}): not valid JSON ({exc.msg})", path) from exc
            if not isinstance(record, dict):
                raise DataError(f"row {len(rows) + 1} (line {line_no}): expected a JSON object", path)
            rows.append((len(rows) + 1, f"line {line_no}", record))
    else:
        raise DataError("unknown manifest format; use .csv, .tsv, .jsonl or .ndjson", path)
    return rows


def read_manifest(
    path: str | Path, require_labels: bool = False, fields: Sequence[str] = ()
) -> list[ManifestRow]:
    """Read and check every row. A row without ``path``, without ``label`` when ``require_labels``,
    or without a requested extra field raises :class:`DataError` naming the manifest and row."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such manifest file" if not path.exists() else "not a file", path)
    base = path.parent
    out = []
    for row, place, record in table_records(path):
        value = record.get("path")
        if _blank(value) or not isinstance(value, str):
            raise DataError(f"row {row} ({place}): no 'path'", path)
        file = Path(value.strip()).expanduser()
        label = _label(record.get("label"), str(path), row)
        if require_labels and label is None:
            raise DataError(f"row {row} ({place}): no 'label'", path)
        split = record.get("split")
        extra = {}
        for key in fields:
            if key not in record or record[key] is None:
                raise DataError(f"row {row} ({place}): no {key!r}", path)
            extra[key] = record[key]
        out.append(
            ManifestRow(
                path=str(file if file.is_absolute() else base / file),
                label=label,
                split=None if _blank(split) else str(split).strip(),
                row=row,
                fields=extra,
            )
        )
    if not out:
        raise DataError("manifest has no rows", path)
    return out


class ManifestDataset(FileDataset):
    """The images a manifest lists, optionally one ``split`` of them.

    Integer labels are used as given. If any label is a name, all labels are names: ``classes``
    is their sorted list (taken over the whole manifest, so every split shares one mapping) and
    the sample label is the index in it.
    """

    def __init__(
        self,
        path: str | Path,
        split: str | None = None,
        spatial_dims: int | None = None,
        require_labels: bool = False,
        fields: Sequence[str] = (),
        preprocess: Callable[[Sample], Sample] | None = None,
        transform: Callable[[Sample], Any] | None = None,
        skip_bad: bool = False,
        cache: bool = False,
    ):
        self.path = str(path)
        rows = read_manifest(path, require_labels=require_labels, fields=fields)
        labels = [r.label for r in rows if r.label is not None]
        self.classes: list[str] = []
        if any(isinstance(v, str) for v in labels):
            self.classes = sorted({str(v) for v in labels})
        if split is not None:
            present = sorted({r.split for r in rows if r.split is not None})
            rows = [r for r in rows if r.split == split]
            if not rows:
                known = f"splits present: {', '.join(present)}" if present else "the manifest has no 'split' column"
                raise DataError(f"no row has split {split!r}; {known}", path)
        records = [
            ImageRecord(
                path=r.path,
                label=None if r.label is None else (self.classes.index(str(r.label)) if self.classes else int(r.label)),
                extra=r.fields,
            )
            for r in rows
        ]
        self.split = split
        super().__init__(records, spatial_dims, preprocess, transform, skip_bad, cache)
