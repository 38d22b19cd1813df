"""``colin27-regions``: Colin27 crops with text generated from their AAL regions. On a small
synthetic T1 + atlas whose regions change along the axial axis: crops on the requested grid,
label crops aligned with the atlas in world space, a manifest the generic ``image_text`` source
reads, text naming exactly the regions above the threshold, disjoint splits, skipped crops
counted, bad input named; and :func:`region_slices` on a hand-built label array."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medrep.cli import main
from medrep.data import build_dataset
from medrep.data.io.atlas import read_label_names, region_ids, region_phrase, region_slices
from medrep.data.sources.colin27_lobes import FILES
from medrep.data.sources.colin27_regions import TEMPLATES, describe, prepare_colin27_regions, read_region_columns
from medrep.data.synthetic import write_nifti
from medrep.errors import MedrepError

NAMES = {1: "Frontal_Sup_L", 2: "Frontal_Sup_R", 3: "Temporal_Mid_L", 4: "Temporal_Mid_R", 5: "Cerebelum_6_L",
         6: "Cerebelum_6_R", 7: "Vermis_4_5", 8: "Thalamus_L"}
SPACING = (2.0, 1.6, 2.4)  # anisotropic, and no new voxel centre half-way between two old ones (nearest has no ties)
CROP = (6, 6, 5)
THRESHOLD = 0.05


def write_volumes(root: Path, names: dict[int, str] = NAMES) -> Path:
    """T1 + atlas on a 1 mm 24x20x30 RAS grid with x = 0 mid axis 0: cerebellum at the bottom,
    temporal lobes above it (posterior), frontal lobes on top (anterior), left for x < 0, a thin
    vermis and a tiny thalamus; background between them, so some crop centres fall on it."""
    atlas = np.zeros((24, 20, 30), np.int16)
    atlas[2:12, 10:18, 18:28], atlas[12:22, 10:18, 18:28] = 1, 2
    atlas[2:12, 2:10, 10:18], atlas[12:22, 2:10, 10:18] = 3, 4
    atlas[2:11, 6:14, 2:10], atlas[13:22, 6:14, 2:10], atlas[11:13, 6:14, 2:10] = 5, 6, 7
    atlas[9:11, 13:15, 12:14] = 8
    t1 = np.where(atlas > 0, 50 + 10 * atlas, 5) + np.random.default_rng(0).normal(0, 2, atlas.shape)
    origin = (-11.5, -10.0, -15.0)
    write_nifti(root / FILES[0], t1.astype(np.float32), (1.0, 1.0, 1.0), origin)
    write_nifti(root / FILES[1], atlas, (1.0, 1.0, 1.0), origin)
    (root / FILES[2]).write_text("".join(f"{i} {n} {2000 + i}\n" for i, n in names.items()))
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path, dict]:
    volumes = write_volumes(tmp_path_factory.mktemp("volumes"))
    out = tmp_path_factory.mktemp("prepared") / "set"
    summary = prepare_colin27_regions(out, volumes, crop=CROP, spacing=SPACING, stride=2, threshold=THRESHOLD, seed=3)
    return volumes, out, summary


def rows_of(out: Path) -> list[dict[str, str]]:
    with (out / "pairs.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_crops_are_on_the_requested_grid_and_labels_match_the_atlas(prepared):
    volumes, out, _ = prepared
    atlas = nib.load(volumes / FILES[1])
    source = np.asarray(atlas.dataobj)
    for row in rows_of(out):
        image, labels = nib.load(out / row["images"]), nib.load(out / row["labels"])
        assert image.shape == labels.shape == CROP
        assert np.allclose(image.header.get_zooms(), SPACING) and np.allclose(image.affine, labels.affine)
        assert np.allclose(np.diag(image.affine)[:3], SPACING)  # RAS: positive axes, the last one axial
        pixels = np.asarray(image.dataobj)
        assert pixels.dtype == np.float32 and np.isfinite(pixels).all() and 0 <= pixels.min() and pixels.max() <= 1
        # every label voxel is the atlas voxel nearest to it in world space
        index = np.stack(np.meshgrid(*map(np.arange, CROP), indexing="ij"), -1).reshape(-1, 3)
        world = index @ labels.affine[:3, :3].T + labels.affine[:3, 3]
        nearest = np.rint((world - atlas.affine[:3, 3]) / np.diag(atlas.affine)[:3]).astype(int)
        assert (source[tuple(nearest.T)] == np.asarray(labels.dataobj).reshape(-1)).all(), row["study"]


def test_text_names_exactly_the_regions_above_the_threshold(prepared):
    _, out, summary = prepared
    names = read_label_names(out / "label_names.txt")
    ids = region_ids(names)
    rows = rows_of(out)
    for row in rows:
        labels = np.asarray(nib.load(out / row["labels"]).dataobj)
        fraction = {r: np.isin(labels, v).mean() for r, v in ids.items()}
        expected = sorted((r for r, f in fraction.items() if f > THRESHOLD), key=lambda r: (-fraction[r], r))
        assert row["regions"].split(";") == expected
        for region in ids:
            assert (region_phrase(region) in row["report"]) == (region in expected), (region, row["report"])
    assert {"subcortical_L"} <= set(summary["never_named"])  # the tiny thalamus never reaches 5 %
    assert len({row["report"].split(" ")[0] for row in rows}) > 1  # several wordings, drawn with the seed
    assert summary["text"].startswith("generated from the AAL atlas labels")


def test_manifest_reads_through_image_text_and_the_registered_source(prepared):
    _, out, _ = prepared
    rows = rows_of(out)
    assert set(rows[0]) == {"images", "report", "split", "study", "labels", "regions"}
    for data in ({"source": "image_text", "path": str(out / "pairs.csv")}, {"source": "colin27-regions", "path": str(out)}):
        dataset = build_dataset({**data, "spatial_dims": 3, "intensity": "none"}, split="test")
        item = dataset[0]
        assert tuple(item["image"].shape) == (1, *CROP) and item["text"].strip()
        assert len(dataset) == sum(r["split"] == "test" for r in rows)
    columns = read_region_columns(out)
    assert columns[item["study"]].labels.is_file() and columns[item["study"]].regions


def test_splits_share_no_voxel_and_skips_are_counted(prepared):
    _, out, summary = prepared
    boxes = {"train": [], "test": []}
    for row in rows_of(out):
        affine = nib.load(out / row["labels"]).affine
        boxes[row["split"]].append(np.rint((affine[:3, 3] - prepared_grid_origin(summary)) / SPACING).astype(int))
    assert set(boxes) == {"train", "test"} and all(boxes.values())
    for a in boxes["train"]:
        for b in boxes["test"]:
            assert (np.abs(a - b) >= CROP).any(), (a, b)  # boxes overlap only if they overlap on every axis
    assert summary["crops"] == {s: len(v) for s, v in boxes.items()}
    assert summary["skipped"]["background centre"] > 0
    assert summary["grid_centres"] == sum(summary["crops"].values()) + sum(summary["skipped"].values())


def prepared_grid_origin(summary: dict) -> np.ndarray:
    return np.asarray(summary["grid_affine"])[:3, 3]


def test_crops_naming_no_region_are_skipped_and_counted(prepared, tmp_path):
    volumes, out, _ = prepared
    largest = [np.bincount(np.asarray(nib.load(out / r["labels"]).dataobj).ravel())[1:].max() / np.prod(CROP) for r in rows_of(out)]
    threshold = float(np.median(largest))  # a threshold half of the crops' largest regions do not reach
    summary = prepare_colin27_regions(tmp_path / "high", volumes, crop=CROP, spacing=SPACING, stride=2, threshold=threshold)
    assert summary["skipped"]["no region above the threshold"] >= len(largest) // 2 > 0
    assert summary["grid_centres"] == sum(summary["crops"].values()) + sum(summary["skipped"].values())
    assert json.loads((tmp_path / "high" / "summary.json").read_text())["skipped"] == summary["skipped"]


def test_describe_and_region_slices():
    assert describe(["frontal_L", "limbic_L"]) == ("T1-weighted MR crop of the brain. It contains the left frontal lobe and the "
                                                    "left limbic region. The largest region is the left frontal lobe.")
    assert describe(["cerebellum"], 1) == TEMPLATES[1][1].format(largest="the midline cerebellum")
    labels = np.zeros((3, 3, 5), np.int64)
    labels[0, 0, 0] = 1  # Frontal_Sup_L: one voxel in slice 0
    labels[:, :, 2] = 2  # Frontal_Sup_R fills slice 2
    labels[0, :2, 3] = 7  # vermis, two voxels in slice 3
    assert region_slices(labels, "frontal_L", NAMES).tolist() == [True, False, False, False, False]
    assert region_slices(labels, "frontal_L", NAMES, min_voxels=2).tolist() == [False] * 5
    assert region_slices(labels, "frontal_R", NAMES, min_voxels=9).tolist() == [False, False, True, False, False]
    assert region_slices(labels, "cerebellum", NAMES, min_voxels=2).tolist() == [False, False, False, True, False]
    with pytest.raises(MedrepError, match="unknown region 'frontal'.*frontal_L"):
        region_slices(labels, "frontal", NAMES)
    with pytest.raises(MedrepError, match="min_voxels"):
        region_slices(labels, "frontal_L", NAMES, min_voxels=0)


def test_bad_input_names_the_file_or_option(tmp_path, capsys):
    volumes = write_volumes(tmp_path / "v")
    run = {"volumes": volumes, "crop": CROP, "spacing": SPACING, "stride": 2}
    with pytest.raises(MedrepError, match=r"spacing: must be 3 positive numbers"):
        prepare_colin27_regions(tmp_path / "a", **{**run, "spacing": (2.0, 0.0, 2.0)})
    with pytest.raises(MedrepError, match=r"^--crop: crop \[6, 6, 99\] is larger than the volume"):
        prepare_colin27_regions(tmp_path / "a", **{**run, "crop": (6, 6, 99)})
    (volumes / FILES[2]).write_text("".join(f"{i} {n} 0\n" for i, n in {**NAMES, 8: "Brainstem_L"}.items()))
    with pytest.raises(MedrepError, match=f"^{volumes / FILES[2]}: .*Brainstem"):
        prepare_colin27_regions(tmp_path / "a", **run)
    (volumes / FILES[1]).unlink()
    with pytest.raises(MedrepError, match=f"^{volumes / FILES[1]}: .*missing"):
        prepare_colin27_regions(tmp_path / "a", **run)
    assert not (tmp_path / "a").exists()  # checked before anything is written
    argv = ["prepare", "colin27-regions", "--volumes", str(volumes), "--out", str(tmp_path / "b")]
    assert main(argv) == 2 and str(volumes / FILES[1]) in capsys.readouterr().err
    assert main([*argv, "--spacing", "2", "-1", "2"]) == 2 and "--spacing" in capsys.readouterr().err


def test_cli_writes_a_set_and_refuses_to_overwrite_it(tmp_path, capsys):
    volumes = write_volumes(tmp_path / "v")
    argv = ["prepare", "colin27-regions", "--volumes", str(volumes), "--out", str(tmp_path / "set"), "--crop", *map(str, CROP),
            "--spacing", *map(str, SPACING), "--stride", "2", "--seed", "1"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "generated from the AAL atlas labels" in text and "crops: train" in text
    assert (tmp_path / "set" / "pairs.csv").is_file() and (tmp_path / "set" / "summary.json").is_file()
    assert main(argv) == 2 and "already holds a prepared set" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prepare", "colin27-regions", "--help"])
    assert "not written by a radiologist" in " ".join(capsys.readouterr().out.split())


def test_real_colin27_regions(real_data, tmp_path):
    volumes = real_data.need("volumes/colin27_aal.nii.gz").parent
    summary = prepare_colin27_regions(tmp_path / "real", volumes, stride=8)
    print(json.dumps({k: summary[k] for k in ("crops", "skipped", "grid_centres", "regions", "seconds")}, indent=1))
    assert summary["grid_shape"] == [91, 109, 91] and summary["split"]["n_slabs"] == 2
    assert all(10 <= n <= 40 for n in summary["crops"].values())
    assert summary["grid_centres"] == sum(summary["crops"].values()) + sum(summary["skipped"].values())
    assert {"frontal_L", "frontal_R", "cerebellum_L", "parietal_R"} <= set(summary["regions"])
    rows = rows_of(tmp_path / "real")
    assert all(r["report"].strip() and r["regions"] for r in rows)
