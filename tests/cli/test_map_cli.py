import csv
import json

import pytest
from helpers import make_npz

from medrep.checkpoint import export_encoder
from medrep.cli import main
from medrep.data.sources.manifest import manifest_example
from medrep.models import build_backbone


@pytest.fixture
def encoder(tmp_path):
    export_encoder(build_backbone({"name": "resnet10", "spatial_dims": 2}), tmp_path / "run" / "encoder",
                   {"method": {"name": "none"}, "data": {"intensity": "minmax", "spatial_dims": 2}})
    return tmp_path / "run"


def _rows(path):
    return list(csv.DictReader(open(path)))


def test_map_writes_png_csv_and_json(tmp_path, encoder, capsys):
    npz = make_npz(tmp_path / "tiny.npz", n=32)  # 16 test images
    out = tmp_path / "maps"
    out.mkdir()
    assert main(["evaluate", "map", "--encoder", str(encoder), "--data", str(npz), "--method", "pca", "--class-names", "dark",
                 "bright", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "silhouette_map" in printed and str(out / "map.png") in printed
    assert (out / "map.png").read_bytes()[:4] == b"\x89PNG"
    rows = _rows(out / "map.csv")
    assert len(rows) == 16 and {r["label_name"] for r in rows} == {"dark", "bright"}
    result = json.loads((out / "map.json").read_text())
    assert result["method"] == "pca" and result["points"] == 16 and result["split"] == "test"
    assert sum(c["count"] for c in result["classes"]) == 16
    assert -1 <= result["silhouette"]["map"] <= 1 and -1 <= result["silhouette"]["features"] <= 1


def test_max_points_maps_a_stratified_subsample(tmp_path, encoder):
    npz = make_npz(tmp_path / "tiny.npz", n=32)
    prefix = tmp_path / "sub" / "random"
    assert main(["evaluate", "map", "--encoder", str(encoder), "--data", str(npz), "--method", "pca", "--random-init",
                 "--max-points", "8", "--out", str(prefix)]) == 0
    rows = _rows(prefix.with_suffix(".csv"))
    index = [int(r["index"]) for r in rows]
    assert len(rows) == 8 and index == sorted(set(index)) and max(index) < 16
    assert len({r["label"] for r in rows}) == 2 and "label_name" not in rows[0]
    assert json.loads(prefix.with_suffix(".json").read_text())["random_init"] is True


@pytest.mark.slow
def test_a_random_init_map_reproduces(tmp_path, encoder):
    npz = make_npz(tmp_path / "tiny.npz", n=32)
    argv = ["evaluate", "map", "--encoder", str(encoder), "--data", str(npz), "--method", "pca", "--random-init", "--out"]
    assert main([*argv, str(tmp_path / "a")]) == 0 and main([*argv, str(tmp_path / "b")]) == 0
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()  # --seed fixes the random weights too


def test_manifest_names_classes_and_paths(tmp_path, encoder, capsys):
    data = manifest_example(tmp_path / "m")["path"]  # 6 train images, classes named bright and dark
    out = tmp_path / "m.json"
    assert main(["evaluate", "map", "--encoder", str(encoder), "--data", data, "--split", "train", "--method", "pca", "--out",
                 str(out)]) == 0
    rows = _rows(tmp_path / "m.csv")
    assert len(rows) == 6 and {r["label_name"] for r in rows} == {"bright", "dark"} and rows[0]["path"].endswith(".png")
    assert main(["evaluate", "map", "--encoder", str(encoder), "--data", data, "--split", "train", "--method", "pca",
                 "--class-names", "a", "b", "--out", str(out)]) == 2
    assert "class_names" in capsys.readouterr().err


def test_umap_with_too_many_neighbours_is_a_named_error(tmp_path, encoder, capsys):
    npz = make_npz(tmp_path / "tiny.npz", n=32)
    assert main(["evaluate", "map", "--encoder", str(encoder), "--data", str(npz), "--n-neighbors", "16",
                 "--out", str(tmp_path / "m")]) == 2
    assert "n_neighbors" in capsys.readouterr().err
