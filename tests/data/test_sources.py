"""The data-source registry: one record per source, asked by the recipe checks, build_dataset, the
engine's loader and the CLI; the data package's import boundaries; a MIMIC-CXR run evaluated on its
own data."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import medrep.data
from medrep.data import build_dataset, collate, get_source, register_source, source_names
from medrep.data.datasets.files import FolderDataset
from medrep.data.datasets.image_text_dataset import ImageTextDataset, collate_image_text
from medrep.data.sources import Source, registry
from medrep.errors import DataError, MedrepError, RecipeError
from medrep.recipe import dump_recipe, load_recipe

DATA = Path(medrep.data.__file__).parent


def test_importing_data_loads_neither_recipe_nor_evaluate_nor_lightning():
    code = ("import sys, medrep.data; bad = [m for m in ('medrep.recipe', 'medrep.evaluate', 'lightning') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _imported(path: Path) -> list[str]:
    """Absolute names of every module ``path`` imports, lazy imports inside functions included."""
    package = ["medrep", *path.relative_to(DATA.parent).parent.parts]  # medrep.data[.io|.datasets|.sources]
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            names.append(".".join([*base, *([node.module] if node.module else [])]))
    return names


def test_no_data_module_imports_recipe_or_evaluate():
    for path in DATA.rglob("*.py"):
        bad = [n for n in _imported(path) if n.startswith(("medrep.recipe", "medrep.evaluate", "lightning"))]
        assert not bad, f"{path} imports {bad}"
    assert "medrep.data.io.atlas" in _imported(DATA / "sources" / "colin27_lobes.py")


def test_every_source_is_registered_once_with_its_kind():
    assert set(source_names("image")) == {"medmnist", "folder", "manifest", "slices"}
    assert set(source_names("image_text")) == {"image_text", "medpix2", "iu_xray", "mimic_cxr", "colin27-regions", "ct_rate"}
    assert set(source_names("segmentation")) == {"colin27-lobes"}
    assert set(source_names("tasks")) == {"tasks"} and get_source("tasks").collate is collate
    assert get_source("medmnist").collate is collate and get_source("mimic_cxr").collate is collate_image_text
    assert get_source("colin27-lobes").collate is None
    assert get_source("medpix2").case_by == "patient" and get_source("medpix2").eval_split == "dev"
    assert get_source("iu_xray").options == {"image_root": None} and get_source("medpix2").default_path == "medpix2"
    with pytest.raises(DataError, match="^--source: must be one of folder, manifest, medmnist, slices, got 'mimic_cxr'"):
        get_source("mimic_cxr", "image", "--source")
    with pytest.raises(MedrepError, match="already registered"):
        register_source(get_source("medmnist"))
    with pytest.raises(MedrepError, match="gives images and no other builder"):
        Source("x", "image", "x", pairs=lambda path, data: ([], {}))
    with pytest.raises(MedrepError, match="supported_dims must be a non-empty tuple of 2 and/or 3"):
        Source("x", "image", "x", images=lambda data, split, **common: None, supported_dims=(4,))
    assert get_source("medpix2").supported_dims == (2,) and get_source("folder").supported_dims == (2, 3)


def test_the_recipe_and_the_engine_ask_the_registry():
    recipe = load_recipe({"method": {"name": "simclr"}})
    assert recipe["data"]["text_field"] == "caption" and recipe["data"]["class_folders"] is False
    for source in source_names(("image", "image_text")):  # in a model of the dimensionality the source holds
        dims = get_source(source).supported_dims[0]
        load_recipe({"method": {"name": "simclr"}, "model": {"name": "resnet18", "spatial_dims": dims}, "data": {"source": source}})
    with pytest.raises(RecipeError, match="^data.source: must be one of .*mimic_cxr, .*tasks, mixed, got 'colin27-lobes'"):
        load_recipe({"method": {"name": "simclr"}, "data": {"source": "colin27-lobes"}})


def _png(path: Path, value: int, size=(8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, np.uint8)).save(path)
    return path


def test_adding_a_source_is_one_register_call(tmp_path, monkeypatch):
    """A new image source with its own data key: the recipe gets the key and its check, build_dataset
    and the loader's collate follow the record."""
    monkeypatch.setattr(registry, "_SOURCES", dict(registry._SOURCES))  # forget the test source afterwards
    for i in range(3):
        _png(tmp_path / "scans" / f"{i}.png", 40 * i)

    def check(data):
        if data.get("scan_dir", "scans") not in ("scans", "other"):
            raise RecipeError(f"must be scans or other, got {data['scan_dir']!r}", "data.scan_dir")

    register_source(Source(
        name="toy", kind="image", summary="toy scans",
        images=lambda data, split, **common: FolderDataset(Path(data["path"]) / data["scan_dir"], **common),
        options={"scan_dir": "scans"}, check=check,
    ))
    recipe = load_recipe({"method": {"name": "simclr"}, "data": {"source": "toy", "path": str(tmp_path), "batch_size": 2}})
    assert recipe["data"]["scan_dir"] == "scans" and "toy" in source_names("image")
    dataset = build_dataset(recipe["data"])
    assert len(dataset) == 3 and get_source("toy").collate([dataset[0], dataset[1]])["image"].shape == (2, 1, 8, 8)
    with pytest.raises(RecipeError, match="^data.scan_dir: must be scans or other"):
        load_recipe({"method": {"name": "simclr"}, "data": {"source": "toy", "scan_dir": "x"}})
    with pytest.raises(MedrepError, match="data.scan_dir already has the default"):
        register_source(Source("toy2", "image", "x", images=lambda data, split, **common: None, options={"scan_dir": "other"}))


