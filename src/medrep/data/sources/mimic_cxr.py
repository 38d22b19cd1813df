"""``mimic_cxr``: MIMIC-CXR(-JPG) chest X-ray studies and their free-text reports.

Images ``ROOT/files/pXX/pN/sM/*.jpg`` (or ``.dcm``), reports ``ROOT/files/pXX/pN/sM.txt``; the
official split file ``ROOT/mimic-cxr-2.0.0-split.csv(.gz)`` when present. A study (all its views,
one report) is a row; its patient is ``pN``, so a patient in two splits is refused.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import DataError
from ..datasets.image_text import ImageTextRow, Tally, check_pairs, pairs_report
from ..io.readers import image_format
from ..io.reports import read_text_file, report_text
from ..synthetic import write_example_image
from .registry import Source, register_source

MIMIC_SPLIT_FILES = ("mimic-cxr-2.0.0-split.csv.gz", "mimic-cxr-2.0.0-split.csv")


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
    MIMIC-CXR reports download). The text is :func:`~medrep.data.io.reports.report_text` of the
    report for ``sections``. Splits come from ``ROOT/mimic-cxr-2.0.0-split.csv(.gz)`` (studies
    it does not list are left out and counted); without it every study is "train".
    """
    root = Path(root).expanduser()
    files = root / "files"
    if not files.is_dir():
        raise DataError("no files/ folder (expected the MIMIC-CXR layout files/pXX/pN/sM/)", root)
    report_files = Path(reports_root).expanduser() / "files" if reports_root is not None else files
    splits, _ = _mimic_splits(root)
    tally, rows, unsplit = Tally(skip_bad), [], 0
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
    return check_pairs(rows, root), pairs_report("mimic_cxr", root, rows, tally, unsplit)


def mimic_cxr_example(root: Path, spatial_dims: int = 2) -> dict[str, Any]:
    """``root/files/p10/p1000000<i>/s5000000<i>/{PA,LAT}.jpg`` with the report ``.../s5000000<i>.txt``
    and the split file ``root/mimic-cxr-2.0.0-split.csv.gz``: 6 train and 2 test studies of one
    patient each. 2D only (chest X-rays)."""
    root, lines = Path(root), ["dicom_id,study_id,subject_id,split"]
    for i in range(8):
        patient, study, word = f"p1000000{i}", f"5000000{i}", ("bright", "dark")[i % 2]
        folder = root / "files" / "p10" / patient / f"s{study}"
        for j, view in enumerate(("PA", "LAT")):
            write_example_image(folder / f"{view}.jpg", 200 if word == "bright" else 40, 2 * i + j)
            lines.append(f"{view}{i},{study},{patient[1:]},{'train' if i < 6 else 'test'}")
        folder.with_suffix(".txt").write_text(f"                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n"
                                              f" FINDINGS:\n The lungs are {word}. No pleural effusion.\n\n"
                                              f" IMPRESSION:\n No acute cardiopulmonary process.\n")
    with gzip.open(root / MIMIC_SPLIT_FILES[0], "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return {"source": "mimic_cxr", "path": str(root)}


register_source(Source(
    name="mimic_cxr", kind="image_text", summary="MIMIC-CXR(-JPG) chest X-ray studies and reports (files/pXX/pN/sM)",
    pairs=lambda path, data: mimic_cxr_pairs(path, skip_bad=bool(data.get("skip_bad"))),
    example=mimic_cxr_example, supported_dims=(2,),
))
