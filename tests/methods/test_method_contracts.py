"""Contracts every registered method and every bundled recipe keep, generated from the registries.

Nothing here names a method or a recipe: the methods are :func:`medrep.methods.available_methods`,
the recipes :func:`medrep.recipe.bundled_recipes` grouped by the method each names, so a new method
file with its recipe is covered without a new test. A step's batch comes from the recipe's ``data``
section through the real pipeline (a tiny tree written for the kind of its source by
``helpers.tiny_tree_for``, then the engine's loader), so these tests check recipe -> data -> method.

Contracts: every recipe loads, validates and survives a dump/load round trip (what ``--dry-run``
prints and a run folder keeps); every method has a recipe ("one file, one recipe"); every recipe
builds its method, which takes one step on a tiny batch of the recipe's data with a finite scalar
``loss``, a finite gradient on every trainable parameter and a working ``on_train_batch_end``; every
method takes such a step on a tiny model chosen from its capabilities in 2D and 3D, as far as its
``supported_dims`` allow (and refuses the others); every method refuses an unknown option and wrong
values of its options at load and at build, naming ``method.<key>``; a method that needs text
refuses an image-only ``data.source``.
"""

from __future__ import annotations

import collections.abc
import copy
import json
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pytest
import torch
from helpers import tiny_tree_for

from medrep.data.sources import get_source
from medrep.data.sources.mixed import mixed_parts
from medrep.engine import build_loader, pretrain
from medrep.errors import RecipeError
from medrep.methods import available_methods, build_method, get_method
from medrep.options import MinMax, Range, options_of
from medrep.recipe import bundled_recipes, dump_recipe, find_recipe, load_recipe, read_yaml

torch.set_num_threads(1)  # tiny tensors: a second thread costs more than it gives, far more on a busy machine
METHODS = available_methods()
RECIPES = bundled_recipes()


def _raw(recipe: str, section: str, key: str, default: Any = None) -> Any:
    """``section.key`` of a bundled recipe as written, unvalidated: a broken recipe must fail its own
    tests, not the collection of every test."""
    raw = read_yaml(find_recipe(recipe).read_text())
    return ((raw if isinstance(raw, dict) else {}).get(section) or {}).get(key, default)


BY_METHOD = {method: [r for r in RECIPES if _raw(r, "method", "name") == method] for method in METHODS}
#: each method's first recipe: the source of its options for the 3D step and the option checks
FIRST = {method: recipes[0] for method, recipes in BY_METHOD.items() if recipes}
TEXT_METHODS = [m for m in METHODS if get_method(m).needs_text]

# What a test may shrink, for CPU time, without changing the method (nothing else is touched):
BATCH = 4  # data.batch_size: images (or studies) per step; enough for BatchNorm and in-batch negatives
CROP_BATCH, CROP_K = 1, 4  # with data.crops: images per step and crops per image (ISImed needs >= 2 of one image)
SIZE = {2: 64, 3: 32}  # data.size and data.crops.size are capped at this per axis (multiples of 16: the U-Net pools 4x)
NATIVE = {2: 32, 3: 16}  # side of the written images when the recipe neither resizes nor crops; of the tiny models' inputs


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    np.random.seed(0)


# ---------------------------------------------------------------- recipes


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_loads_validates_and_round_trips(name, tmp_path):
    recipe = load_recipe(name)
    assert recipe["method"]["name"] in METHODS, f"recipe {name} names an unregistered method"
    dump_recipe(recipe, tmp_path / "recipe.yaml")  # what `pretrain` writes into a run folder
    assert load_recipe(tmp_path / "recipe.yaml") == recipe


@pytest.mark.parametrize("method", METHODS)
def test_every_method_has_a_bundled_recipe(method):
    assert BY_METHOD[method], (f"method {method!r} has no bundled recipe: add src/medrep/configs/{method}_<data>.yaml "
                               "(one file, one recipe)")


# ---------------------------------------------------------------- one step on the recipe's own data


