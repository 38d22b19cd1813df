"""Atlas label lists and the grouping of the AAL atlas into seven large regions.

Read by the data (the ``colin27-lobes`` segmentation source, the ``colin27-regions`` image-text
crops) and by the evaluations (the region probe, UniMedI's slice selection), so it lives with the
readers: the data package never imports the evaluation package.

A *sided region* (:func:`region_of`) is a group plus the hemisphere of the AAL name's ``_L``/``_R``
suffix: ``frontal_L``, ``cerebellum_R``; a name without a suffix (the vermis) gives the bare group,
``cerebellum``, which the text calls midline.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ...errors import MedrepError

#: Large regions of the AAL atlas and the name prefixes (left/right suffix removed) that fall in each.
AAL_GROUPS: dict[str, tuple[str, ...]] = {
    "frontal": ("Precentral", "Frontal_", "Rolandic_Oper", "Supp_Motor_Area", "Olfactory", "Rectus", "Paracentral_Lobule"),
    "parietal": ("Postcentral", "Parietal_", "SupraMarginal", "Angular", "Precuneus"),
    "temporal": ("Heschl", "Temporal_", "Fusiform"),
    "occipital": ("Calcarine", "Cuneus", "Lingual", "Occipital_"),
    "limbic": ("Insula", "Cingulum_", "Hippocampus", "ParaHippocampal", "Amygdala"),
    "subcortical": ("Caudate", "Putamen", "Pallidum", "Thalamus"),
    "cerebellum": ("Cerebelum_", "Cerebellum_", "Vermis"),
}
GROUPS: tuple[str, ...] = tuple(AAL_GROUPS)
#: what a text calls each group (a noun that reads after "the left"); groups not listed are "<group> region"
GROUP_NOUNS: dict[str, str] = {
    "frontal": "frontal lobe", "parietal": "parietal lobe", "temporal": "temporal lobe", "occipital": "occipital lobe",
    "limbic": "limbic region", "subcortical": "subcortical region", "cerebellum": "cerebellum",
}
SIDES: dict[str, str] = {"L": "left", "R": "right"}
_SIDE = re.compile(r"_(L|R)$")


def read_label_names(path: str | Path) -> dict[int, str]:
    """Parse an atlas label list: one ``<id> <name> [code ...]`` per line (spaces or tabs; blank
    lines and ``#`` comments ignored; CRLF accepted), as ``colin27_aal_labels.txt``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise MedrepError(f"cannot read label names ({exc.strerror or exc})", path) from exc
    names: dict[int, str] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2 or not parts[0].isdigit():
            raise MedrepError(f"line {line_no}: expected '<id> <name> ...', got {line!r}", path)
        idx = int(parts[0])
        if idx == 0:
            continue  # some lists name the background
        if idx in names:
            raise MedrepError(f"line {line_no}: label {idx} listed twice", path)
        names[idx] = parts[1]
    if not names:
        raise MedrepError("no label names found", path)
    return names


def group_of(name: str) -> str:
    """The :data:`AAL_GROUPS` region of one AAL label name (hemisphere suffix ignored)."""
    base = _SIDE.sub("", name)
    for group, prefixes in AAL_GROUPS.items():
        if any(base == p.rstrip("_") or base.startswith(p) for p in prefixes):
            return group
    raise MedrepError(f"AAL label {name!r} matches no region of the grouping; use fine labels or extend AAL_GROUPS", "label names")


def group_labels(names: dict[int, str]) -> dict[int, str]:
    """Map each label id to its region; every name must match a rule."""
    return {idx: group_of(name) for idx, name in names.items()}


def region_of(name: str) -> str:
    """The sided region of one AAL label name: ``Frontal_Sup_L`` -> ``frontal_L``, ``Vermis_4_5`` -> ``cerebellum``."""
    side = _SIDE.search(name)
    return group_of(name) + (side.group(0) if side else "")


def region_phrase(region: str) -> str:
    """How a text names a sided region: ``frontal_L`` -> "the left frontal lobe", ``cerebellum`` -> "the midline cerebellum"."""
    group, _, side = region.partition("_")
    return f"the {SIDES.get(side, 'midline')} {GROUP_NOUNS.get(group, group + ' region')}"


def region_ids(label_names: Mapping[int, str] | str | Path) -> dict[str, list[int]]:
    """Sided region -> the atlas label ids in it (``label_names``: a parsed label list or its file)."""
    names = label_names if isinstance(label_names, Mapping) else read_label_names(label_names)
    out: dict[str, list[int]] = {}
    for idx in sorted(names):
        out.setdefault(region_of(names[idx]), []).append(int(idx))
    return out


def region_slices(labels: np.ndarray, region: str, label_names: Mapping[int, str] | str | Path, min_voxels: int = 1) -> np.ndarray:
    """Which axial slices (the last axis) of an atlas label crop hold at least ``min_voxels`` voxels of ``region``.

    ``labels``: raw atlas ids (a ``colin27-regions`` label crop, any shape ending in the slice
    axis); ``region``: a sided region as in that manifest's ``regions`` column. Returns a boolean
    vector of length ``labels.shape[-1]``. An unknown region is an error naming the known ones.
    """
    ids = region_ids(label_names)
    if region not in ids:
        raise MedrepError(f"unknown region {region!r}; the label names give {', '.join(sorted(ids))}", "region")
    if isinstance(min_voxels, bool) or not isinstance(min_voxels, (int, np.integer)) or min_voxels < 1:
        raise MedrepError(f"must be a positive integer, got {min_voxels!r}", "min_voxels")
    labels = np.asarray(labels)
    if labels.ndim < 1:
        raise MedrepError("a label crop needs at least one axis", "labels")
    inside = np.isin(labels, ids[region])
    return inside.reshape(-1, labels.shape[-1]).sum(axis=0) >= min_voxels