def _mimic_run(tmp_path: Path) -> tuple[Path, Path]:
    """A MIMIC-CXR tree (3 train and 2 test studies, one patient each) and a run folder whose recipe reads it."""
    root = tmp_path / "mimic"
    lines = ["dicom_id,study_id,subject_id,split"]
    for i, (split, word) in enumerate([("train", "alpha"), ("train", "beta"), ("train", "alpha"), ("test", "alpha"), ("test", "beta")]):
        study = root / "files" / "p10" / f"p1000000{i}" / f"s5000000{i}"
        _png(study / "view.png", 200 if word == "alpha" else 20)
        study.with_suffix(".txt").write_text(f"FINDINGS: {word} finding.\n\nIMPRESSION: none.\n")
        lines.append(f"d{i},5000000{i},1000000{i},{split}")
    (root / "mimic-cxr-2.0.0-split.csv").write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    run.mkdir()
    recipe = load_recipe({"method": {"name": "convirt"}, "model": {"name": "resnet10"},
                          "data": {"source": "mimic_cxr", "path": str(root), "intensity": "none"}})
    dump_recipe(recipe, run / "recipe.yaml")
    return root, run


class _Brightness(torch.nn.Module):
    """Image: [brightness, darkness]; text: [alpha, beta] word counts. Bright images match alpha."""

    name = "fake"

    def encode_image(self, images):
        bright = (images.mean((1, 2, 3)) > 100).float()
        return F.normalize(torch.stack([bright, 1 - bright], 1) + 1e-3, dim=1)

    def encode_text(self, texts):
        return F.normalize(torch.tensor([[t.count("alpha") + 1e-3, t.count("beta") + 1e-3] for t in texts]), dim=1)


def test_mimic_cxr_builds_an_image_text_dataset(tmp_path):
    root, run = _mimic_run(tmp_path)
    data = load_recipe(run / "recipe.yaml")["data"]
    dataset = build_dataset(data, split="test", train=False)
    assert isinstance(dataset, ImageTextDataset) and len(dataset) == 2 and dataset.reader_report["dataset"] == "mimic_cxr"


def test_retrieval_on_a_mimic_run_reads_its_own_data(tmp_path, monkeypatch, capsys):
    """Without --data, a mimic_cxr run is scored on the run's MIMIC studies (test split), not refused."""
    from medrep import checkpoint
    from medrep.cli import main

    _, run = _mimic_run(tmp_path)
    monkeypatch.setattr(checkpoint, "load_method", lambda run_dir: _Brightness())
    out = tmp_path / "r.json"
    assert main(["evaluate", "retrieval", "--run", str(run), "--ks", "1", "--out", str(out)]) == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["data"]["dataset"] == "mimic_cxr" and result["split"] == "test" and result["n_rows"] == 2
    assert result["image"]["image_to_text"]["recall@1"] == 1.0
    assert "mimic_cxr test: 2 studies" in capsys.readouterr().out