def _small(recipe: dict, root: Path, spatial_dims: int) -> dict:
    """``recipe`` pointed at a tiny tree of its own source kind, with only the data shrunk (see BATCH, SIZE);
    a mixed source gets a tiny tree per part, each shrunk as a data section of its own."""
    recipe = copy.deepcopy(recipe)
    if get_source(recipe["data"]["source"]).kind == "mixed":
        recipe["data"].update(batch_size=min(recipe["data"]["batch_size"], BATCH), num_workers=0)
        parts = []
        for i, (name, weight, section) in enumerate(mixed_parts(recipe["data"])):
            section["batch_size"] = recipe["data"]["batch_size"]  # items its tiny tree holds
            part = _small_data({**recipe, "data": section}, root / f"part{i}", section["spatial_dims"])
            parts.append({k: v for k, v in part.items() if k != "batch_size"} | {"name": name, "weight": weight})
        recipe["data"]["parts"] = parts
        return load_recipe(recipe)
    recipe["data"] = _small_data(recipe, root, spatial_dims)
    return load_recipe(recipe)


def _small_data(recipe: dict, root: Path, spatial_dims: int) -> dict:
    """The shrunk ``data`` section of :func:`_small`, pointed at its tiny tree."""
    recipe = copy.deepcopy(recipe)
    data, crops = recipe["data"], recipe["data"]["crops"]
    data["num_workers"] = 0  # in-process loading; the batch is the same
    if crops is not None:
        data["batch_size"] = min(data["batch_size"], CROP_BATCH)
        crops["k"] = min(crops["k"], CROP_K)
        crops["size"] = [min(s, SIZE[spatial_dims]) for s in crops["size"]] if isinstance(crops["size"], list) \
            else min(crops["size"], SIZE[spatial_dims])
        crops["cache_dir"] = str(root / "cache")  # an mmap cache stays in the test's folder
        # the image must hold a crop: its voxels, or crop_mm at the tree's 1 mm spacing
        extents = [*np.atleast_1d(crops["size"]), *np.atleast_1d(crops["crop_mm"] or 0)]
        side = int(np.ceil(max(extents))) + 8
    else:
        data["batch_size"] = min(data["batch_size"], BATCH)
        side = NATIVE[spatial_dims]
        if data["size"] is not None:
            sizes = [data["size"]] * spatial_dims if isinstance(data["size"], int) else data["size"]
            data["size"] = [min(s, SIZE[spatial_dims]) for s in sizes]
        elif recipe["model"].get("img_size") is not None:  # a ViT takes images of exactly its img_size
            img_size = recipe["model"]["img_size"]
            side = img_size if isinstance(img_size, int) else img_size[0]
    data.update(tiny_tree_for(recipe, root / "data", spatial_dims, side))
    return data


def _batch(recipe: dict) -> dict:
    return next(iter(build_loader(recipe)))


