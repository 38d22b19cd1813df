"""``ct_rate``: CT-RATE chest CT volumes (NIfTI) with their radiology reports (Hamamci et al. 2024).

Layout read (as distributed)::

    ROOT/dataset/<split>/<split>_N/<split>_N_a/<split>_N_a_1.nii.gz    split folders: train, valid
    ROOT/dataset/radiology_text_reports/train_reports.csv               VolumeName, ClinicalInformation_EN,
    ROOT/dataset/radiology_text_reports/validation_reports.csv          Technique_EN, Findings_EN, Impressions_EN

What a row is (choices made here; CT-RATE's own loader keeps one sample per volume):

- a study is a scan, ``train_N_a`` (one acquisition, one report); its images are its
  reconstructions ``train_N_a_1``, ``_2`` ... (the same acquisition with another kernel or slice
  thickness). ``data.ct_rate_reconstructions: first`` (default) keeps the lowest-numbered one:
  they are near duplicates, and keeping all would weigh a scan by how many it has; ``all`` keeps
  every one (training draws one per access, retrieval pools them). Those left out are counted in
  the reader report (``reconstructions_left_out``).
- the patient is ``train_N``, so a patient found in both split folders is a leak, refused by
  :func:`~medrep.data.datasets.image_text.check_pairs`; the split is the folder (``train`` or
  ``valid``; retrieval scores ``valid``, as CT-RATE has no public test split). A split folder that
  is absent is not read (nor its CSV), so a download of ``valid`` alone works.
- the text (``data.ct_rate_text``): ``findings``, ``impressions`` or ``findings+impressions``
  (default, two paragraphs in that order), from the report row of the study's first kept
  reconstruction (CT-RATE repeats a scan's report on each of its volumes' rows). A blank section
  or CT-RATE's placeholder "Not given." is no text: a study missing one of the chosen sections
  keeps the other (counted: ``partial_text``), a study with none is bad.

Bad studies go through :class:`~medrep.data.datasets.image_text.Tally` (an error naming the file
and the volume, or with ``data.skip_bad`` left out and counted by reason): a volume on disk with
no report row, a listed volume missing on disk, no text. A reports CSV that is absent, unreadable
or lacks a needed column, and a VolumeName listed twice or not in CT-RATE's pattern, are errors
whatever ``skip_bad`` says: they are not one study's fault, and skipping would drop a split.
Files in a scan folder that are not its volumes are not read and are counted (``not_in_layout``).

Building rows lists folders and reads the CSVs, and opens no volume, so 50,000 volumes cost a
directory walk; a volume is read (a truncated one failing with its name) when first served.

Spacing is the NIfTI header's (:func:`~medrep.data.io.readers.read_nifti`, from the affine), as
for every NIfTI medrep reads. ``dataset/metadata/<split>_metadata.csv`` (XYSpacing, ZSpacing,
RescaleSlope, RescaleIntercept) is not read. CT-CLIP's loader takes spacing and HU rescaling from
it rather than from the header: check that your copy's headers carry both before trusting them.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError, RecipeError
from ..datasets.image_text import ImageTextRow, Tally, check_pairs, pairs_report
from ..synthetic import write_nifti
from .registry import Source, register_source

#: split folder -> its reports file under dataset/radiology_text_reports/
REPORT_FILES = {"train": "train_reports.csv", "valid": "validation_reports.csv"}
#: data.ct_rate_text -> the report columns joined, in order
TEXT_COLUMNS = {"findings": ("Findings_EN",), "impressions": ("Impressions_EN",),
                "findings+impressions": ("Findings_EN", "Impressions_EN")}
RECONSTRUCTIONS = ("first", "all")
NO_TEXT = frozenset({"", "not given."})
VOLUME = re.compile(r"(?P<scan>(?P<patient>[a-z]+_\d+)_[a-z]+)_(?P<k>\d+)\.nii\.gz")
Reports = dict[str, tuple[int, tuple[str, ...]]]


def _section(value: str | None) -> str:
    text = (value or "").strip()
    return "" if text.lower() in NO_TEXT else text


def read_reports(path: Path, columns: Sequence[str]) -> Reports:
    """``VolumeName -> (line, texts of columns)`` from one reports CSV."""
    if not path.is_file():
        raise DataError("no reports file (expected the CT-RATE layout dataset/radiology_text_reports/)", path)
    reports: Reports = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("VolumeName", *columns) if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"needs column(s) {', '.join(missing)}; has {', '.join(reader.fieldnames or []) or 'none'}", path)
            for record in reader:
                name, line = (record["VolumeName"] or "").strip(), reader.line_num
                if not VOLUME.fullmatch(name):
                    raise DataError(f"line {line}: VolumeName {name!r} is not <split>_N_<scan>_<k>.nii.gz", path)
                if name in reports:
                    raise DataError(f"line {line}: volume {name} is listed twice (also line {reports[name][0]})", path)
                reports[name] = (line, tuple(_section(record[c]) for c in columns))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read the reports CSV ({exc})", path) from exc
    return reports


def volumes_on_disk(folder: Path) -> tuple[dict[str, Path], int]:
    """``VolumeName -> path`` under ``folder/<patient>/<scan>/`` (names must match both folders),
    and how many other entries the scan folders hold."""
    found, other = {}, 0
    for patient in (e for e in os.scandir(folder) if e.is_dir()):
        for scan in (e for e in os.scandir(patient.path) if e.is_dir()):
            for entry in os.scandir(scan.path):
                match = VOLUME.fullmatch(entry.name)
                if match and match["scan"] == scan.name and match["patient"] == patient.name and entry.is_file():
                    found[entry.name] = Path(entry.path)
                elif not entry.name.startswith("."):
                    other += 1
    return found, other


def _problem(name: str, folder: Path, reports: Reports, on_disk: dict[str, Path], csv_path: Path) -> tuple[str, Path, str] | None:
    """(reason, file, detail) of what keeps volume ``name`` of split ``folder`` out, or None."""
    if name not in reports:
        return "no report row", csv_path, f"volume {name}"
    if name not in on_disk:
        match = VOLUME.fullmatch(name)
        return "volume file is missing", folder / match["patient"] / match["scan"] / name, \
            f"listed on line {reports[name][0]} of {csv_path.name}"
    return None


def ct_rate_pairs(
    root: str | Path, text: str = "findings+impressions", reconstructions: str = "first", skip_bad: bool = False
) -> tuple[list[ImageTextRow], dict[str, Any]]:
    """CT-RATE's studies (scans) as rows; see the module docstring for what a row is."""
    root = Path(root).expanduser().resolve()
    splits = [s for s in REPORT_FILES if (root / "dataset" / s).is_dir()]
    if not splits:
        raise DataError("no dataset/train or dataset/valid folder (expected the CT-RATE layout dataset/<split>/<split>_N/)", root)
    tally, rows, counts = Tally(skip_bad), [], Counter(reconstructions_left_out=0, partial_text=0, not_in_layout=0)
    for split in splits:
        folder, csv_path = root / "dataset" / split, root / "dataset" / "radiology_text_reports" / REPORT_FILES[split]
        reports = read_reports(csv_path, TEXT_COLUMNS[text])
        on_disk, other = volumes_on_disk(folder)
        counts["not_in_layout"] += other
        scans: dict[str, list[str]] = defaultdict(list)
        for name in on_disk.keys() | reports.keys():
            scans[VOLUME.fullmatch(name)["scan"]].append(name)
        for scan, names in sorted(scans.items()):
            names.sort(key=lambda n: int(VOLUME.fullmatch(n)["k"]))
            kept = names if reconstructions == "all" else names[:1]
            counts["reconstructions_left_out"] += len(names) - len(kept)
            problem = next(filter(None, (_problem(n, folder, reports, on_disk, csv_path) for n in kept)), None)
            if problem is None:
                line, sections = reports[kept[0]]
                parts = [s for s in sections if s]
                problem = None if parts else ("empty report", csv_path, f"volume {kept[0]}, line {line}")
            if problem is not None:
                reason, where, detail = problem
                tally.bad(reason, scan, where, detail)
                continue
            counts["partial_text"] += len(parts) < len(sections)
            patient = VOLUME.fullmatch(kept[0])["patient"]
            rows.append(ImageTextRow(tuple(str(on_disk[n]) for n in kept), "\n\n".join(parts), scan, split, patient,
                                     source=f"{csv_path.name} line {line}"))
    return check_pairs(rows, root), {**pairs_report("ct_rate", root, rows, tally, 0), **counts}


