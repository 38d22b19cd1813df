"""MedPix 2.0 manifests: built from a tiny tree in the real layout (and from the real data when
$MEDREP_DATA is set); rare classes dropped and counted, leaks between splits refused."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest
import torch

from medrep.checkpoint import export_encoder
from medrep.cli import main
from medrep.data.datasets.manifest import ManifestDataset
from medrep.data.sources.medpix2 import (
    TARGETS,
    medpix_manifest,
    read_splits,
    report_table,
    write_example_tree,
    write_medpix_manifest,
)
from medrep.errors import MedrepError
from medrep.models import build_backbone

REGIONS = ("Head", "Thorax", "Abdomen")


@pytest.fixture
def medpix(tmp_path):
    return write_example_tree(tmp_path / "medpix2")


def test_manifest_modality(medpix, tmp_path):
    report = write_medpix_manifest(medpix, "modality", tmp_path / "m.csv")
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert len(rows) == 48 and {r["label"] for r in rows} == {"CT", "MR"}
    assert report["counts"] == {"CT": {"train": 18, "dev": 6}, "MR": {"train": 18, "dev": 6}}
    assert report["cases"] == {"train": 12, "dev": 4} and report["dropped_classes"] == {}
    by_case = {}
    for r in rows:
        assert by_case.setdefault(r["case"], r["split"]) == r["split"]  # no case in two splits
    ds = ManifestDataset(tmp_path / "m.csv", split="dev")
    assert ds.classes == ["CT", "MR"] and len(ds) == 12
    assert int(ds[0]["label"]) in (0, 1)


def test_rare_and_missing_labels_are_counted(medpix):
    rows, report = medpix_manifest(medpix, "plane", min_count=5)
    assert report["classes"] == ["Axial", "Coronal", "Sagittal"]
    assert report["dropped_classes"] == {"Drawing": {"train": 1}} and report["dropped_images"] == 1
    assert report["no_label"] == {"train": 1}
    assert len(rows) == 48 - 2
    text = report_table(report)
    assert "Drawing" in text and "without a plane value: 1" in text
    rows, report = medpix_manifest(medpix, "plane", min_count=1)
    assert "Drawing" in report["classes"]
    _, report = medpix_manifest(medpix, "region")
    assert report["classes"] == sorted(REGIONS)


def test_case_leak_is_refused(medpix):
    lines = (medpix / "splits" / "data_train.jsonl").read_text().splitlines()
    with open(medpix / "splits" / "data_dev.jsonl", "a") as fh:
        fh.write(lines[3] + "\n")
    leaked = json.loads(lines[3])["U_id"]
    with pytest.raises(MedrepError, match=f"case {leaked} is in splits"):
        read_splits(medpix)
    with pytest.raises(MedrepError, match=leaked):
        medpix_manifest(medpix, "modality")


def test_image_leak_is_refused(medpix):
    dev = [json.loads(x) for x in (medpix / "splits" / "data_dev.jsonl").read_text().splitlines()]
    train = json.loads((medpix / "splits" / "data_train.jsonl").read_text().splitlines()[0])
    dev[0]["TAC"] = dev[0]["TAC"] + train["TAC"] + train["MRI"]  # an image of a train case listed under dev
    (medpix / "splits" / "data_dev.jsonl").write_text("".join(json.dumps(e) + "\n" for e in dev))
    with pytest.raises(MedrepError, match="leak"):
        medpix_manifest(medpix, "modality")


def test_missing_image_and_bad_target(medpix):
    next((medpix / "images").glob("*.png")).unlink()
    with pytest.raises(MedrepError, match="missing"):
        medpix_manifest(medpix, "modality")
    with pytest.raises(MedrepError, match="--target"):
        medpix_manifest(medpix, "organ")


def test_cli_prepare_then_linear_probe(medpix, tmp_path, capsys):
    out = tmp_path / "manifest.csv"
    assert main(["prepare", "medpix2", "--root", str(medpix), "--target", "modality", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "CT" in text and "dropped classes: none" in text and (tmp_path / "manifest.json").is_file()
    torch.manual_seed(0)
    enc = build_backbone({"name": "resnet10", "spatial_dims": 2, "conv1_t_size": 3, "conv1_t_stride": 1})
    export_encoder(enc, tmp_path / "sized", {"method": {"name": "none"}, "data": {"intensity": "none", "size": 16}})
    export_encoder(enc, tmp_path / "unsized", {"method": {"name": "none"}, "data": {"intensity": "none"}})
    rc = main(["evaluate", "linear", "--encoder", str(tmp_path / "sized"), "--data", str(out), "--test-split", "dev",
               "--fractions", "1.0", "--seeds", "0", "--out", str(tmp_path / "lin.json")])
    assert rc == 0
    res = json.loads((tmp_path / "lin.json").read_text())["results"]
    assert res["fractions"]["1"]["accuracy"]["mean"] > 0.8  # CT bright, MR dark
    # an encoder without preprocess.size cannot batch MedPix's mixed sizes: a clear error, exit 2
    rc = main(["evaluate", "linear", "--encoder", str(tmp_path / "unsized"), "--data", str(out), "--test-split", "dev",
               "--fractions", "1.0", "--seeds", "0"])
    assert rc == 2 and "data.size" in capsys.readouterr().err


def test_cli_prepare_help_and_errors(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit):
        main(["prepare", "medpix2", "--help"])
    assert "--min-count" in capsys.readouterr().out
    monkeypatch.delenv("MEDREP_DATA", raising=False)
    assert main(["prepare", "medpix2", "--target", "plane", "--out", str(tmp_path / "x.csv")]) == 2
    assert "--root" in capsys.readouterr().err


def test_real_medpix2(real_data, tmp_path):
    root = real_data / "medpix2"
    cases, _ = read_splits(root)
    assert Counter(cases.values()) == {"train": 535, "dev": 67}
    for target in TARGETS:
        rows, report = medpix_manifest(root, target)
        print(f"\n[{target}]\n{report_table(report)}")
        assert len(report["classes"]) >= 2
        split_of = {}
        for r in rows:
            assert split_of.setdefault(r["case"], r["split"]) == r["split"]
    _, report = medpix_manifest(root, "modality")
    assert report["counts"] == {"CT": {"train": 878, "dev": 84}, "MR": {"train": 775, "dev": 113}}
    _, report = medpix_manifest(root, "region")
    assert len(report["classes"]) == 5 and report["images"] == {"train": 1653, "dev": 197}
