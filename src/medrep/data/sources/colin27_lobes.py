"""``colin27-lobes``, a segmentation source: Colin27 T1 labelled with the AAL atlas grouped into
the 7 regions of :data:`medrep.data.io.atlas.AAL_GROUPS` (+ background = 8 classes).

One subject, so train and test are its two hemispheres: the left hemisphere (world x < 0) trains,
the right one tests, along axis 0 after checking in the affine that axis 0 is the left-right axis.
No voxel within ``gap / 2`` voxels of the midline plane (x = 0) is used, so the nearest train and
test slices are more than ``gap`` voxels apart; :func:`check_halves_disjoint` asserts it on every
load. Left and right AAL labels are merged into one class per region, so both halves hold the
same 7 classes (mirror images, not copies: the brain is not symmetric). The test half is mirrored
along axis 0 so that both halves have the midline at the same end: a 3D network is not
mirror-equivariant, and medial-lateral order is what it should learn (Dice does not change under
the flip; for 2D sagittal slices it only reverses their order).

Before the split the volume is cropped to the bounding box of the atlas plus ``margin`` voxels
and, across axes 1 and 2, to the next multiple of 16 (centred; padded with the minimum where the
box leaves the volume), so that 2D slices fit a U-Net whole. Each half is scaled by its own
5th-95th percentiles. In 3D each half is one item; in 2D the items are its sagittal slices
(across axis 0), all kept, including lateral ones with little or no cortex.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError, MedrepError
from ..datasets.segmentation import PERCENTILES, SegItem, SegTask, slices_of
from ..io.atlas import GROUPS, group_labels, read_label_names
from ..io.intensity import percentile_scale
from ..synthetic import write_nifti
from .registry import Source, register_source

FILES = ("colin27_t1.nii.gz", "colin27_aal.nii.gz", "colin27_aal_labels.txt")
NAME = "colin27-lobes"


def default_volumes_dir() -> Path | None:
    root = os.environ.get("MEDREP_DATA")
    return Path(root) / "volumes" if root else None


def lobe_map(atlas: np.ndarray, label_names: Path) -> tuple[np.ndarray, list[str]]:
    """AAL ids -> class index (0 background, 1..7 in :data:`GROUPS` order) and the class names."""
    grouping = group_labels(read_label_names(label_names))
    lut = np.zeros(int(atlas.max()) + 1, dtype=np.int64)
    for idx, group in grouping.items():
        if idx < lut.size:
            lut[idx] = GROUPS.index(group) + 1
    unknown = sorted(set(np.unique(atlas).tolist()) - set(grouping) - {0})
    if unknown:
        raise DataError(f"atlas values {unknown[:10]} are not in the label names file", label_names)
    return lut[atlas], ["background", *GROUPS]


def midline_index(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[float, int]:
    """Fractional axis-0 index of the plane x = 0 (through the volume's centre in axes 1, 2) and the
    direction (+1 when x grows with the index, as in RAS). Axis 0 must be the left-right axis."""
    a = np.asarray(affine, dtype=np.float64)
    column = np.abs(a[:3, 0])
    if column.argmax() != 0 or column[0] < 0.9 * np.linalg.norm(column):
        raise DataError(f"axis 0 is not the left-right axis (affine column {a[:3, 0].round(3).tolist()}); reorient to RAS", "affine")
    centre = (a[0, 1] * (shape[1] - 1) + a[0, 2] * (shape[2] - 1)) / 2
    return float(-(a[0, 3] + centre) / a[0, 0]), int(np.sign(a[0, 0]))


def _crop_box(labels: np.ndarray, margin: int) -> list[tuple[int, int]]:
    """Per axis [lo, hi) around the labels plus margin; axes 1, 2 widened to a multiple of 16."""
    nz = np.argwhere(labels > 0)
    lo, hi = nz.min(axis=0) - margin, nz.max(axis=0) + 1 + margin
    box = [(max(0, int(lo[0])), min(labels.shape[0], int(hi[0])))]
    for a in (1, 2):
        size = -(-int(hi[a] - lo[a]) // 16) * 16
        start = int(lo[a]) - (size - int(hi[a] - lo[a])) // 2
        box.append((start, start + size))
    return box


def _cut(volume: np.ndarray, box: list[tuple[int, int]], fill: float) -> np.ndarray:
    """``volume[box]``, padded with ``fill`` where the box leaves the volume."""
    pad = [(max(0, -lo), max(0, hi - n)) for (lo, hi), n in zip(box, volume.shape)]
    padded = np.pad(volume, pad, constant_values=fill)
    return padded[tuple(slice(lo + p, hi + p) for (lo, hi), (p, _) in zip(box, pad))]


def hemisphere_ranges(lo: int, hi: int, midline: float, direction: int, gap: int) -> dict[str, tuple[int, int]]:
    """Axis-0 index ranges [a, b) of the left (train) and right (test) hemisphere within [lo, hi)."""
    below = (lo, min(hi, int(np.ceil(midline - gap / 2))))
    above = (max(lo, int(np.floor(midline + gap / 2)) + 1), hi)
    left, right = (below, above) if direction > 0 else (above, below)
    return {"train": left, "test": right}


def check_halves_disjoint(ranges: dict[str, tuple[int, int]], midline: float, gap: int) -> None:
    """Raise if the two halves share a slice, lie less than ``gap`` apart, or either crosses the midline."""
    (a0, a1), (b0, b1) = ranges["train"], ranges["test"]
    if a1 <= a0 or b1 <= b0:
        raise MedrepError(f"an empty half: {ranges}", NAME)
    apart = max(b0 - (a1 - 1), a0 - (b1 - 1))
    if apart <= gap:
        raise MedrepError(f"train {ranges['train']} and test {ranges['test']} slices are only {apart} apart (gap {gap})", NAME)
    for name, (s0, s1) in ranges.items():
        if s0 - 1 < midline < s1 or abs(s0 - midline) < gap / 2 or abs(s1 - 1 - midline) < gap / 2:
            raise MedrepError(f"the {name} half {ranges[name]} reaches the midline at index {midline:.1f} (gap {gap})", NAME)


def read_colin27(volumes_dir: str | Path | None, name: str = NAME) -> tuple[Path, dict[str, Any], np.ndarray]:
    """The folder of :data:`FILES` (default ``$MEDREP_DATA/volumes``), the T1 sample and the AAL ids,
    checked to lie on one grid; ``name`` (the source reading them) is named when a file is missing."""
    from ..io.readers import read_image

    folder = Path(volumes_dir) if volumes_dir is not None else default_volumes_dir()
    if folder is None:
        raise MedrepError("$MEDREP_DATA is not set: give the folder holding " + ", ".join(FILES), "--volumes")
    for file in FILES:
        if not (folder / file).is_file():
            raise DataError(f"{name} needs {', '.join(FILES)}; {file} is missing", folder / file)
    t1, aal = read_image(folder / FILES[0], 3), read_image(folder / FILES[1], 3)
    atlas = aal["image"][0].numpy().astype(np.int64)
    if tuple(t1["image"].shape[1:]) != atlas.shape or not np.allclose(t1["meta"]["affine"], aal["meta"]["affine"], atol=1e-3):
        raise DataError("the atlas is not on the T1's grid", folder / FILES[1])
    return folder, t1, atlas


def colin27_lobes(volumes_dir: str | Path | None = None, spatial_dims: int = 3, gap: int = 4, margin: int = 8,
                  percentiles: tuple[float, float] = PERCENTILES) -> SegTask:
    """The two hemispheres of Colin27 as train (left) and test (right) items, 3D or sagittal slices."""
    if spatial_dims not in (2, 3):
        raise MedrepError(f"must be 2 or 3, got {spatial_dims!r}", "--spatial-dims")
    folder, t1, atlas = read_colin27(volumes_dir)
    image = t1["image"][0].numpy()
    labels, class_names = lobe_map(atlas, folder / FILES[2])
    midline, direction = midline_index(np.asarray(t1["meta"]["affine"]), image.shape)
    box = _crop_box(labels, margin)
    ranges = hemisphere_ranges(*box[0], midline, direction, gap)
    check_halves_disjoint(ranges, midline, gap)
    fill = float(image.min())
    halves: dict[str, list[SegItem]] = {}
    for split, (s0, s1) in ranges.items():
        sub = [(s0, s1), *box[1:]]
        scaled = percentile_scale(_cut(image, sub, fill)[None], *percentiles)[0].numpy()
        mask = _cut(labels, sub, 0)
        if split == "test":
            scaled, mask = np.ascontiguousarray(scaled[::-1]), np.ascontiguousarray(mask[::-1])
        item = SegItem(scaled, mask, f"{folder / FILES[0]}[{split} hemisphere, axis 0 {s0}:{s1}]",
                       meta={"axis0": [s0, s1], "mirrored": split == "test"})
        halves[split] = [item] if spatial_dims == 3 else slices_of(item, 0)
    info: dict[str, Any] = {
        "source": NAME, "volumes": str(folder), "classes": class_names, "crop_box": [list(b) for b in box],
        "split": {"axis": 0, "midline_index": midline, "gap": gap, "train": "left hemisphere", "test": "right hemisphere",
                  "train_axis0": list(ranges["train"]), "test_axis0": list(ranges["test"]),
                  "test_mirrored_axis0": True},
        "intensity": {"percentiles": list(percentiles), "per": "hemisphere"},
        "items": {"train": len(halves["train"]), "test": len(halves["test"]), "unit": "volume" if spatial_dims == 3 else
                  "sagittal slice"},
    }
    return SegTask(halves["train"], halves["test"], len(class_names), class_names, spatial_dims, info)


#: one AAL name per region for the example atlas (the real list has 116)
EXAMPLE_NAMES = ("Frontal_Sup", "Parietal_Sup", "Temporal_Sup", "Occipital_Sup", "Hippocampus", "Thalamus", "Cerebelum_Crus1")


def colin27_example(root: Path, spatial_dims: int = 2) -> dict[str, Any]:
    """The three files of :data:`FILES` under ``root`` on one 25x20x18 RAS grid of 1x1.2x1.5 mm voxels
    with x = 0 through the middle of axis 0: a T1 whose 7 regions (bands along axis 1, one AAL label
    per region and hemisphere, ``<id> <name>_L|_R <code>`` in the label list) differ in brightness.
    The same tree serves 2D (sagittal slices) and 3D (halves): ``spatial_dims`` is not needed."""
    root, rng = Path(root), np.random.default_rng(0)
    shape, spacing = (25, 20, 18), (1.0, 1.2, 1.5)
    atlas = np.zeros(shape, np.int16)
    for g in range(len(EXAMPLE_NAMES)):
        atlas[2:12, 3 + 2 * g: 5 + 2 * g, 3:15] = 2 * g + 1  # left hemisphere (x < 0)
        atlas[12:23, 3 + 2 * g: 5 + 2 * g, 3:15] = 2 * g + 2  # right
    t1 = np.where(atlas > 0, 60 + 8 * ((atlas + 1) // 2), 5) + rng.normal(0, 3, shape)
    origin = (-(shape[0] - 1) / 2 * spacing[0], -10.0, -12.0)
    write_nifti(root / FILES[0], t1.astype(np.float32), spacing, origin)
    write_nifti(root / FILES[1], atlas, spacing, origin)
    names = [f"{2 * g + 1 + h} {name}_{side} {2001 + 10 * g + h}" for g, name in enumerate(EXAMPLE_NAMES) for h, side in enumerate("LR")]
    (root / FILES[2]).write_text("\n".join(names) + "\n")
    return {"source": NAME, "path": str(root)}


register_source(Source(
    name=NAME, kind="segmentation", summary="Colin27 T1 + AAL grouped into 7 lobe regions; left hemisphere trains, right tests",
    # data: path (the folder of FILES; default $MEDREP_DATA/volumes), spatial_dims (2: sagittal slices, 3: halves)
    task=lambda data: colin27_lobes(data.get("path"), spatial_dims=data.get("spatial_dims") or 3),
    default_path="volumes", example=colin27_example,
))
