"""Image-report pairs: one row per study (one or more images and one report), a generic manifest
for them, and the checks every reader applies.

A study, not an image, is the unit: a chest X-ray report describes the frontal and the lateral
view together, so both belong to one row and must never be split across train and test. The
readers for real layouts (MedPix 2.0, IU X-ray, MIMIC-CXR) are sources in :mod:`medrep.data.sources`;
the dataset and batching are in :mod:`.image_text_dataset`.

Manifest (CSV/TSV or JSONL), one row per study; relative paths are resolved against the
manifest's folder:

- ``images``: one or more image paths (CSV: separated by ";"; JSONL: a list or such a string),
  or a single ``path`` column instead;
- ``report``: the text (required, non-empty);
- optional ``label`` (an integer class or a class name), ``split``, ``study`` (an id; default
  ``row<N>``) and ``patient``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import DataError
from .manifest import _blank, _label, table_records


@dataclass(frozen=True)
class ImageTextRow:
    """One study: its images (absolute paths), report text, and where it came from (``source``,
    e.g. "row 3 (line 4)", for error messages)."""

    images: tuple[str, ...]
    report: str
    study: str
    split: str | None = None
    patient: str | None = None
    label: int | str | None = None
    source: str = ""


class Tally:
    """Bad studies found by a source's reader: raise at once, or (``skip_bad``) count them by reason."""

    def __init__(self, skip_bad: bool):
        self.skip_bad = skip_bad
        self.skipped: Counter = Counter()
        self.examples: dict[str, list[str]] = {}

    def bad(self, reason: str, study: str, where: str | Path, detail: str = "") -> None:
        """``reason`` is what is counted; ``detail`` (which volume, which line) only joins the error."""
        if not self.skip_bad:
            said = f"{reason} ({detail})" if detail else reason
            raise DataError(f"study {study}: {said} (skip_bad=True leaves such studies out and counts them)", where)
        self.skipped[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(study)


def pairs_report(dataset: str, root: str | Path, rows: list[ImageTextRow], tally: Tally, unsplit: int) -> dict[str, Any]:
    """What a reader kept (studies, images and patients per split) and left out (``skipped`` by reason,
    ``unsplit``): the ``reader_report`` of an image-report dataset."""
    splits = sorted({r.split or "" for r in rows})
    return {
        "dataset": dataset,
        "root": str(root),
        "studies": {s: sum(1 for r in rows if (r.split or "") == s) for s in splits},
        "images": {s: sum(len(r.images) for r in rows if (r.split or "") == s) for s in splits},
        "patients": {s: len({r.patient for r in rows if (r.split or "") == s and r.patient}) for s in splits},
        "skipped": dict(tally.skipped),
        "examples": tally.examples,
        "unsplit": unsplit,
    }


def check_pairs(rows: Iterable[ImageTextRow], where: str | Path) -> list[ImageTextRow]:
    """Refuse duplicate study ids, studies without images, and a study or patient in two splits.

    A patient in two splits leaks their anatomy (and often near-identical reports) from training
    into evaluation, so it is an error naming the patient and both splits, never a warning.
    Rows without a split take part in the duplicate check only.
    """
    rows = list(rows)
    studies: dict[str, ImageTextRow] = {}
    patients: dict[str, ImageTextRow] = {}
    for row in rows:
        if not row.images:
            raise DataError(f"{row.source or 'study ' + row.study}: study {row.study!r} has no images", where)
        first = studies.setdefault(row.study, row)
        if first is not row:
            leak = f" in splits {first.split!r} and {row.split!r}: a leak between splits" if first.split != row.split else ""
            raise DataError(f"{row.source}: study {row.study!r} also in {first.source or 'another row'}{leak}", where)
        if row.patient is None or row.split is None:
            continue
        seen = patients.setdefault(row.patient, row)
        if seen.split is not None and seen.split != row.split:
            raise DataError(
                f"{row.source}: patient {row.patient!r} is in splits {seen.split!r} ({seen.source or seen.study}) "
                f"and {row.split!r}: a leak between splits",
                where,
            )
    return rows


def _image_list(record: dict[str, Any], place: str, where: Path) -> list[str]:
    value = record.get("images", record.get("path"))
    if isinstance(value, str):
        value = value.split(";")
    if value is None:
        value = []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{place}: 'images' must be a path, a ';'-separated string or a list of paths", where)
    images = []
    for item in (v.strip() for v in value if v.strip()):
        file = Path(item).expanduser()
        file = file if file.is_absolute() else where.parent / file
        if not file.exists():
            raise DataError(f"{place}: image {item!r} does not exist ({file})", where)
        images.append(str(file))
    return images


def _optional_id(value: Any, name: str, place: str, where: Path) -> str | None:
    if _blank(value):
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{place}: {name} must be a string or an integer, got {value!r}", where)
    return str(value).strip()


def read_image_text_manifest(path: str | Path) -> list[ImageTextRow]:
    """Every row of an image-text manifest (see the module docstring), checked with :func:`check_pairs`.

    Any bad row raises :class:`DataError` naming the manifest and the row: no or an empty report,
    a report that is not text, a missing image file, a row without images, a duplicate study id,
    a study or patient in two splits.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such manifest file" if not path.exists() else "not a file", path)
    rows = []
    for index, line, record in table_records(path, key_columns=("images", "path")):
        place = f"row {index} ({line})"
        report = record.get("report")
        if report is None:
            raise DataError(f"{place}: no 'report'", path)
        if not isinstance(report, str):
            raise DataError(f"{place}: 'report' must be text, got {type(report).__name__}", path)
        if not report.strip():
            raise DataError(f"{place}: empty 'report'", path)
        images = _image_list(record, place, path)
        if not images:
            raise DataError(f"{place}: study has no images", path)
        rows.append(
            ImageTextRow(
                images=tuple(images),
                report=report.strip(),
                study=_optional_id(record.get("study"), "study", place, path) or f"row{index}",
                split=_optional_id(record.get("split"), "split", place, path),
                patient=_optional_id(record.get("patient"), "patient", place, path),
                label=_label(record.get("label"), str(path), index),
                source=place,
            )
        )
    if not rows:
        raise DataError("manifest has no rows", path)
    return check_pairs(rows, path)
