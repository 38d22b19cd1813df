"""``colin27-regions``: 3D crops of the Colin27 T1, each paired with a text GENERATED FROM THE AAL
ATLAS LABELS it contains, not written by a radiologist. It is the only real 3D image-text pairing
available offline (no CT-report data ships), made for UniMedI's slice selection: does the teacher
pick the slices that hold the region a text names (:func:`~medrep.data.io.atlas.region_slices`)?

:func:`prepare_colin27_regions` (``medrep prepare colin27-regions``) writes, under ``out``:
``images/<study>.nii.gz`` (float32 T1 crops), ``labels/<study>.nii.gz`` (int16 AAL ids, same grid),
``pairs.csv`` (the generic ``image_text`` manifest: images, report, split, study, plus ``labels``
and ``regions``, which that reader ignores), ``label_names.txt`` (a copy of the AAL list, for
:func:`region_slices`) and ``summary.json`` (settings, counts, skipped crops, region frequencies).
This module also registers the prepared folder as an image-text source (``data.path: out``).

Decisions:

- **Grid.** The T1 and the atlas are reoriented to RAS (nibabel; a permutation and flips, no
  interpolation), so the last axis is axial; an oblique volume is refused. Both are resampled
  to ``spacing`` mm with MONAI's ``Spacing`` (the affine respected; voxel 0 stays put; only new
  voxels whose centres lie inside the old extent are kept): the T1 trilinear after a Gaussian
  anti-aliasing blur of sigma ``(factor - 1) / 2`` voxels where it shrinks, the atlas nearest
  neighbour. Each crop's NIfTI affine is the resampled affine shifted to the crop's first voxel.
- **Intensity.** The T1 is scaled once over the whole volume (1st-99th percentiles to [0, 1]),
  before resampling, so that crops keep comparable values: a recipe reading them should use
  ``data.intensity: none`` (a per-crop scaling would erase the absolute intensity).
- **Text.** Regions are the 7 :data:`AAL_GROUPS` per hemisphere (from the ``_L``/``_R`` suffix;
  the vermis is "midline"). A region is named when its voxels are more than ``threshold`` of the
  crop's voxels (background included), largest first. One of :data:`TEMPLATES`, drawn with
  ``seed`` for each crop, words the text, so one region set does not always give one string.
- **Split.** Crop centres lie on a grid of ``stride`` voxels, in alternating slabs along
  ``slab_axis`` (axial by default: even slabs train, odd ones test; see
  :mod:`medrep.data.datasets.slabs`): no train crop shares a voxel with a test crop, asserted on
  every run. With the default 64x64x32 crops at 2 mm only two axial slabs fit, so train is the
  lower brain and test the upper one. Crops lie wholly inside the volume (no padding); a crop
  whose centre is background or that names no region is skipped and counted.
- **No patient column:** both splits come from one subject, which the manifest reader would
  (rightly, elsewhere) refuse as a leak; the split is by disjoint voxels instead.
"""

from __future__ import annotations

import csv
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ...errors import DataError, MedrepError
from ..datasets.image_text import ImageTextRow, read_image_text_manifest
from ..datasets.slabs import as_int_tuple, check_disjoint, slab_centres
from ..io.atlas import read_label_names, region_ids, region_phrase, region_slices
from ..io.regrid import resample_pair, to_ras
from .colin27_lobes import FILES, colin27_example, read_colin27
from .registry import Source, register_source

NAME = "colin27-regions"
CROP, SPACING, STRIDE, THRESHOLD = (64, 64, 32), (2.0, 2.0, 2.0), 3, 0.05
PERCENTILES = (1.0, 99.0)
GENERATED = "generated from the AAL atlas labels of the crop, not written by a radiologist"
#: (text for two or more regions, text for one); {regions} lists them largest first
TEMPLATES: tuple[tuple[str, str], ...] = (
    ("T1-weighted MR crop of the brain. It contains {regions}. The largest region is {largest}.",
     "T1-weighted MR crop of the brain. It contains {largest} only."),
    ("A 3D crop of a T1-weighted brain MRI showing {regions}, the largest being {largest}.",
     "A 3D crop of a T1-weighted brain MRI showing {largest}."),
    ("Brain MRI, T1-weighted, 3D crop. Regions present, largest first: {regions}.",
     "Brain MRI, T1-weighted, 3D crop. Region present: {largest}."),
    ("This T1 MR crop covers {regions}; the largest part is {largest}.", "This T1 MR crop covers {largest}."),
)


