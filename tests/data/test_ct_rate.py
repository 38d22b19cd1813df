"""The CT-RATE source: rows from the layout (studies, patients, splits, text), each bad input named
or counted, leaks refused, volumes read lazily, and spacing kept through a resize."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest
import torch

from medrep.data import build_dataset
from medrep.data.datasets import image_text_dataset
from medrep.data.datasets.image_text_dataset import ImageTextDataset, collate_image_text
from medrep.data.datasets.preprocess import Preprocess
from medrep.data.sources.ct_rate import ct_rate_pairs, write_ct_rate_tree
from medrep.errors import DataError, RecipeError
from medrep.recipe import load_recipe

SHAPE, SPACING = (20, 18, 12), (0.8, 0.8, 2.5)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """train_1, train_2 and valid_1, each with scans a and b of two reconstructions; the b scans'
    impressions are CT-RATE's "Not given." (see write_ct_rate_tree)."""
    return write_ct_rate_tree(tmp_path / "ct_rate", {"train": 2, "valid": 1}, scans=2, reconstructions=2)


def reports_csv(root: Path, split: str = "train") -> Path:
    return root / "dataset" / "radiology_text_reports" / ("train_reports.csv" if split == "train" else "validation_reports.csv")


def edit_csv(path: Path, edit) -> None:
    """Rewrite a reports CSV with ``edit(records, columns)`` applied (in place)."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        columns, records = list(reader.fieldnames), list(reader)
    edit(records, columns)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)


def test_rows_are_scans_with_their_first_reconstruction(tree):
    rows, report = ct_rate_pairs(tree)
    assert [r.study for r in rows] == ["train_1_a", "train_1_b", "train_2_a", "train_2_b", "valid_1_a", "valid_1_b"]
    assert [r.patient for r in rows] == ["train_1", "train_1", "train_2", "train_2", "valid_1", "valid_1"]
    assert [r.split for r in rows] == ["train"] * 4 + ["valid"] * 2
    assert rows[0].images == (str(tree.resolve() / "dataset/train/train_1/train_1_a/train_1_a_1.nii.gz"),)
    assert rows[0].report == "The lungs are dense. No pleural effusion.\n\nConsolidation."
    assert rows[1].report == "The lungs are clear. No pleural effusion."  # "Not given." impressions: no text
    assert report["studies"] == {"train": 4, "valid": 2} and report["patients"] == {"train": 2, "valid": 1}
    assert report["reconstructions_left_out"] == 6 and report["partial_text"] == 3 and report["skipped"] == {}


def test_all_reconstructions_and_text_choices(tree):
    rows, report = ct_rate_pairs(tree, reconstructions="all")
    assert [Path(p).name for p in rows[0].images] == ["train_1_a_1.nii.gz", "train_1_a_2.nii.gz"]
    assert report["images"] == {"train": 8, "valid": 4} and report["reconstructions_left_out"] == 0
    assert ct_rate_pairs(tree, text="findings")[0][0].report == "The lungs are dense. No pleural effusion."
    rows, report = ct_rate_pairs(tree, text="impressions", skip_bad=True)
    assert [r.report for r in rows] == ["Consolidation."] * 3 and report["skipped"] == {"empty report": 3}


def _drop_row(records, columns):
    records[:] = [r for r in records if r["VolumeName"] != "train_2_a_1.nii.gz"]


def _blank_text(records, columns):
    for r in records:
        if r["VolumeName"] == "train_2_a_1.nii.gz":
            r["Findings_EN"], r["Impressions_EN"] = " ", "Not given."


@pytest.mark.parametrize("edit, reason", [(_drop_row, "no report row"), (_blank_text, "empty report")])
def test_bad_report_row_names_the_csv_and_volume_or_is_counted(tree, edit, reason):
    edit_csv(reports_csv(tree), edit)
    with pytest.raises(DataError, match=f"train_reports.csv: study train_2_a: {reason} \\(volume train_2_a_1.nii.gz"):
        ct_rate_pairs(tree)
    rows, report = ct_rate_pairs(tree, skip_bad=True)
    assert "train_2_a" not in [r.study for r in rows] and len(rows) == 5
    assert report["skipped"] == {reason: 1} and report["examples"] == {reason: ["train_2_a"]}


def test_listed_volume_missing_on_disk_names_the_file(tree):
    missing = tree.resolve() / "dataset/train/train_2/train_2_a/train_2_a_1.nii.gz"
    missing.unlink()
    with pytest.raises(DataError, match="volume file is missing") as info:
        ct_rate_pairs(tree)
    assert str(info.value).startswith(f"{missing}: study train_2_a") and "line 6 of train_reports.csv" in str(info.value)
    rows, report = ct_rate_pairs(tree, skip_bad=True)
    assert report["skipped"] == {"volume file is missing": 1} and len(rows) == 5
    # with every reconstruction kept, the scan's other volume does not stand in for the missing one
    assert ct_rate_pairs(tree, reconstructions="all", skip_bad=True)[1]["skipped"] == {"volume file is missing": 1}


@pytest.mark.parametrize("skip_bad", [False, True])
def test_csv_without_a_needed_column_is_an_error_even_with_skip_bad(tree, skip_bad):
    edit_csv(reports_csv(tree, "valid"), lambda records, columns: columns.remove("Impressions_EN"))
    with pytest.raises(DataError, match="validation_reports.csv: needs column\\(s\\) Impressions_EN"):
        ct_rate_pairs(tree, skip_bad=skip_bad)
    assert len(ct_rate_pairs(tree, text="findings")[0]) == 6  # a column the chosen text does not use may be absent


def test_other_layout_errors(tree, tmp_path):
    with pytest.raises(DataError, match="no dataset/train or dataset/valid folder"):
        ct_rate_pairs(tmp_path)
    (tree / "dataset/valid/valid_1/valid_1_a/notes.txt").write_text("not a volume")
    assert ct_rate_pairs(tree)[1]["not_in_layout"] == 1
    edit_csv(reports_csv(tree), lambda records, columns: records.append(dict(records[0])))
    with pytest.raises(DataError, match="line 10: volume train_1_a_1.nii.gz is listed twice \\(also line 2\\)"):
        ct_rate_pairs(tree)
    reports_csv(tree).unlink()
    with pytest.raises(DataError, match="train_reports.csv: no reports file"):
        ct_rate_pairs(tree)


def test_patient_in_both_splits_is_refused(tree):
    """train_2's scan b filed under valid/ (with its report row) leaks the patient into validation."""
    (tree / "dataset/valid/train_2").mkdir()
    shutil.move(tree / "dataset/train/train_2/train_2_b", tree / "dataset/valid/train_2/train_2_b")
    moved = []

    def take(records, columns):
        moved.extend(r for r in records if r["VolumeName"].startswith("train_2_b"))
        records[:] = [r for r in records if r not in moved]

    edit_csv(reports_csv(tree), take)
    edit_csv(reports_csv(tree, "valid"), lambda records, columns: records.extend(moved))
    with pytest.raises(DataError, match="patient 'train_2' is in splits 'train' .* and 'valid': a leak between splits"):
        ct_rate_pairs(tree)


