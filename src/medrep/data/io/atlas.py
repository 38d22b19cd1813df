"""Atlas label lists and the grouping of the AAL atlas into seven large regions.

Read by the data (the ``colin27-lobes`` segmentation source) and by the region probe
(:mod:`medrep.evaluate.regions`), so it lives with the readers: the data package never imports
the evaluation package.
"""

from __future__ import annotations

import re
from pathlib import Path

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
    base = re.sub(r"_(L|R)$", "", name)
    for group, prefixes in AAL_GROUPS.items():
        if any(base == p.rstrip("_") or base.startswith(p) for p in prefixes):
            return group
    raise MedrepError(f"AAL label {name!r} matches no region of the grouping; use fine labels or extend AAL_GROUPS", "label names")


def group_labels(names: dict[int, str]) -> dict[int, str]:
    """Map each label id to its region; every name must match a rule."""
    return {idx: group_of(name) for idx, name in names.items()}
