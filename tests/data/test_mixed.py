"""The mixed source: part shares of a batch, per-part batches of their own shapes, draws per rank,
and recipe errors that name the part's key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler, RandomSampler

from medrep.data import build_dataset
from medrep.data.datasets.mixed import MixedBatchSampler, collate_mixed, part_sizes
from medrep.data.sources.mixed import mixed_example, mixed_parts
from medrep.engine import build_loader
from medrep.errors import DataError, RecipeError
from medrep.recipe import load_recipe

VIT = {"name": "vit2d3d", "img_size": 32, "depth": 8, "patch_size": 8, "hidden_size": 16, "mlp_dim": 32, "num_layers": 1, "num_heads": 2,
       "select_k": 2}


def recipe(data: dict, model: dict | None = None, **method) -> dict:
    return load_recipe({"method": {"name": "unimedi", **method}, "model": model or VIT, "data": data})


@pytest.mark.parametrize("weights, batch, want", [
    ([1, 1], 4, [2, 2]), ([2, 1], 7, [5, 2]), ([4, 2, 1], 28, [16, 8, 4]), ([1, 1000], 3, [1, 2]), ([1, 1, 1], 3, [1, 1, 1]),
])
def test_part_sizes_follow_the_weights_and_fill_the_batch(weights, batch, want):
    assert part_sizes(weights, batch) == want


def test_a_batch_smaller_than_the_parts_is_refused():
    with pytest.raises(DataError, match="at least the number of parts") as info:
        part_sizes([1, 1, 1], 2)
    assert info.value.where == "data.batch_size"


def test_each_step_holds_every_part_in_its_own_shape(tmp_path):
    data = mixed_example(tmp_path) | {"batch_size": 6}
    data["parts"][0]["weight"] = 2
    loader = build_loader(recipe(data))
    for _, batch in zip(range(3), loader):
        flat, volumes = batch["parts"]
        assert flat["name"] == "flat" and flat["image"].shape == (4, 1, 32, 32) and len(flat["text"]) == 4
        assert volumes["name"] == "volumes" and volumes["image"].shape == (2, 1, 16, 16, 8) and len(volumes["text"]) == 2
        assert all("volume" in t for t in volumes["text"]) and not any("volume" in t for t in flat["text"])


def test_ranks_draw_their_own_items(tmp_path):
    dataset = build_dataset(recipe(mixed_example(tmp_path) | {"batch_size": 4})["data"])
    draws = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        draws.append([key for batch in MixedBatchSampler(sampler, 4, True) for key in batch])
    assert draws[0] != draws[1]
    assert {p for p, _ in draws[0]} == {0, 1}
    again = [key for batch in MixedBatchSampler(DistributedSampler(dataset, num_replicas=2, rank=0, shuffle=True, seed=0), 4, True)
             for key in batch]
    assert again == draws[0]  # seeded: a run repeats


def test_the_sampler_refuses_other_datasets():
    with pytest.raises(TypeError, match="MixedDataset"):
        MixedBatchSampler(RandomSampler(range(4)), 2, True)


def test_collate_groups_items_by_part_in_order():
    items = [{"part": 1, "x": 1}, {"part": 0, "x": 2}, {"part": 1, "x": 3}]
    out = collate_mixed(items, [lambda b: {"xs": [i["x"] for i in b]}] * 2, ["a", "b"])
    assert out == {"parts": [{"xs": [2], "name": "a"}, {"xs": [1, 3], "name": "b"}]}


def test_part_paths_resolve_under_the_mixed_path_and_expand_variables(tmp_path, monkeypatch):
    data = mixed_example(tmp_path)
    parts = mixed_parts(recipe(data)["data"], expand=True)
    assert [Path(p["path"]) for _, _, p in parts] == [tmp_path / "flat/pairs.csv", tmp_path / "volumes/pairs.csv"]
    monkeypatch.setenv("TINY_TREE", str(tmp_path))
    data = {**data, "path": None}
    data["parts"][0]["path"] = "${TINY_TREE}/flat/pairs.csv"
    assert mixed_parts(recipe(data)["data"], expand=True)[0][2]["path"] == str(tmp_path / "flat/pairs.csv")
    monkeypatch.delenv("TINY_TREE")
    with pytest.raises(RecipeError, match="unset environment variable") as info:
        build_dataset(recipe(data)["data"])
    assert info.value.where == "data.parts[0].path"


@pytest.mark.parametrize("change, where", [
    (lambda d: d.update(parts=[]), "data.parts"),
    (lambda d: d.update(parts="flat"), "data.parts"),
    (lambda d: d["parts"][1].update(weight=0), "data.parts[1].weight"),
    (lambda d: d["parts"][1].update(weight=True), "data.parts[1].weight"),
    (lambda d: d["parts"][1].update(name="flat"), "data.parts[1].name"),
    (lambda d: d["parts"][0].update(source="nope"), "data.parts[0].source"),
    (lambda d: d["parts"][0].update(source="mixed"), "data.parts[0].source"),
    (lambda d: d["parts"][0].pop("source"), "data.parts[0].source"),
    (lambda d: d["parts"][0].update(no_such_key=1), "data.parts[0].no_such_key"),
    (lambda d: d["parts"][0].update(batch_size=0), "data.parts[0].batch_size"),
    (lambda d: d["parts"][1].update(intensity="loud"), "data.parts[1].intensity"),
    (lambda d: d["parts"][0].update(source="medpix2", spatial_dims=3), "data.parts[0].spatial_dims"),
])
def test_bad_parts_name_the_part_and_key(tmp_path, change, where):
    data = mixed_example(tmp_path)
    change(data)
    with pytest.raises(RecipeError) as info:
        recipe(data)
    assert info.value.where == where, str(info.value)


def test_a_3d_part_needs_an_encoder_for_both_dimensionalities(tmp_path):
    """A 3D source given to a 2D-only recipe is refused at load, naming the part."""
    with pytest.raises(RecipeError, match="needs an encoder for both dimensionalities") as info:
        load_recipe({"method": {"name": "convirt"}, "model": {"name": "resnet10", "spatial_dims": 2}, "data": mixed_example(tmp_path)})
    assert info.value.where == "data.parts[1].spatial_dims"


def test_a_3d_source_in_a_2d_recipe_is_refused(tmp_path):
    with pytest.raises(RecipeError, match="3D images but model.spatial_dims is 2") as info:
        load_recipe({"method": {"name": "convirt"}, "model": {"name": "resnet10", "spatial_dims": 2},
                     "data": {"source": "image_text", "path": str(tmp_path / "x.csv"), "spatial_dims": 3}})
    assert info.value.where == "data.spatial_dims"


def test_skipped_items_of_every_part_are_counted_under_its_name(tmp_path):
    data = mixed_example(tmp_path)
    bad = tmp_path / "flat" / "pairs.csv"
    bad.write_text(bad.read_text() + "img/missing.png,A lost image.,train\n")
    with pytest.raises(DataError, match="missing.png"):  # a hand-written manifest: any bad row stays an error
        build_dataset(recipe(data)["data"])
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "broken.nii.gz").write_bytes(b"not a volume")
    torch.save(torch.zeros(1), folder / "ignored.pt")
    data["parts"].append({"name": "scans", "source": "folder", "path": str(folder), "spatial_dims": 3, "split": None, "skip_bad": True})
    bad.write_text("\n".join(bad.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(DataError, match="no items|no image"):  # every file of the part was bad: nothing to draw
        build_dataset(recipe(data)["data"])