def write_ct_rate_tree(
    root: str | Path, patients: Mapping[str, int], scans: int = 1, reconstructions: int = 1,
    shape: Sequence[int] = (20, 18, 12), spacing: Sequence[float] = (0.8, 0.8, 2.5), seed: int = 0,
) -> Path:
    """A CT-RATE tree under ``root``: ``patients[split]`` patients per split folder, each with
    ``scans`` scans of ``reconstructions`` volumes (int16 HU-like noise of ``shape`` and ``spacing``
    mm), and both reports CSVs whose findings name the scan's brightness (a pairing a model can learn)."""
    root, rng = Path(root), np.random.default_rng(seed)
    reports = root / "dataset" / "radiology_text_reports"
    reports.mkdir(parents=True, exist_ok=True)
    for split, count in patients.items():
        with (reports / REPORT_FILES[split]).open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"])
            for n in range(1, count + 1):
                for s in "abcdefghijklmnopqrstuvwxyz"[:scans]:
                    scan, dense = f"{split}_{n}_{s}", (n + ord(s)) % 2 == 0
                    for k in range(1, reconstructions + 1):
                        volume = rng.normal(-100 if dense else -700, 80, tuple(shape)).astype(np.int16)
                        write_nifti(root / "dataset" / split / f"{split}_{n}" / scan / f"{scan}_{k}.nii.gz", volume, spacing)
                        writer.writerow([f"{scan}_{k}.nii.gz", "Cough.", "Non-contrast chest CT.",
                                         f"The lungs are {'dense' if dense else 'clear'}. No pleural effusion.",
                                         "Consolidation." if dense else "Not given."])
    return root


