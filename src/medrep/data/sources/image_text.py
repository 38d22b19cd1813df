"""``image_text``: image-report pairs from a hand-written manifest (CSV/TSV or JSONL, one study a row).

The layout is :func:`~medrep.data.datasets.image_text.read_image_text_manifest`'s. A manifest is
written by hand, so any bad row stays an error naming the row (``data.skip_bad`` does not apply).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..datasets.image_text import ImageTextRow, read_image_text_manifest
from ..synthetic import EXAMPLE_SUFFIX, write_example_image
from .registry import Source, register_source


def manifest_pairs(path: Path, data: dict[str, Any]) -> tuple[list[ImageTextRow], dict[str, Any]]:
    rows = read_image_text_manifest(path)
    return rows, {"dataset": "image_text", "root": str(path), "skipped": {}, "examples": {}}


def write_example_pairs(root: str | Path, n: int = 16, spatial_dims: int = 2, test: int = 0) -> Path:
    """``root/pairs.csv`` (``images,report,split``) of ``n`` studies whose brightness the report
    names (a pairing a model can learn), one image each under ``root/img/``: 32 px PNGs, or
    20x18x12 NIfTI volumes with 2.5 mm slices; the last ``test`` studies are in split ``test``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with (root / "pairs.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["images", "report", "split"])
        for i in range(n):
            word, what = ("bright", "dark")[i % 2], "image" if spatial_dims == 2 else "CT volume"
            name = f"img/{i}{EXAMPLE_SUFFIX[spatial_dims]}"
            write_example_image(root / name, 200 if word == "bright" else 40, i)
            writer.writerow([name, f"A {word} {what}. Case {i}.", "train" if i < n - test else "test"])
    return root / "pairs.csv"


register_source(Source(
    name="image_text", kind="image_text", summary="an image-text manifest (.csv/.tsv/.jsonl: images, report, split, ...)",
    pairs=manifest_pairs,
    example=lambda root, spatial_dims=2: {"source": "image_text", "path": str(write_example_pairs(root, 8, spatial_dims, test=2))},
))
