"""The slice-set registry: real 2D images (and label maps) that TaCo's task samples are drawn from.

A *slice set* is one data set seen as 2D images: a radiograph collection, or the slices of a few
volumes. Each is one :class:`SliceSet` record, registered by a module of this package (every
module whose name does not start with ``_``, except ``registry`` and ``prepare``, is imported
with the package: adding a set is adding one file). TaCo's task data layer asks here for images;
``medrep list`` shows :func:`slice_sets` with what is available on this machine.

``masks`` says what label map comes with each slice:

- ``"labels"``: a real label map of the data set (an atlas such as AAL on the same grid);
- ``"derived"``: a map made by a stated rule from the image (CT body and bone by HU thresholds,
  tissue maps by argmax); tasks that use it learn the rule, not an expert's outline;
- ``None``: no mask (tasks that need one refuse the set).

``load(max_images, size, rng)`` returns a :class:`~.prepare.SliceList` of :class:`~.prepare.Slice`
(``image`` (size, size) float32 in [0, 1], ``mask`` int64 or None) and counts what it skipped.
Reading is lazy and nothing is downloaded: a set whose files or package are missing says so in
``available()`` (with the command that installs it) and in the error ``load`` raises.
"""

from __future__ import annotations

import difflib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError, MedrepError
from .prepare import SliceList

MASKS = ("labels", "derived", None)
#: DICOM modality codes, XR for any radiograph (CR, DX); OT ("other") for user data of unknown modality
MODALITIES = ("XR", "CT", "MR", "US", "NM", "OT")

Loader = Callable[[int, int, np.random.Generator], SliceList]


@dataclass(frozen=True)
class SliceSet:
    """What medrep knows about one slice set.

    ``available()`` -> ``(ok, reason)``: whether its files (or package) are here, and if not, how
    to get them. ``loader(max_images, size, rng)`` reads at most ``max_images`` slices (``rng``
    picks the subset where a set has more images than asked for; slices of a volume are evenly
    spaced and do not use it). ``intensity`` says how images were brought to [0, 1].
    """

    name: str
    modality: str
    masks: str | None
    summary: str
    licence: str
    intensity: str
    available: Callable[[], tuple[bool, str]]
    loader: Loader

    def __post_init__(self) -> None:
        if self.masks not in MASKS:
            raise MedrepError(f"masks must be one of {MASKS}, got {self.masks!r}", f"slice set {self.name}")
        if self.modality not in MODALITIES:
            raise MedrepError(f"modality must be one of {', '.join(MODALITIES)}, got {self.modality!r}", f"slice set {self.name}")

    def load(self, max_images: int = 64, size: int = 64, rng: np.random.Generator | None = None) -> SliceList:
        """At most ``max_images`` slices of ``size`` px; a DataError names this set and the file at fault."""
        if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
            raise DataError(f"max_images must be a positive integer, got {max_images!r}", f"slice set {self.name}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 8:
            raise DataError(f"size must be an integer >= 8, got {size!r}", f"slice set {self.name}")
        ok, reason = self.available()
        if not ok:
            raise DataError(f"not available: {reason}", f"slice set {self.name}")
        try:
            slices = self.loader(max_images, size, rng if rng is not None else np.random.default_rng(0))
        except DataError as exc:
            raise _naming(exc, self.name) from exc
        if not slices:
            skipped = ", ".join(f"{n} {why}" for why, n in sorted(slices.skipped.items())) or "nothing read"
            raise DataError(f"no usable image ({skipped})", f"slice set {self.name}")
        return slices


def _naming(exc: DataError, name: str) -> DataError:
    """The same error, its message also naming the slice set (``where`` stays the file)."""
    text = str(exc)
    if exc.where and text.startswith(exc.where + ": "):
        text = text[len(exc.where) + 2:]
    return DataError(f"{text} (slice set {name})", exc.where)


_SETS: dict[str, SliceSet] = {}


def register_slice_set(entry: SliceSet) -> SliceSet:
    if entry.name in _SETS:
        raise MedrepError("a slice set of this name is already registered", f"slice set {entry.name}")
    _SETS[entry.name] = entry
    return entry


def slice_set_names() -> tuple[str, ...]:
    return tuple(_SETS)


def get_slice_set(name: Any) -> SliceSet:
    """The set called ``name``; an unknown name is a DataError suggesting close names."""
    if isinstance(name, str) and name in _SETS:
        return _SETS[name]
    near = difflib.get_close_matches(str(name), list(_SETS), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    raise DataError(f"unknown slice set {name!r}{hint} Known: {', '.join(_SETS)}", "slice set")


def load_slices(name: str, max_images: int = 64, size: int = 64, rng: np.random.Generator | None = None) -> SliceList:
    return get_slice_set(name).load(max_images, size, rng)


def slice_sets() -> list[dict[str, Any]]:
    """One row per registered set, for ``medrep list``: name, modality, masks, availability and why not."""
    rows = []
    for s in _SETS.values():
        ok, reason = s.available()
        rows.append({"name": s.name, "modality": s.modality, "masks": s.masks or "-", "available": "yes" if ok else "no",
                     "reason": "" if ok else reason, "summary": s.summary, "licence": s.licence, "intensity": s.intensity})
    return rows


def format_slice_sets(rows: list[dict[str, Any]] | None = None) -> str:
    from ...results import format_table

    rows = slice_sets() if rows is None else rows
    return format_table(rows, ["name", "modality", "masks", "available", "summary", "reason"])


def measure(names: tuple[str, ...] | None = None, max_images: int = 64, size: int = 64, seed: int = 0) -> list[dict[str, Any]]:
    """Load each available set once and say how many slices came, in how long, and what was skipped."""
    rows = []
    for name in names or slice_set_names():
        s = get_slice_set(name)
        ok, reason = s.available()
        if not ok:
            rows.append({"name": name, "modality": s.modality, "masks": s.masks or "-", "slices": "", "seconds": "",
                         "skipped": f"unavailable: {reason}"})
            continue
        start = time.perf_counter()
        slices = s.load(max_images, size, np.random.default_rng(seed))
        rows.append({"name": name, "modality": s.modality, "masks": s.masks or "-", "slices": len(slices),
                     "seconds": round(time.perf_counter() - start, 3),
                     "skipped": ", ".join(f"{n} {why}" for why, n in sorted(slices.skipped.items()))})
    return rows


def shared_path(relative: str) -> Path | None:
    """``$MEDREP_DATA/relative``, or None when the variable is unset."""
    root = os.environ.get("MEDREP_DATA")
    return Path(root) / relative if root else None


def files_here(paths: list[Path | None], hint: str) -> tuple[bool, str]:
    """``(True, "")`` when every path exists, else ``(False, what is missing and how to get it)``."""
    if any(p is None for p in paths):
        return False, f"set $MEDREP_DATA ({hint})"
    missing = [str(p) for p in paths if not p.exists()]
    return (False, f"{', '.join(missing)} missing ({hint})") if missing else (True, "")
