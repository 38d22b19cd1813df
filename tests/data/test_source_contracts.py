"""The contract every registered data source keeps, checked on the tiny tree its own ``example``
writes (:class:`medrep.data.Source`): it builds through the path a user takes (load_recipe, then
build_loader, or the segmentation task), a damaged or missing file is an error naming the file,
and its own ``data.*`` keys pass the recipe checks.

Parametrized over :func:`source_names`, so a source added later is covered without a new test
file; a source registered without an ``example`` fails here, saying to add one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medrep.data import Source, build_dataset, get_source, source_names
from medrep.data.sources import read_pairs, registry
from medrep.data.sources.mixed import mixed_parts
from medrep.engine import build_loader
from medrep.errors import MedrepError, RecipeError
from medrep.recipe import load_recipe

SOURCES = source_names()
SOURCE_DIMS = [pytest.param(n, d, id=f"{n}-{d}d") for n in SOURCES for d in get_source(n).supported_dims]


def example(name: str, root: Path, spatial_dims: int = 2) -> dict[str, Any]:
    """The ``data`` keys of ``name``'s example tree, written under ``root``."""
    source = get_source(name)
    if source.example is None:
        pytest.fail(f"source {name!r} has no example: give its Source an example(root, spatial_dims=2) that writes a tiny "
                    "tree in the source's layout and returns the data keys that read it (see medrep.data.sources.registry)")
    data = source.example(root / name, spatial_dims)
    assert isinstance(data, dict) and data.get("source") == name and data.get("path"), data
    return data


#: a mixed source's parts hold 2D and 3D images: the one encoder for both, tiny
VIT2D3D = {"name": "vit2d3d", "img_size": 32, "depth": 8, "patch_size": 8, "hidden_size": 16, "mlp_dim": 32, "num_layers": 1,
           "num_heads": 2, "select_k": 2}


def recipe(data: dict[str, Any], spatial_dims: int, **extra) -> dict:
    """The recipe a user would write to pretrain on ``data`` (a text method for image-report sources)."""
    kind = get_source(data["source"]).kind
    if kind == "mixed":
        tiny = {"dino_out": 16, "dino_hidden_dim": 16, "dino_bottleneck_dim": 8, "embed_dim": 16, "proj_hidden_dim": 16}
        return load_recipe({"method": {"name": "unimedi", **tiny}, "model": {**VIT2D3D, "spatial_dims": spatial_dims},
                            "data": {**data, "batch_size": 2, **extra}})
    method = {"image_text": "convirt", "tasks": "taco"}.get(kind, "simclr")
    channels = 6 if kind == "tasks" else 1  # a task sample is [input, target], 3 channels each
    return load_recipe({"method": {"name": method}, "model": {"name": "resnet10", "spatial_dims": spatial_dims, "in_channels": channels},
                        "data": {**data, "batch_size": 2, **extra}})


def read_everything(data: dict[str, Any], spatial_dims: int) -> list[str]:
    """Read every sample of every split; what was read (file paths, or segmentation item names)."""
    source = get_source(data["source"])
    if source.kind == "segmentation":
        task = source.task({**data, "spatial_dims": spatial_dims})
        return [item.name for item in (*task.train, *task.test)]
    full = recipe(data, spatial_dims, split=None)["data"]
    if source.kind == "image":
        dataset = build_dataset(full)
        return [dataset[i]["meta"]["path"] for i in range(len(dataset))]
    if source.kind == "tasks":  # the images the samples are drawn from are read when the data set is built
        return [s.id for s in build_dataset(full).slices]
    if source.kind == "mixed":
        return [p for part in mixed_parts(full, expand=True) for p in read_everything(part[2], part[2]["spatial_dims"])]
    dataset = build_dataset(full, train=False)
    return [path for i in range(len(dataset)) for path in dataset[i]["meta"]["paths"]]


def victim(data: dict[str, Any], root: Path, which: str) -> Path:
    """The file to damage: the tree's ``largest`` (image data in most layouts, else the metadata;
    ties by name), or the ``first_read`` by a sample (the largest where what is read is not a file)."""
    if which == "first_read":
        read = [Path(r) for r in read_everything(data, get_source(data["source"]).supported_dims[0])]
        if any(p.is_file() for p in read):
            return next(p for p in read if p.is_file())
    return max((p for p in root.rglob("*") if p.is_file()), key=lambda p: (p.stat().st_size, str(p)))


def names(message: str, path: Path, root: Path) -> bool:
    """Whether ``message`` names ``path`` (absolute, resolved, or relative to the example tree or its folder)."""
    relative = [path.relative_to(base).as_posix() for base in (root, path.parent.parent)]
    return any(text in message for text in (str(path), str(path.resolve()), *relative))


@pytest.mark.parametrize("name", SOURCES)
def test_source_record_is_complete(name):
    source = get_source(name)
    assert isinstance(source.summary, str) and source.summary.strip(), f"source {name!r} has no summary"
    assert source.example is not None, f"source {name!r} has no example: add one (see medrep.data.sources.registry)"
    assert source.supported_dims and set(source.supported_dims) <= {2, 3}


