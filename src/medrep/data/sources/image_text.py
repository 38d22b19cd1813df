"""``image_text``: image-report pairs from a hand-written manifest (CSV/TSV or JSONL, one study a row).

The layout is :func:`~medrep.data.datasets.image_text.read_image_text_manifest`'s. A manifest is
written by hand, so any bad row stays an error naming the row (``data.skip_bad`` does not apply).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..datasets.image_text import ImageTextRow, read_image_text_manifest
from .registry import Source, register_source


def manifest_pairs(path: Path, data: dict[str, Any]) -> tuple[list[ImageTextRow], dict[str, Any]]:
    rows = read_image_text_manifest(path)
    return rows, {"dataset": "image_text", "root": str(path), "skipped": {}, "examples": {}}


register_source(Source(
    name="image_text", kind="image_text", summary="an image-text manifest (.csv/.tsv/.jsonl: images, report, split, ...)",
    pairs=manifest_pairs,
))