def test_rows_are_built_without_opening_a_volume_and_read_lazily(tree, monkeypatch):
    broken = tree.resolve() / "dataset/train/train_1/train_1_a/train_1_a_1.nii.gz"
    broken.write_bytes(broken.read_bytes()[:100])  # truncated: only reading it can tell
    rows, _ = ct_rate_pairs(tree)
    assert all(isinstance(p, str) for r in rows for p in r.images)
    reads, read = [], image_text_dataset.read_image
    monkeypatch.setattr(image_text_dataset, "read_image", lambda path, dims: reads.append(path) or read(path, dims))
    dataset = ImageTextDataset(rows, Preprocess(), split="train", spatial_dims=3)
    assert reads == []
    assert dataset[1]["study"] == "train_1_b" and reads == [rows[1].images[0]]
    with pytest.raises(DataError, match=f"^{re.escape(str(broken))}: cannot read NIfTI file"):
        dataset[0]


@pytest.mark.parametrize("train", [True, False])
def test_resize_keeps_the_physical_extent(tree, train):
    extent = torch.tensor(SHAPE) * torch.tensor(SPACING)
    rows, _ = ct_rate_pairs(tree, reconstructions="all")
    dataset = ImageTextDataset(rows, Preprocess(size=[16, 16, 8]), split="train", spatial_dims=3, train=train)
    batch = collate_image_text([dataset[0], dataset[1]])
    images = batch["image" if train else "images"]
    assert images.shape[1:] == (1, 16, 16, 8) and batch["spacing"].shape == (len(images), 3)
    assert torch.allclose(batch["spacing"] * torch.tensor([16, 16, 8]), extent.expand(len(images), 3))
    native = ImageTextDataset(rows, Preprocess(), split="train", spatial_dims=3)[0]
    assert native["image"].shape[1:] == SHAPE and torch.allclose(native["spacing"], torch.tensor(SPACING))


def test_recipe_path_and_option_checks(tree):
    data = load_recipe({"method": {"name": "convirt"}, "model": {"name": "resnet10", "spatial_dims": 3},
                        "data": {"source": "ct_rate", "path": str(tree), "size": 16, "split": "valid"}})["data"]
    assert data["ct_rate_text"] == "findings+impressions" and data["ct_rate_reconstructions"] == "first"
    dataset = build_dataset(data)
    assert len(dataset) == 2 and dataset.reader_report["reconstructions_left_out"] == 6
    item = dataset[0]
    assert item["image"].shape == (1, 16, 16, 16) and torch.allclose(item["spacing"] * 16, torch.tensor(SHAPE) * torch.tensor(SPACING))
    for key, value in (("ct_rate_text", "findings+history"), ("ct_rate_reconstructions", "last"), ("ct_rate_text", ["findings"])):
        with pytest.raises(RecipeError, match=f"^data.{key}: must be one of"):
            load_recipe({"method": {"name": "convirt"}, "data": {key: value}})