@pytest.mark.parametrize("name", SOURCES)
def test_own_keys_pass_through_the_recipe(name, tmp_path):
    """Each ``data.*`` key the source declares, and each key of its example, loads unchanged."""
    source, data = get_source(name), example(name, tmp_path)
    for key, value in {**source.options, **{k: v for k, v in data.items() if k != "source"}}.items():
        loaded = load_recipe({"method": {"name": "simclr"}, "data": {key: value}})["data"]
        assert loaded[key] == value, f"data.{key}"
    if source.kind != "segmentation":
        loaded = recipe(data, source.supported_dims[0])["data"]
        assert {k: loaded[k] for k in data} == data
        for other in {2, 3} - set(source.supported_dims):  # a 2D-only source refuses a 3D recipe at load time
            with pytest.raises(RecipeError, match=f"^data.spatial_dims: source '{name}' holds"):
                recipe(data, other)


@pytest.mark.parametrize("name, spatial_dims", SOURCE_DIMS)
def test_example_builds_a_batch(name, spatial_dims, tmp_path):
    """What a user gets from the example: a batch of the right shape (or a segmentation task)."""
    torch.manual_seed(0)
    source, data = get_source(name), example(name, tmp_path, spatial_dims)
    if source.kind == "segmentation":
        task = source.task({**data, "spatial_dims": spatial_dims})
        assert task.train and task.test and task.spatial_dims == spatial_dims and len(task.class_names) == task.num_classes
        for item in (*task.train, *task.test):
            assert item.image.shape == item.mask.shape and item.image.ndim == spatial_dims, item.name
            assert np.isfinite(item.image).all() and np.issubdtype(item.mask.dtype, np.integer), item.name
            assert 0 <= item.mask.min() and item.mask.max() < task.num_classes, item.name
        return
    loader = build_loader(recipe(data, spatial_dims))
    batch = next(iter(loader))
    if source.kind == "mixed":  # one sub-batch per part, each of its own source's shape
        parts = mixed_parts(recipe(data, spatial_dims)["data"])
        assert [p["name"] for p in batch["parts"]] == [name for name, _, _ in parts]
        for part, (_, _, section) in zip(batch["parts"], parts):
            assert part["image"].ndim == 2 + section["spatial_dims"] and part["image"].shape[0] == 1 and len(part["text"]) == 1
        return
    image = batch["image"]
    assert image.dtype == torch.float32 and image.ndim == 2 + spatial_dims and image.shape[0] == 2, image.shape
    assert torch.isfinite(image).all()
    if source.kind == "image":
        assert batch["spacing"].shape == (2, spatial_dims) and (batch["spacing"] > 0).all()
        if any(label is not None for label in getattr(loader.dataset, "labels", [])):
            assert batch["label"].dtype == torch.int64 and batch["label"].shape == (2,)
        return
    if source.kind == "tasks":
        assert image.shape[1] == 6 and {"task", "family", "dataset", "failure", "strength"} <= set(batch)
        return
    assert len(batch["text"]) == 2 and all(isinstance(t, str) and t.strip() for t in batch["text"])
    rows, report = read_pairs(data)
    assert rows and isinstance(report, dict)
    for row in rows:
        assert row.split and row.report.strip() and row.images, row.study
        assert all(Path(p).is_file() for p in row.images), row.study


@pytest.mark.parametrize("which", ["largest", "first_read"])
@pytest.mark.parametrize("name", SOURCES)
def test_truncated_file_is_an_error_naming_it(name, which, tmp_path):
    data, root = example(name, tmp_path), tmp_path / name
    spatial_dims = get_source(name).supported_dims[0]
    read_everything(data, spatial_dims)  # the intact example reads
    bad = victim(data, root, which)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with pytest.raises(MedrepError) as info:
        read_everything(data, spatial_dims)
    assert names(str(info.value), bad, root), f"{bad} not named in: {info.value}"


@pytest.mark.parametrize("which", ["largest", "first_read"])
@pytest.mark.parametrize("name", SOURCES)
def test_missing_file_is_an_error_naming_it_or_not_read(name, which, tmp_path):
    """A layout that lists its files names the one missing; one that finds them (a folder scan,
    MIMIC-CXR's study folders) reads the others, and never the missing one."""
    data, root = example(name, tmp_path), tmp_path / name
    bad = victim(data, root, which)
    bad.unlink()
    try:
        read = read_everything(data, get_source(name).supported_dims[0])
    except MedrepError as exc:
        assert names(str(exc), bad, root), f"{bad} not named in: {exc}"
    else:
        assert read and not any(str(bad) in r for r in read)


def test_a_source_without_example_fails_its_contract(tmp_path, monkeypatch):
    """Registering without ``example`` works at run time; the contract test says to add one."""
    monkeypatch.setattr(registry, "_SOURCES", dict(registry._SOURCES))
    registry.register_source(Source("toy", "image", "toy scans", images=lambda data, split, **common: []))
    with pytest.raises(pytest.fail.Exception, match="source 'toy' has no example: give its Source an example"):
        example("toy", tmp_path)
