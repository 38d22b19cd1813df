"""``medpix2``: MedPix 2.0 (Siragusa et al. 2025), as image-caption pairs and as labelled manifests.

Layout read (as distributed)::

    ROOT/Descriptions.json           list of per-image records: "image" (file stem), "U_id" (case),
                                     "Type" (CT | MR), "Location", "Location Category",
                                     "Description": {"Plane", "Modality", "Caption", ...}
    ROOT/Case_topic.json             per-case records: "U_id", "Case": {"Findings", "History", ...}
    ROOT/images/<image>.png
    ROOT/splits/data_<split>.jsonl   one case per line: "U_id", "TAC" (CT image stems), "MRI" (MR stems)

Splits are case level. A case (or image) listed in two splits is a leak and refused, naming the
case. As a source (image-report pairs, :func:`medpix2_pairs`) a row is one image with the text of
``data.text_field``; its case is the patient, so retrieval pools a case's images. As a manifest
for frozen-encoder probes (:func:`medpix_manifest`, ``medrep prepare medpix2``) the targets
(:data:`TARGETS`) are ``modality`` (Type), ``plane`` (Description.Plane, raw values), ``region``
(Location Category, five body regions) and ``location`` (Location, finer).

Nothing is dropped silently: images of no split, images without a value for the target, and
classes with fewer than ``min_count`` training images (dropped from every split) are counted in
the report (the placeholder value "Left Blank" counts as no value) that :func:`medpix_manifest` returns.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError, RecipeError
from ..datasets.image_text import ImageTextRow, Tally, check_pairs, pairs_report
from ..synthetic import write_png
from .registry import Source, register_source

#: target name -> path of keys into a Descriptions.json record
TARGETS: dict[str, tuple[str, ...]] = {
    "modality": ("Type",),
    "plane": ("Description", "Plane"),
    "region": ("Location Category",),
    "location": ("Location",),
}


#: values MedPix uses for "no value"; counted with the missing ones
PLACEHOLDERS = frozenset({"left blank"})
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


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError("no such file (is --root a MedPix 2.0 folder?)", path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"not valid JSON ({exc})", path) from exc


def read_descriptions(root: str | Path) -> list[dict[str, Any]]:
    """The per-image records of ``ROOT/Descriptions.json`` (each needs ``image`` and ``U_id``)."""
    path = Path(root) / "Descriptions.json"
    data = _load_json(path)
    if not isinstance(data, list):
        raise DataError("expected a JSON list of image records", path)
    seen: set[str] = set()
    for i, rec in enumerate(data):
        if not isinstance(rec, dict) or not isinstance(rec.get("image"), str) or not isinstance(rec.get("U_id"), str):
            raise DataError(f"record {i} has no 'image' or 'U_id'", path)
        if rec["image"] in seen:
            raise DataError(f"image {rec['image']} is described twice", path)
        seen.add(rec["image"])
    return data


def read_splits(root: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """``(case -> split, image -> split)`` from ``ROOT/splits/data_<split>.jsonl``.

    Raises :class:`DataError` naming the case when a case or one of its images occurs in two splits.
    """
    folder = Path(root) / "splits"
    files = sorted(folder.glob("data_*.jsonl"))
    if not files:
        raise DataError("no case-level split files data_<split>.jsonl", folder)
    case_split: dict[str, str] = {}
    image_split: dict[str, str] = {}
    for file in files:
        split = file.stem[len("data_") :]
        for line_no, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"line {line_no}: not valid JSON ({exc.msg})", file) from exc
            case = rec.get("U_id") if isinstance(rec, dict) else None
            if not isinstance(case, str):
                raise DataError(f"line {line_no}: no 'U_id'", file)
            if case in case_split and case_split[case] != split:
                raise DataError(f"case {case} is in splits {case_split[case]!r} and {split!r}: a leak between splits", file)
            case_split[case] = split
            for image in list(rec.get("TAC") or []) + list(rec.get("MRI") or []):
                if image in image_split and image_split[image] != split:
                    raise DataError(f"image {image} of case {case} is in splits {image_split[image]!r} and {split!r}: a leak", file)
                image_split[image] = split
    return case_split, image_split


def _value(rec: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    value: Any = rec
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    if value is None or (isinstance(value, str) and (not value.strip() or value.strip().lower() in PLACEHOLDERS)):
        return None
    return str(value).strip()


def _text(record: Any, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        record = record.get(key) if isinstance(record, dict) else None
    if not isinstance(record, str) or not record.strip() or record.strip().lower() in NO_TEXT:
        return None
    return record.strip()


def text_fields(field: str) -> list[str]:
    """``"caption"`` -> ``["caption"]``; ``"caption+findings"`` -> both, in that order (:data:`MEDPIX_FIELDS`)."""
    names = [name.strip() for name in str(field).split("+")]
    unknown = [name for name in names if name not in MEDPIX_FIELDS]
    if unknown or not names:
        raise DataError(f"must be one of {', '.join(MEDPIX_FIELDS)} or several joined by '+', got {field!r}", "field")
    return names


def medpix2_pairs(root: str | Path, field: str = "caption", skip_bad: bool = False) -> tuple[list[ImageTextRow], dict[str, Any]]:
    """MedPix 2.0: one row per image (``study`` = image stem, ``patient`` = case ``U_id``).

    ``field`` picks the text (:data:`MEDPIX_FIELDS`): ``caption`` describes the image itself; the
    case fields (``findings``, ``history``...) are shared by the case's images. Several fields
    joined by ``+`` (``caption+findings``) give one text of those paragraphs in that order, so that
    sentence-level methods (PLACE) see the image's own caption and its case's findings; a row needs
    every field (a missing one is a bad row, counted under ``skip_bad``). Splits come from
    ``splits/data_<split>.jsonl`` (:func:`read_splits`, which refuses leaks).
    """
    names = text_fields(field)
    root = Path(root).expanduser().resolve()
    records = read_descriptions(root)
    case_split, image_split = read_splits(root)
    case_text: dict[str, dict[str, str | None]] = {}
    if any(MEDPIX_FIELDS[name][0] == "Case_topic.json" for name in names):
        file = root / "Case_topic.json"
        try:
            cases = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read case records ({exc})", file) from exc
        case_text = {c.get("U_id"): {name: _text(c, MEDPIX_FIELDS[name][1]) for name in names}
                     for c in cases if isinstance(c, dict)}
    tally, rows, unsplit = Tally(skip_bad), [], 0
    for rec in records:
        image, case = rec["image"], rec["U_id"]
        split = image_split.get(image, case_split.get(case))
        if split is None:
            unsplit += 1
            continue
        parts = {name: _text(rec, MEDPIX_FIELDS[name][1]) if MEDPIX_FIELDS[name][0] == "Descriptions.json"
                 else case_text.get(case, {}).get(name) for name in names}
        missing = [name for name, text in parts.items() if text is None]
        path = root / "images" / f"{image}.png"
        if missing:
            tally.bad(f"no {missing[0]} text", image, root / MEDPIX_FIELDS[missing[0]][0])
        elif not path.is_file():
            tally.bad("image file is missing", image, path)
        else:
            text = "\n\n".join(parts[name] for name in names)
            rows.append(ImageTextRow((str(path),), text, image, split, case, source=f"image {image}"))
    return check_pairs(rows, root), pairs_report("medpix2", root, rows, tally, unsplit)


def medpix_manifest(
    root: str | Path, target: str, min_count: int = 5, train_split: str = "train"
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Rows ``{"path", "label", "split", "case"}`` for ``target`` and a report of what was kept.

    Paths are absolute (``ROOT/images/<image>.png``; every file must exist). Classes with fewer
    than ``min_count`` images in ``train_split`` are dropped from all splits and listed in the
    report, as are images of no split and images with no value for the target.
    """
    if target not in TARGETS:
        raise DataError(f"must be one of {', '.join(TARGETS)}, got {target!r}", "--target")
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise DataError(f"must be a positive integer, got {min_count!r}", "--min-count")
    root = Path(root).expanduser().resolve()
    records = read_descriptions(root)
    case_split, image_split = read_splits(root)
    if train_split not in set(case_split.values()):
        raise DataError(f"no split {train_split!r}; splits: {', '.join(sorted(set(case_split.values())))}", root / "splits")
    rows: list[dict[str, str]] = []
    unsplit: list[str] = []
    no_label: Counter = Counter()
    for rec in records:
        split = image_split.get(rec["image"], case_split.get(rec["U_id"]))
        if split is None:
            unsplit.append(rec["image"])
            continue
        if case_split.get(rec["U_id"], split) != split:  # image listed under one split, its case under another
            raise DataError(f"image {rec['image']} of case {rec['U_id']} is in split {split!r} but its case is in "
                            f"{case_split[rec['U_id']]!r}: a leak", root / "splits")
        label = _value(rec, TARGETS[target])
        if label is None:
            no_label[split] += 1
            continue
        path = root / "images" / f"{rec['image']}.png"
        if not path.is_file():
            raise DataError(f"image of case {rec['U_id']} is missing", path)
        rows.append({"path": str(path), "label": label, "split": split, "case": rec["U_id"]})
    train_counts = Counter(r["label"] for r in rows if r["split"] == train_split)
    all_counts: dict[str, Counter] = {}
    for r in rows:
        all_counts.setdefault(r["label"], Counter())[r["split"]] += 1
    dropped = {c: dict(all_counts[c]) for c in sorted(all_counts) if train_counts[c] < min_count}
    kept = [r for r in rows if r["label"] not in dropped]
    splits = sorted({r["split"] for r in rows}, key=lambda s: (s != train_split, s))
    classes = sorted({r["label"] for r in kept})
    if len(classes) < 2:
        raise DataError(f"fewer than 2 classes of {target!r} have {min_count} training images (dropped: {dropped})", "--min-count")
    counts = {c: {s: int(all_counts[c][s]) for s in splits} for c in classes}
    report = {
        "root": str(root), "target": target, "min_count": min_count, "train_split": train_split, "splits": splits,
        "classes": classes, "counts": counts,
        "images": {s: sum(1 for r in kept if r["split"] == s) for s in splits},
        "cases": {s: len({r["case"] for r in kept if r["split"] == s}) for s in splits},
        "dropped_classes": dropped,
        "dropped_images": sum(sum(v.values()) for v in dropped.values()),
        "no_label": dict(no_label), "unsplit_images": len(unsplit),
    }
    return kept, report


