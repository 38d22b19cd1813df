"""``manifest``: images listed in a CSV/TSV or JSONL manifest (:class:`~medrep.data.ManifestDataset`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..datasets.manifest import ManifestDataset
from ..synthetic import EXAMPLE_SUFFIX, write_example_image
from .registry import Source, register_source, source_path


def manifest_images(data: dict[str, Any], split: str | None, **common) -> ManifestDataset:
    return ManifestDataset(source_path("manifest", data), split=split, **common)


def manifest_example(root: Path, spatial_dims: int = 2) -> dict[str, Any]:
    """``root/manifest.csv`` (``path,label,split``; paths relative to the manifest, labels class
    names) listing ``root/images/<n>.png`` (or ``.nii.gz``): 6 train and 2 test images."""
    lines = ["path,label,split"]
    for i in range(8):
        word, name = ("bright", "dark")[i % 2], f"images/{i}{EXAMPLE_SUFFIX[spatial_dims]}"
        write_example_image(Path(root) / name, 200 if word == "bright" else 40, i)
        lines.append(f"{name},{word},{'train' if i < 6 else 'test'}")
    (Path(root) / "manifest.csv").write_text("\n".join(lines) + "\n")
    return {"source": "manifest", "path": str(Path(root) / "manifest.csv")}


register_source(Source(
    name="manifest", kind="image", summary="images listed in a .csv/.jsonl manifest (path, label, split)",
    images=manifest_images, matches=lambda path: Path(path).suffix in (".csv", ".jsonl"),
    example=manifest_example,
))
