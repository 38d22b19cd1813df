"""Image-report pairs from real layouts, as :class:`~medrep.data.image_text.ImageTextRow` lists.

Every reader returns ``(rows, report)``. Nothing is dropped silently: a study without text or
with a missing image raises :class:`DataError` naming it, or with ``skip_bad=True`` is left out
and counted in ``report["skipped"]`` (by reason, with up to five example ids in
``report["examples"]``). Studies in no split are left out and counted as ``report["unsplit"]``,
since a split file that omits them (e.g. MedPix 2.0's held-back test cases) is deliberate. All
rows pass :func:`~medrep.data.image_text.check_pairs`, so a patient in two splits is an error.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError
from .image_text import ImageTextRow, check_pairs
from .medpix import read_descriptions, read_splits
from .readers import image_format
from .reports import read_text_file, report_text

#: MedPix 2.0 text fields: name -> (file, keys); "caption" is per image, the others per case
MEDPIX_FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "caption": ("Descriptions.json", ("Description", "Caption")),
    "findings": ("Case_topic.json", ("Case", "Findings")),
    "history": ("Case_topic.json", ("Case", "History")),
    "exam": ("Case_topic.json", ("Case", "Exam")),
    "diagnosis": ("Case_topic.json", ("Case", "Case Diagnosis")),
    "discussion": ("Case_topic.json", ("Case", "Discussion")),
    "title": ("Case_topic.json", ("Case", "Title")),
}
#: values that stand for "no text" in MedPix
NO_TEXT = frozenset({"left blank", "n/a", "na", "none"})
MIMIC_SPLIT_FILES = ("mimic-cxr-2.0.0-split.csv.gz", "mimic-cxr-2.0.0-split.csv")


class _Tally:
    """Bad studies: raise at once, or (``skip_bad``) count them by reason."""

    def __init__(self, skip_bad: bool):
        self.skip_bad = skip_bad
        self.skipped: Counter = Counter()
        self.examples: dict[str, list[str]] = {}

    def bad(self, reason: str, study: str, where: str | Path) -> None:
        if not self.skip_bad:
            raise DataError(f"study {study}: {reason} (skip_bad=True leaves such studies out and counts them)", where)
        self.skipped[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(study)


def _summary(dataset: str, root: str | Path, rows: list[ImageTextRow], tally: _Tally, unsplit: int) -> dict[str, Any]:
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


def _text(record: Any, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        record = record.get(key) if isinstance(record, dict) else None
    if not isinstance(record, str) or not record.strip() or record.strip().lower() in NO_TEXT:
        return None
    return record.strip()


def medpix2_pairs(root: str | Path, field: str = "caption", skip_bad: bool = False) -> tuple[list[ImageTextRow], dict[str, Any]]:
    """MedPix 2.0: one row per image (``study`` = image stem, ``patient`` = case ``U_id``).

    ``field`` picks the text (:data:`MEDPIX_FIELDS`): ``caption`` describes the image itself; the
    case fields (``findings``, ``history``...) are shared by the case's images. Splits come from
    ``splits/data_<split>.jsonl`` (:func:`~medrep.data.medpix.read_splits`, which refuses leaks).
    """
    if field not in MEDPIX_FIELDS:
        raise DataError(f"must be one of {', '.join(MEDPIX_FIELDS)}, got {field!r}", "field")
    root = Path(root).expanduser().resolve()
    records = read_descriptions(root)
    case_split, image_split = read_splits(root)
    file, keys = MEDPIX_FIELDS[field]
    case_text: dict[str, str | None] = {}
    if file == "Case_topic.json":
        try:
            cases = json.loads((root / file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read case records ({exc})", root / file) from exc
        case_text = {c.get("U_id"): _text(c, keys) for c in cases if isinstance(c, dict)}
    tally, rows, unsplit = _Tally(skip_bad), [], 0
    for rec in records:
        image, case = rec["image"], rec["U_id"]
        split = image_split.get(image, case_split.get(case))
        if split is None:
            unsplit += 1
            continue
        text = _text(rec, keys) if file == "Descriptions.json" else case_text.get(case)
        path = root / "images" / f"{image}.png"
        if text is None:
            tally.bad(f"no {field} text", image, root / file)
        elif not path.is_file():
            tally.bad("image file is missing", image, path)
        else:
            rows.append(ImageTextRow((str(path),), text, image, split, case, source=f"image {image}"))
    return check_pairs(rows, root), _summary("medpix2", root, rows, tally, unsplit)


def iu_xray_pairs(
    annotation_json: str | Path, image_root: str | Path, skip_bad: bool = False
) -> tuple[list[ImageTextRow], dict[str, Any]]:
    """IU X-ray in the R2Gen layout: ``{split: [{"id", "report", "image_path": [...]}]}``.

    ``study`` = ``id``; images are ``image_root / image_path``; the split is the top-level key
    (an entry whose own ``split`` says otherwise is an error). IU X-ray has no patient ids.
    """
    where = Path(annotation_json)
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the R2Gen annotation ({exc})", where) from exc
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise DataError("expected {split: [entries]} (the R2Gen annotation.json layout)", where)
    image_root = Path(image_root).expanduser()
    tally, rows = _Tally(skip_bad), []
    for split, entries in data.items():
        for i, entry in enumerate(entries):
            study = entry.get("id") if isinstance(entry, dict) else None
            if not isinstance(study, str) or not study.strip():
                raise DataError(f"{split} entry {i}: no 'id'", where)
            if entry.get("split", split) != split:
                raise DataError(f"study {study}: listed under {split!r} but its 'split' is {entry['split']!r}", where)
            report, paths = entry.get("report"), entry.get("image_path")
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                raise DataError(f"study {study}: 'image_path' must be a list of paths", where)
            images = [image_root / p for p in paths]
            missing = [str(p) for p in images if not p.is_file()]
            if not isinstance(report, str) or not report.strip():
                tally.bad("no report text", study, where)
            elif not images:
                tally.bad("no images", study, where)
            elif missing:
                tally.bad("image file is missing", study, missing[0])
            else:
                rows.append(ImageTextRow(tuple(map(str, images)), report.strip(), study, split, source=f"{split} entry {i}"))
    return check_pairs(rows, where), _summary("iu_xray", image_root, rows, tally, 0)


def _mimic_splits(root: Path) -> tuple[dict[str, str] | None, Path | None]:
    """``study id -> split`` from the official split file when present; a study in two splits is an error."""
    path = next((root / n for n in MIMIC_SPLIT_FILES if (root / n).is_file()), None)
    if path is None:
        return None, None
    try:
        raw = gzip.open(path, "rt", encoding="utf-8").read() if path.suffix == ".gz" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the split file ({exc})", path) from exc
    reader = csv.DictReader(io.StringIO(raw, newline=""))
    if not {"study_id", "split"} <= set(reader.fieldnames or []):
        raise DataError(f"needs columns study_id and split; has {', '.join(reader.fieldnames or [])}", path)
    splits: dict[str, str] = {}
    for record in reader:
        study, split = f"s{record['study_id'].strip()}", record["split"].strip()
        if splits.setdefault(study, split) != split:
            raise DataError(f"line {reader.line_num}: study {study} is in splits {splits[study]!r} and {split!r}: a leak", path)
    return splits, path


def _mimic_studies(files: Path) -> list[tuple[str, Path]]:
    """(patient, study path without suffix) for every study folder or report under ``files/pXX/pN/``."""
    found: set[tuple[str, Path]] = set()
    for group in sorted(e.path for e in os.scandir(files) if e.is_dir() and re.fullmatch(r"p\d+", e.name)):
        for patient in (e for e in os.scandir(group) if e.is_dir() and re.fullmatch(r"p\d+", e.name)):
            for entry in os.scandir(patient.path):
                match = re.fullmatch(r"(s\d+)(\.txt)?", entry.name)
                if match and (entry.is_dir() if match.group(2) is None else entry.is_file()):
                    found.add((patient.name, Path(patient.path) / match.group(1)))
    return sorted(found, key=lambda item: item[1])


def mimic_cxr_pairs(
    root: str | Path,
    reports_root: str | Path | None = None,
    sections: Sequence[str] = ("findings", "impression"),
    skip_bad: bool = False,
) -> tuple[list[ImageTextRow], dict[str, Any]]:
    """MIMIC-CXR(-JPG): images ``ROOT/files/pXX/pN/sM/*.jpg`` (or .dcm), reports ``.../sM.txt``.

    Reports may live in another tree with the same layout (``reports_root``, as in the separate
    MIMIC-CXR reports download). The text is :func:`~medrep.data.reports.report_text` of the
    report for ``sections``. Splits come from ``ROOT/mimic-cxr-2.0.0-split.csv(.gz)`` (studies
    it does not list are left out and counted); without it every study is "train".
    """
    root = Path(root).expanduser()
    files = root / "files"
    if not files.is_dir():
        raise DataError("no files/ folder (expected the MIMIC-CXR layout files/pXX/pN/sM/)", root)
    report_files = Path(reports_root).expanduser() / "files" if reports_root is not None else files
    splits, _ = _mimic_splits(root)
    tally, rows, unsplit = _Tally(skip_bad), [], 0
    for patient, study_path in _mimic_studies(files):
        study = study_path.name
        split = "train" if splits is None else splits.get(study)
        if split is None:
            unsplit += 1
            continue
        txt = report_files / study_path.relative_to(files).with_suffix(".txt")
        images = sorted(str(p) for p in study_path.glob("*") if not p.name.startswith(".") and image_format(p) is not None) \
            if study_path.is_dir() else []
        if not txt.is_file():
            tally.bad("no report file", study, txt)
        elif not images:
            tally.bad("no images", study, study_path)
        elif not (text := report_text(read_text_file(txt), sections)):
            tally.bad("empty report", study, txt)
        else:
            rows.append(ImageTextRow(tuple(images), text, study, split, patient, source=str(txt)))
    return check_pairs(rows, root), _summary("mimic_cxr", root, rows, tally, unsplit)