def write_medpix_manifest(root: str | Path, target: str, out: str | Path, min_count: int = 5, relative: bool = False) -> dict[str, Any]:
    """Write the manifest CSV (``path,label,split,case``) for ``target`` to ``out``; return the report.

    ``relative=True`` writes paths relative to the manifest's folder (for a manifest kept beside
    the data); by default they are absolute, so the manifest can live anywhere.
    """
    rows, report = medpix_manifest(root, target, min_count)
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise DataError("the manifest is written as CSV: give a .csv path", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "split", "case"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "path": os.path.relpath(r["path"], out.parent.resolve()) if relative else r["path"]})
    report["manifest"] = str(out)
    return report


def report_table(report: dict[str, Any]) -> str:
    """Images per class and split, then what was dropped, as plain text."""
    from ...results import format_table

    rows = [{"class": c, **report["counts"][c]} for c in report["classes"]]
    rows.append({"class": "(total)", **report["images"]})
    text = format_table(rows, ["class", *report["splits"]])
    lines = [text, "cases: " + ", ".join(f"{s} {n}" for s, n in report["cases"].items())]
    if report["dropped_classes"]:
        lines.append(f"dropped (fewer than {report['min_count']} {report['train_split']} images): "
                     + "; ".join(f"{c} {dict(v)}" for c, v in report["dropped_classes"].items())
                     + f" = {report['dropped_images']} images")
    else:
        lines.append("dropped classes: none")
    lines.append(f"images without a {report['target']} value: {sum(report['no_label'].values())} {report['no_label'] or ''}".rstrip())
    lines.append(f"images in no split: {report['unsplit_images']}")
    return "\n".join(lines)