def _check_step(method, batch: dict) -> None:
    """One training step: a finite scalar loss, a finite gradient on every trainable parameter, the hook runs."""
    method.train()
    out = method.training_step(batch)
    assert isinstance(out, dict) and "loss" in out, f"training_step returned {type(out).__name__} without 'loss'"
    loss = out["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss), f"loss {loss}"
    assert all(torch.isfinite(v).all() for v in out.values() if isinstance(v, torch.Tensor)), out
    loss.backward()
    trainable = {n: p for n, p in method.named_parameters() if p.requires_grad}
    assert trainable
    no_grad = [n for n, p in trainable.items() if p.grad is None]
    assert not no_grad, f"trainable parameters without a gradient (DDP needs none): {no_grad}"
    bad = [n for n, p in trainable.items() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad}"
    method.on_train_batch_end(1, 10)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_builds_its_method(name):
    recipe = load_recipe(name)
    method = build_method(recipe)
    assert method.name == recipe["method"]["name"] and method.encoder.spatial_dims == recipe["model"]["spatial_dims"]


#: 3D recipes step their full-size 3D models (about a second each on one thread, ten on a busy two): slow
STEP_CASES = [pytest.param(r, marks=pytest.mark.slow if _raw(r, "model", "spatial_dims", 2) == 3 else ()) for r in RECIPES]


@pytest.mark.parametrize("name", STEP_CASES)
def test_recipe_method_steps_on_its_data(name, tmp_path):
    recipe = load_recipe(name)
    recipe = _small(recipe, tmp_path, recipe["model"]["spatial_dims"])
    _check_step(build_method(recipe), _batch(recipe))


# ---------------------------------------------------------------- one step on a tiny model, 2D and 3D

#: tiny models by what a method needs: a dense U-Net, a ViT when the recipe has one, else a ResNet
#: (which has local features too); the method's own options stay the recipe's
TINY = {
    "unet": {"name": "unet", "channels": [4, 8, 8, 16, 16], "groups": 4},
    "vit": {"name": "vit", "patch_size": 8, "hidden_size": 32, "mlp_dim": 64, "num_layers": 2, "num_heads": 2},
    "vit2d3d": {"name": "vit2d3d", "patch_size": 8, "hidden_size": 32, "mlp_dim": 64, "num_layers": 2, "num_heads": 2, "depth": 16,
                "select_k": 2},
    # a stride-1 stem without max-pool keeps a 4x4 (2D) / 2x2x2 (3D) map: methods reading local tokens see several
    "resnet": {"name": "resnet10", "widen_factor": 0.25, "conv1_t_stride": 1, "no_max_pool": True},
}


def _tiny_model(cls, model: dict, spatial_dims: int) -> dict:
    """From the method's capabilities and the recipe's model family, never from the method's name."""
    family = "unet" if cls.needs_dense else model["name"] if model["name"] in ("vit", "vit2d3d") else "resnet"
    return {**TINY[family], "spatial_dims": spatial_dims, "in_channels": model.get("in_channels", 1),
            **({"img_size": NATIVE[spatial_dims]} if family != "resnet" and family != "unet" else {})}


def _first_recipe(method: str) -> dict:
    if method not in FIRST:
        pytest.skip(f"{method} has no bundled recipe (test_every_method_has_a_bundled_recipe fails)")
    return load_recipe(FIRST[method])


def _on_tiny_model(recipe: dict, spatial_dims: int) -> dict:
    """``recipe`` with a tiny model of ``spatial_dims`` and images (or crops) of its size; the method and data options stay."""
    recipe = copy.deepcopy(recipe)
    recipe["model"] = _tiny_model(get_method(recipe["method"]["name"]), recipe["model"], spatial_dims)
    data, side = recipe["data"], NATIVE[spatial_dims]
    data["spatial_dims"] = None  # follows the model
    source = get_source(data["source"])
    if spatial_dims not in source.supported_dims:  # a 2D-only public source: the generic one of its kind holds volumes
        data["source"] = {"image": "folder", "image_text": "image_text"}[source.kind]
    if data["size"] is not None:
        data["size"] = [side] * spatial_dims
    if data["crops"] is not None:
        data["crops"].update(size=side, crop_mm=None)
    return load_recipe(recipe)


@pytest.mark.parametrize("method, spatial_dims", [
    pytest.param(m, d, id=f"{m}-{d}d") for m in METHODS for d in (2, 3) if d in get_method(m).supported_dims
])
def test_method_steps_on_a_tiny_model(method, spatial_dims, tmp_path):
    recipe = _small(_on_tiny_model(_first_recipe(method), spatial_dims), tmp_path, spatial_dims)
    batch = _batch(recipe)
    assert batch["image"].ndim == spatial_dims + 2
    _check_step(build_method(recipe), batch)


def test_a_method_refuses_dimensionalities_it_does_not_support(monkeypatch):
    from medrep.methods.registry import METHODS as REGISTRY

    base = get_method(METHODS[0])
    only_2d = type("Only2D", (base,), {"supported_dims": (2,), "name": "only_2d"})
    monkeypatch.setitem(REGISTRY, "only_2d", only_2d)
    recipe = {"method": {"name": "only_2d"}, "model": _tiny_model(only_2d, {"name": "resnet"}, 3)}
    with pytest.raises(RecipeError, match=r"^model\.spatial_dims: only_2d trains in 2D only"):
        load_recipe(recipe)
    loaded = load_recipe({**recipe, "model": _tiny_model(only_2d, {"name": "resnet"}, 2)})
    loaded["model"]["spatial_dims"] = 3  # past the loader: the method checks its encoder too
    with pytest.raises(RecipeError, match=r"^model\.spatial_dims: only_2d trains in 2D only"):
        build_method(loaded)


# ---------------------------------------------------------------- options


def _cheap(method: str) -> dict:
    """The method's first recipe on a tiny 2D model (option checks need no real encoder)."""
    return _on_tiny_model(_first_recipe(method), 2)


@pytest.mark.parametrize("method", METHODS)
def test_unknown_option_is_refused_at_load_and_at_build(method):
    recipe = _cheap(method)
    with pytest.raises(RecipeError, match=r"^method\.no_such_option: .*options: "):  # lists the valid ones
        load_recipe(recipe, ["method.no_such_option=1"])
    recipe["method"]["no_such_option"] = 1  # past the loader: the builder checks too
    with pytest.raises(RecipeError, match=r"^method\.no_such_option: "):
        build_method(recipe)


def _wrong_value(annotation: Any) -> Any:
    """A value of the wrong type or out of range for ``annotation``, or None when the rule below has
    none (unions of several types, ``Any``...): bool "yes", a bounded number just outside its lower
    bound, an int 1.5, a float "abc", a str 3, a choice "not-a-choice", a list "abc"."""
    members = [a for a in typing.get_args(annotation) if a is not type(None)] \
        if typing.get_origin(annotation) in (typing.Union, types.UnionType) else [annotation]
    if len(members) != 1:
        return None
    tp = members[0]
    if typing.get_origin(tp) is Annotated:
        base, *meta = typing.get_args(tp)
        bounds = next((m for m in meta if isinstance(m, Range)), None)
        if bounds is None or isinstance(bounds, MinMax) or base not in (int, float):
            return _wrong_value(base)
        if bounds.gt is not None:
            return base(bounds.gt)
        if bounds.ge is not None:
            return base(bounds.ge) - 1
        return "abc"
    if typing.get_origin(tp) is Literal:
        return "not-a-choice"
    if typing.get_origin(tp) in (list, tuple, Sequence, collections.abc.Sequence):
        return "abc"
    return {bool: "yes", int: 1.5, float: "abc", str: 3, dict: 3}.get(tp)


def _wrong_values(method: str) -> dict[str, Any]:
    """Every declared option that has a simple wrong value (see :func:`_wrong_value`), with it."""
    wrong = {key: _wrong_value(option.annotation) for key, option in options_of(get_method(method).Options).items()}
    return {key: value for key, value in wrong.items() if value is not None}


@pytest.mark.parametrize("method", METHODS)
def test_wrong_option_values_are_refused_at_load_and_at_build(method):
    wrong = _wrong_values(method)
    if not wrong:
        pytest.skip(f"{method} declares no option with a simple wrong value")
    recipe = _cheap(method)
    accepted = []
    for key, value in wrong.items():  # the loader, for every such option (cheap: nothing is built)
        try:
            load_recipe(recipe, [f"method.{key}={json.dumps(value)}"])
            accepted.append(f"{key}={value!r}")
        except RecipeError as exc:
            assert exc.where == f"method.{key}", str(exc)
    assert not accepted, f"{method} accepts {', '.join(accepted)}"
    # the method's constructor, past the loader, for one (a bool first: the likeliest to be given "yes")
    key = next((k for k, v in wrong.items() if v == "yes"), next(iter(wrong)))
    recipe["method"][key] = wrong[key]
    with pytest.raises(RecipeError, match=rf"^method\.{key}: "):
        build_method(recipe)


# ---------------------------------------------------------------- data a method needs


@pytest.mark.parametrize("method", TEXT_METHODS)
def test_a_method_that_needs_text_refuses_an_image_only_source(method, tmp_path):
    recipe = _cheap(method)
    recipe["data"].update(source="medmnist", path=None, size=None)
    recipe["trainer"].update(max_steps=1, output_dir=str(tmp_path / "run"), progress_bar=False, accelerator="cpu")
    with pytest.raises(RecipeError, match=r"^data\.source: .*image-report pairs"):  # the engine's check, before anything is built
        pretrain(load_recipe(recipe))
    assert not (tmp_path / "run").exists()