def describe(regions: Sequence[str], template: int = 0) -> str:
    """The text of a crop holding ``regions`` (sided regions, largest first) in one of :data:`TEMPLATES`."""
    phrases = [region_phrase(r) for r in regions]
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return TEMPLATES[template][len(phrases) == 1].format(regions=listed, largest=phrases[0])


def _positive(values: Sequence[float], what: str) -> tuple[float, ...]:
    vals = [values] * 3 if isinstance(values, (int, float)) else list(values)
    if len(vals) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in vals):
        raise MedrepError(f"must be 3 positive numbers (mm per axis), got {values!r}", what)
    return tuple(float(v) for v in vals)


def load_grid(volumes: str | Path | None, spacing: tuple[float, ...]) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray, dict[int, str]]:
    """The volumes folder, the scaled T1 and the AAL ids on one RAS grid of ``spacing`` mm, its
    affine, and the label names (each a region of :data:`AAL_GROUPS`, each atlas value named)."""
    from ..io.intensity import percentile_scale

    folder, t1, atlas = read_colin27(volumes, NAME)
    affine = np.asarray(t1["meta"]["affine"], dtype=np.float64)
    names = read_label_names(folder / FILES[2])
    try:
        region_ids(names)  # every name must fall in a region of AAL_GROUPS
    except MedrepError as exc:
        raise DataError(str(exc), folder / FILES[2]) from exc
    unknown = sorted(set(np.unique(atlas).tolist()) - set(names) - {0})
    if unknown:
        raise DataError(f"atlas values {unknown[:10]} are not in the label names file {folder / FILES[2]}", folder / FILES[1])
    scaled = percentile_scale(t1["image"], *PERCENTILES)[0].numpy()
    scaled, ras = to_ras(scaled, affine, folder / FILES[0])
    atlas, _ = to_ras(atlas, affine, folder / FILES[1])
    return (folder, *resample_pair(scaled, atlas, ras, spacing), names)


