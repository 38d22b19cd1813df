"""``mixed``: several sources in one run, each a part with its own ``data`` keys and a weight.

    data:
      source: mixed
      batch_size: 24
      parts:
        - {name: medpix, source: medpix2, weight: 2, spatial_dims: 2, size: [128, 128]}
        - {name: colin27, source: image_text, path: runs/colin27_regions/pairs.csv, weight: 1,
           spatial_dims: 3, size: [64, 64, 32]}

A part's keys are a ``data`` section of their own laid over the run's (so ``intensity``,
``split`` or ``skip_bad`` may be set once for all); ``name`` (default ``part<i>``) names it in logs
and errors, ``weight`` (default 1) its share of every batch. A part's relative ``path`` is read under the
mixed source's ``data.path`` when that is set (one tree holding every part), else from the
working folder as any ``data.path``; a part without ``path`` takes its own source's default
(``$MEDREP_DATA/medpix2`` ...). Environment variables in a part's ``path`` are expanded
(``${MEDREP_DATA}/volumes/head_ct.nii.gz``); an unset one is an error naming the part. Parts are image or image-report sources; batching is
:mod:`medrep.data.datasets.mixed`'s (grouped sub-batches, one per part, every step).
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

from ...errors import DataError, RecipeError
from .registry import Source, get_source, register_source

PART_KEYS = ("name", "weight")


def mixed_parts(data: dict[str, Any], expand: bool = False) -> list[tuple[str, float, dict[str, Any]]]:
    """``(name, weight, data section)`` of every part of a ``mixed`` data section, checked for
    what the mixed source owns (the list, names, weights, the sources); each part's own keys are
    checked by the recipe loader as a ``data`` section. ``expand``: resolve the part paths (when the
    data are read; a recipe loads on a machine without ``$MEDREP_DATA``)."""
    parts = data.get("parts")
    if not isinstance(parts, list) or not parts:
        raise RecipeError("a mixed source needs a non-empty list of parts", "data.parts")
    base = {k: v for k, v in data.items() if k not in ("parts", "source", "path", "spatial_dims", "batch_size")}
    out, names = [], set()
    for i, part in enumerate(parts):
        where = f"data.parts[{i}]"
        if not isinstance(part, dict):
            raise RecipeError(f"must be a mapping of data keys, got {part!r}", where)
        name = part.get("name", f"part{i}")
        if not isinstance(name, str) or not name or name in names:
            raise RecipeError(f"name must be a unique non-empty string, got {name!r}", f"{where}.name")
        names.add(name)
        weight = part.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise RecipeError(f"must be a positive number, got {weight!r}", f"{where}.weight")
        if "source" not in part:
            raise RecipeError("every part names its source", f"{where}.source")
        try:
            source = get_source(part["source"], ("image", "image_text"), f"{where}.source")
        except DataError as exc:  # a recipe value: name it as the recipe checks do
            raise RecipeError(str(exc).removeprefix(f"{where}.source: "), f"{where}.source") from exc
        section = copy.deepcopy(base) | {k: v for k, v in part.items() if k not in PART_KEYS}
        if expand and isinstance(section.get("path"), str):
            section["path"] = os.path.expandvars(section["path"])
            if "$" in section["path"]:
                raise RecipeError(f"names an unset environment variable: {part['path']!r}", f"{where}.path")
        relative = isinstance(section.get("path"), str) and not Path(section["path"]).expanduser().is_absolute()
        if expand and relative and data.get("path") is not None:
            section["path"] = str(Path(data["path"]).expanduser() / section["path"])
        if section.get("spatial_dims") is None:  # the source's only one, else the run's
            section["spatial_dims"] = source.supported_dims[0] if len(source.supported_dims) == 1 else data.get("spatial_dims")
        out.append((name, float(weight), section))
    return out


def mixed_dataset(data: dict[str, Any], split: str | None):
    """The parts' datasets (built as any recipe's would be) in one :class:`MixedDataset`."""
    from ..build import build_dataset
    from ..datasets.mixed import MixedCollate, MixedDataset

    parts, names, weights, collates = [], [], [], []
    for name, weight, section in mixed_parts(data, expand=True):
        part_split = split if split is not None else section.get("split")
        parts.append(build_dataset(section, split=part_split))
        names.append(name)
        weights.append(weight)
        collates.append(get_source(section["source"]).collate)
    dataset = MixedDataset(parts, names, weights, collates, seed=int(data.get("seed", 0) or 0))
    dataset.collate_fn = MixedCollate(dataset)
    return dataset


def mixed_example(root: Path, spatial_dims: int = 2) -> dict[str, Any]:
    """Two image-report manifests (2D PNGs and 3D NIfTI volumes) as two parts of weights 1 and 1."""
    from .image_text import write_example_pairs

    write_example_pairs(Path(root) / "flat", 8, 2, test=2)
    write_example_pairs(Path(root) / "volumes", 8, 3, test=2)
    return {"source": "mixed", "path": str(root), "parts": [
        {"name": "flat", "source": "image_text", "path": "flat/pairs.csv", "spatial_dims": 2, "size": [32, 32]},
        {"name": "volumes", "source": "image_text", "path": "volumes/pairs.csv", "spatial_dims": 3, "size": [16, 16, 8]},
    ]}


register_source(Source(
    name="mixed", kind="mixed", summary="several sources in one run, each part with its own data keys and a weight",
    mixed=mixed_dataset, options={"parts": None}, example=mixed_example
))