def write_example_tree(root: str | Path, n_cases: tuple[int, int] = (12, 4), images_per_case: int = 3, seed: int = 0) -> Path:
    """A MedPix-2.0-shaped tree under ``root``: ``n_cases`` train and dev cases of ``images_per_case``
    images each; CT images bright, MR dark; sizes vary from 20 to 32 px (as in the real set, so a
    batch needs ``data.size``); body regions cycle through Head, Thorax, Abdomen; planes through
    Axial, Coronal, Sagittal, except one rare plane ('Drawing', the first image of the first case)
    and one image without a plane (the second image of the second case), as the real set has."""
    root, rng = Path(root), np.random.default_rng(seed)
    (root / "splits").mkdir(parents=True, exist_ok=True)
    records, cases, split_lines = [], [], {"train": [], "dev": []}
    case_no, regions = 1000, ("Head", "Thorax", "Abdomen")
    for split, n in zip(("train", "dev"), n_cases):
        for _ in range(n):
            case_no += 1
            case, kind, region = f"MPX{case_no}", "CT" if case_no % 2 else "MR", regions[case_no % 3]
            entry = {"U_id": case, "TAC": [], "MRI": []}
            for j in range(images_per_case):
                stem = f"{case}_synpic{case_no * 10 + j}"
                h, w = int(rng.integers(20, 33)), int(rng.integers(20, 33))
                base = 170 if kind == "CT" else 60
                write_png(root / "images" / f"{stem}.png", np.clip(rng.normal(base, 25, (h, w)), 0, 255).astype(np.uint8))
                plane = ["Axial", "Coronal", "Sagittal"][j % 3]
                if split == "train" and case_no == 1001 and j == 0:
                    plane = "Drawing"
                if split == "train" and case_no == 1002 and j == 1:
                    plane = None
                records.append({"Type": kind, "U_id": case, "image": stem,
                                "Description": {"ACR Codes": "", "Age": "50", "Caption": f"A {kind} image of the {region.lower()}.",
                                                "Figure Part": None, "Modality": f"{kind} - noncontrast", "Plane": plane,
                                                "Sex": "female"},
                                "Location": "Somewhere", "Location Category": region})
                entry["TAC" if kind == "CT" else "MRI"].append(stem)
            texts = {"Title": f"Case {case_no}", "History": "50-year-old woman.", "Exam": "N/A",
                     "Findings": f"{kind} of the {region.lower()}: no abnormality.", "Case Diagnosis": "Normal study"}
            cases.append({"U_id": case, "TAC": entry["TAC"], "MRI": entry["MRI"], "Case": texts, "Topic": {}})
            split_lines[split].append({**entry, "Case": texts, "Topic": {}})
    (root / "Descriptions.json").write_text(json.dumps(records))
    (root / "Case_topic.json").write_text(json.dumps(cases))
    for split, lines in split_lines.items():
        (root / "splits" / f"data_{split}.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    return root


def medpix2_example(root: Path, spatial_dims: int = 2) -> dict[str, Any]:
    """:func:`write_example_tree` with 3 train and 1 dev case of 2 images (8 images), batched at 32 px. 2D only."""
    return {"source": "medpix2", "path": str(write_example_tree(root, (3, 1), 2)), "size": 32}


def _check(data: dict[str, Any]) -> None:
    field = data.get("text_field", "caption")
    try:
        if not isinstance(field, str):
            raise DataError(f"must be a string, got {field!r}", "field")
        text_fields(field)
    except DataError as exc:
        raise RecipeError(str(exc).removeprefix("field: "), "data.text_field") from exc


register_source(Source(
    name="medpix2", kind="image_text", summary="MedPix 2.0 CT/MR images with their captions or case texts",
    pairs=lambda path, data: medpix2_pairs(path, field=data.get("text_field") or "caption", skip_bad=bool(data.get("skip_bad"))),
    # caption (per image) | findings | history | exam | diagnosis | discussion | title (per case); join with '+'
    options={"text_field": "caption"}, check=_check, default_path="medpix2", case_by="patient", eval_split="dev",
    example=medpix2_example, supported_dims=(2,),
))
