"""``iu_xray``: IU X-ray (Open-i chest X-rays with their reports) in the R2Gen layout.

One ``annotation.json``, ``{split: [{"id", "report", "image_path": [...]}]}``; a study is one
entry (a frontal and a lateral view with one report). The images are not shipped with the
annotation: ``data.image_root`` says where they are (default: the annotation's folder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import DataError, RecipeError
from ..datasets.image_text import ImageTextRow, Tally, check_pairs, pairs_report
from ..synthetic import write_example_image
from .registry import Source, register_source


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
    tally, rows = Tally(skip_bad), []
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
    return check_pairs(rows, where), pairs_report("iu_xray", image_root, rows, tally, 0)


def _check(data: dict[str, Any]) -> None:
    root = data.get("image_root")
    if root is not None and (not isinstance(root, str) or not root.strip()):
        raise RecipeError(f"must be a folder path or null, got {root!r}", "data.image_root")


def iu_xray_example(root: Path, spatial_dims: int = 2) -> dict[str, Any]:
    """``root/annotation.json`` and, as R2Gen keeps them, the images in ``root/images/<id>/{0,1}.png``
    (frontal and lateral view): 4 train, 2 val and 2 test studies. 2D only (chest X-rays)."""
    root, data = Path(root), {"train": [], "val": [], "test": []}
    for i, split in enumerate(["train"] * 4 + ["val"] * 2 + ["test"] * 2):
        study, word = f"CXR{i + 1}_IM-{1000 + i}", ("bright", "dark")[i % 2]
        for view in (0, 1):
            write_example_image(root / "images" / study / f"{view}.png", 200 if word == "bright" else 40, 2 * i + view)
        data[split].append({"id": study, "report": f"The heart size is normal. The lungs are {word}. No pleural effusion.",
                            "image_path": [f"{study}/0.png", f"{study}/1.png"], "split": split})
    (root / "annotation.json").write_text(json.dumps(data, indent=1))
    return {"source": "iu_xray", "path": str(root / "annotation.json"), "image_root": str(root / "images")}


register_source(Source(
    name="iu_xray", kind="image_text", summary="IU X-ray chest X-ray studies and reports (R2Gen annotation.json)",
    pairs=lambda path, data: iu_xray_pairs(path, data.get("image_root") or path.parent, skip_bad=bool(data.get("skip_bad"))),
    # folder the annotation's image_path entries are relative to; null: the annotation's folder
    options={"image_root": None}, check=_check, default_path="iu_xray/annotation.json",
    example=iu_xray_example, supported_dims=(2,),
))