def _grid_mask(labels: np.ndarray, crop: tuple[int, ...], slab_axis: int) -> np.ndarray:
    """Labelled voxels where a crop centred there lies inside the volume (across the slab axis;
    along it the slabs keep crops inside)."""
    mask = labels > 0
    for a, (n, c) in enumerate(zip(labels.shape, crop)):
        if a != slab_axis:
            keep = np.zeros(n, bool)
            keep[c // 2: n - (c - c // 2) + 1] = True
            mask &= keep.reshape([-1 if i == a else 1 for i in range(3)])
    return mask


def _named(label_crop: np.ndarray, lut: np.ndarray, regions: list[str], threshold: float) -> list[tuple[str, float]]:
    """(region, fraction of the crop's voxels) for the regions above ``threshold``, largest first (ties by name)."""
    fraction = np.bincount(lut[label_crop].ravel(), minlength=len(regions) + 1)[1:] / label_crop.size
    return sorted(((regions[k], float(f)) for k, f in enumerate(fraction) if f > threshold), key=lambda rf: (-rf[1], rf[0]))


def _write_crop(out: Path, study: str, image: np.ndarray, labels: np.ndarray, affine: np.ndarray, start: np.ndarray) -> None:
    """The image and label crop as NIfTI; their affine is the grid's, moved to the crop's first voxel."""
    from ..synthetic import write_nifti

    moved = affine.copy()
    moved[:3, 3] = affine[:3, :3] @ start + affine[:3, 3]
    write_nifti(out / "images" / f"{study}.nii.gz", image, affine=moved)
    write_nifti(out / "labels" / f"{study}.nii.gz", labels.astype(np.int16 if labels.max() < 2**15 else np.int32), affine=moved)


def prepare_colin27_regions(
    out: str | Path, volumes: str | Path | None = None, crop: Sequence[int] = CROP, spacing: Sequence[float] = SPACING,
    stride: int | Sequence[int] = STRIDE, threshold: float = THRESHOLD, seed: int = 0, slab_axis: int = 2,
    progress: bool = False,
) -> dict[str, Any]:
    """Write the crops, label crops, ``pairs.csv``, ``label_names.txt`` and ``summary.json`` under
    ``out`` (see the module docstring) from ``volumes`` (default ``$MEDREP_DATA/volumes``); returns the summary."""
    from tqdm.auto import tqdm

    from ...results import write_json

    started = time.perf_counter()
    crop_shape, mm = as_int_tuple(crop, 3, "--crop"), _positive(spacing, "--spacing")
    if not 0 <= threshold < 1:
        raise MedrepError(f"must be a fraction in [0, 1), got {threshold!r}", "--threshold")
    out = Path(out)
    if any((out / p).exists() for p in ("pairs.csv", "images", "labels")):
        raise MedrepError("already holds a prepared set (pairs.csv, images/ or labels/): choose a new --out or remove them", out)
    folder, image, labels, affine, names = load_grid(volumes, mm)
    if any(c > n for c, n in zip(crop_shape, image.shape)):
        raise MedrepError(f"crop {list(crop_shape)} is larger than the volume {list(image.shape)} at {list(mm)} mm", "--crop")
    ids = region_ids(names)
    regions = sorted(ids)
    lut = np.zeros(max(int(labels.max()), max(names)) + 1, np.int64)
    for k, r in enumerate(regions):
        lut[ids[r]] = k + 1
    train_c, test_c, slab_info = slab_centres(_grid_mask(labels, crop_shape, slab_axis), crop_shape, stride, slab_axis, gap=0)
    half = np.asarray(crop_shape) // 2
    rng, skipped, kept = np.random.default_rng(seed), Counter(), {"train": [], "test": []}
    rows, freq = [], {r: {"train": 0, "test": 0, "fraction": [], "slices": []} for r in regions}
    out.mkdir(parents=True, exist_ok=True)
    todo = [(split, c) for split, cs in (("train", train_c), ("test", test_c)) for c in cs]
    for split, centre in tqdm(todo, desc=NAME, unit="crop", disable=not progress):
        box = tuple(slice(int(c - h), int(c - h + n)) for c, h, n in zip(centre, half, crop_shape))
        if labels[tuple(centre)] == 0:
            skipped["background centre"] += 1
            continue
        label_crop = labels[box]
        named = _named(label_crop, lut, regions, threshold)
        if not named:
            skipped["no region above the threshold"] += 1
            continue
        start = centre - half
        study = f"colin27_{split}_x{start[0]}_y{start[1]}_z{start[2]}"
        _write_crop(out, study, image[box], label_crop, affine, start)
        rows.append({"images": f"images/{study}.nii.gz", "report": describe([r for r, _ in named], int(rng.integers(len(TEMPLATES)))),
                     "split": split, "study": study, "labels": f"labels/{study}.nii.gz", "regions": ";".join(r for r, _ in named)})
        kept[split].append(centre)
        for region, fraction in named:
            freq[region][split] += 1
            freq[region]["fraction"].append(fraction)
            freq[region]["slices"].append(float(region_slices(label_crop, region, names).mean()))
    check_disjoint(np.array(kept["train"]).reshape(-1, 3), np.array(kept["test"]).reshape(-1, 3), crop_shape, slab_axis, gap=0)
    if not rows:
        raise MedrepError(f"no crop names a region above {threshold}: use a smaller --stride, --crop or --threshold", "--threshold")
    with (out / "pairs.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    shutil.copyfile(folder / FILES[2], out / "label_names.txt")
    summary = {
        "source": NAME, "text": GENERATED, "volumes": str(folder), "out": str(out), "crop": list(crop_shape), "spacing": list(mm),
        "grid_shape": list(image.shape), "grid_affine": affine.round(6).tolist(), "threshold": threshold, "seed": seed,
        "intensity": {"percentiles": list(PERCENTILES), "per": "whole volume, before resampling"},
        "resampling": "RAS (nibabel), then MONAI Spacing: T1 Gaussian anti-aliasing + trilinear, atlas nearest",
        "split": {**slab_info, "slabs": [{k: v for k, v in s.items() if k != "centres"} for s in slab_info["slabs"]]},
        "crops": {s: len(v) for s, v in kept.items()}, "grid_centres": len(todo), "skipped": dict(skipped),
        "regions": {r: {"train": v["train"], "test": v["test"], "mean_fraction": round(float(np.mean(v["fraction"])), 4),
                        "mean_slice_coverage": round(float(np.mean(v["slices"])), 4)}
                    for r, v in freq.items() if v["fraction"]},
        "never_named": [r for r, v in freq.items() if not v["fraction"]],
        "templates": [list(t) for t in TEMPLATES], "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(out / "summary.json", summary)
    return summary


def summary_table(summary: dict[str, Any]) -> str:
    """Crops per split, what was skipped, and how often each region is named, as plain text."""
    from ...results import format_table

    rows = [{"region": r, **{k: v[k] for k in ("train", "test", "mean_fraction", "mean_slice_coverage")}}
            for r, v in sorted(summary["regions"].items(), key=lambda kv: -(kv[1]["train"] + kv[1]["test"]))]
    return "\n".join([
        format_table(rows, ["region", "train", "test", "mean_fraction", "mean_slice_coverage"]),
        "crops: " + ", ".join(f"{s} {n}" for s, n in summary["crops"].items()) + f" (of {summary['grid_centres']} grid centres)",
        "skipped: " + (", ".join(f"{n} {why}" for why, n in summary["skipped"].items()) or "none"),
        "never named: " + (", ".join(summary["never_named"]) or "none"),
        f"text: {summary['text']}",
    ])


def region_pairs(path: str | Path) -> tuple[list[ImageTextRow], dict[str, Any]]:
    """The prepared folder's (or its ``pairs.csv``'s) studies, through the generic manifest reader,
    and the prepare summary as the reader report (``prepared``)."""
    import json

    path = Path(path)
    manifest = path / "pairs.csv" if path.is_dir() else path
    rows = read_image_text_manifest(manifest)
    where = manifest.parent / "summary.json"
    try:
        prepared = json.loads(where.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the prepare summary ({exc})", where) from exc
    written = sum(prepared.get("crops", {}).values()) if isinstance(prepared, dict) else None
    if written != len(rows):  # a truncated manifest still parses; an edited one should be read as image_text
        raise DataError(f"has {len(rows)} studies but {where.name} says {written} crops were written: truncated or edited "
                        "(read an edited manifest with data.source: image_text)", manifest)
    return rows, {"dataset": NAME, "root": str(manifest.parent), "skipped": {}, "examples": {}, "prepared": prepared}


class RegionCrop(NamedTuple):
    """A prepared crop's extra columns: its AAL label crop (absolute path) and the regions its text names."""

    labels: Path
    regions: tuple[str, ...]


def read_region_columns(path: str | Path) -> dict[str, RegionCrop]:
    """Study id -> :class:`RegionCrop`, from a prepared folder or its ``pairs.csv`` (an item of the
    image-text dataset carries its ``study``; the label names are the folder's ``label_names.txt``)."""
    from ..datasets.manifest import table_records

    path = Path(path)
    manifest = path / "pairs.csv" if path.is_dir() else path
    out = {}
    for _, line, record in table_records(manifest, key_columns=("images",)):
        if not record.get("labels") or not record.get("regions") or not record.get("study"):
            raise DataError(f"{line}: a prepared crop needs study, labels and regions", manifest)
        out[record["study"]] = RegionCrop(manifest.parent / record["labels"], tuple(record["regions"].split(";")))
    return out


def region_example(root: Path, spatial_dims: int = 3) -> dict[str, Any]:
    """A prepared folder under ``root`` from :func:`colin27_example`'s tiny Colin27 (written to a
    temporary folder, then removed): 8x8x6 crops at 1.5 mm."""
    import tempfile

    with tempfile.TemporaryDirectory() as volumes:
        colin27_example(Path(volumes))
        prepare_colin27_regions(root, volumes, crop=(8, 8, 6), spacing=(1.5, 1.5, 1.5), stride=2)
    return {"source": NAME, "path": str(root)}


register_source(Source(
    name=NAME, kind="image_text", summary="Colin27 T1 crops with text generated from their AAL regions (medrep prepare colin27-regions)",
    pairs=lambda path, data: region_pairs(path), example=region_example, supported_dims=(3,),
))
