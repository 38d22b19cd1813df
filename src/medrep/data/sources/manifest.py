"""``manifest``: images listed in a CSV/TSV or JSONL manifest (:class:`~medrep.data.ManifestDataset`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..datasets.manifest import ManifestDataset
from .registry import Source, register_source, source_path


def manifest_images(data: dict[str, Any], split: str | None, **common) -> ManifestDataset:
    return ManifestDataset(source_path("manifest", data), split=split, **common)


register_source(Source(
    name="manifest", kind="image", summary="images listed in a .csv/.jsonl manifest (path, label, split)",
    images=manifest_images, matches=lambda path: Path(path).suffix in (".csv", ".jsonl"),
))