def ct_rate_example(root: Path, spatial_dims: int = 3) -> dict[str, Any]:
    """:func:`write_ct_rate_tree` with 3 train patients and 1 valid patient of 2 scans with 2
    reconstructions each (16 volumes of 20x18x12 voxels, 0.8x0.8x2.5 mm), every reconstruction
    kept (``ct_rate_reconstructions: all``). 3D only."""
    write_ct_rate_tree(root, {"train": 3, "valid": 1}, scans=2, reconstructions=2)
    return {"source": "ct_rate", "path": str(root), "ct_rate_reconstructions": "all"}


def _check(data: dict[str, Any]) -> None:
    for key, allowed, default in (("ct_rate_text", tuple(TEXT_COLUMNS), "findings+impressions"),
                                  ("ct_rate_reconstructions", RECONSTRUCTIONS, "first")):
        value = data.get(key, default)
        if not isinstance(value, str) or value not in allowed:
            raise RecipeError(f"must be one of {', '.join(allowed)}, got {value!r}", f"data.{key}")


register_source(Source(
    name="ct_rate", kind="image_text", summary="CT-RATE chest CT volumes and reports (dataset/<split>/<split>_N/<split>_N_a/)",
    pairs=lambda path, data: ct_rate_pairs(path, data.get("ct_rate_text") or "findings+impressions",
                                           data.get("ct_rate_reconstructions") or "first", skip_bad=bool(data.get("skip_bad"))),
    # findings | impressions | findings+impressions; first | all reconstructions of a scan
    options={"ct_rate_text": "findings+impressions", "ct_rate_reconstructions": "first"}, check=_check,
    default_path="ct_rate", eval_split="valid", example=ct_rate_example, supported_dims=(3,),
))
