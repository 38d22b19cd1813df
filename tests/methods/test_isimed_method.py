"""The ISImed method on real batches of crops, 2D and 3D, and short pretraining runs."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import medrep
from medrep.data import build_dataset, collate
from medrep.data.synthetic import write_nifti, write_png
from medrep.engine import pretrain
from medrep.errors import DataError, RecipeError
from medrep.methods import build_method
from medrep.recipe import load_recipe


def blob_volume(shape=(40, 44, 36), seed=0) -> np.ndarray:
    """A bright ellipsoid with texture in a dark background: foreground for the crop rule."""
    rng = np.random.default_rng(seed)
    idx = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    inside = (idx ** 2).sum(0) < 0.8
    return (inside * (100 + 50 * rng.random(shape))).astype(np.float32)


@pytest.fixture
def volume_folder(tmp_path):
    folder = tmp_path / "vols"
    write_nifti(folder / "a.nii.gz", blob_volume(), spacing=(0.9, 1.1, 1.3))
    write_nifti(folder / "b.nii.gz", blob_volume(seed=1), spacing=(1.0, 1.0, 1.0))
    return folder


@pytest.fixture
def png_folder(tmp_path):
    folder = tmp_path / "pngs"
    for i in range(3):
        img = (blob_volume((96, 80), seed=i) * 1.5).astype(np.uint8)
        write_png(folder / f"im{i}.png", img)
    return folder


def _step(recipe: dict, n_images: int = 2):
    method = build_method(recipe)
    ds = build_dataset(recipe["data"])
    batch = collate([ds[i] for i in range(n_images)])
    losses = method.training_step(batch)
    losses["loss"].backward()
    grads = [p.grad for p in method.parameters() if p.requires_grad]
    return method, batch, losses, grads


def test_3d_recipe_uses_the_official_backbone():
    method = build_method(load_recipe("isimed_3d_colin27"))
    assert method.encoder.config["name"] == "densenet121" and method.encoder.out_dim == 1024
    assert isinstance(method.head, torch.nn.Identity)  # no projector: the backbone output is the embedding


def test_3d_step_is_finite_with_grads(volume_folder):
    # resnet10 on 16^3 crops keeps the test fast; DenseNet-121 (the recipe's) needs >= 32^3
    recipe = load_recipe("isimed_3d_colin27", [f"data.path={volume_folder}", "data.crops.k=3",
                                               "method.var_weight=0.1", "model.name=resnet10", "data.crops.size=16"])
    method, batch, losses, grads = _step(recipe)
    assert batch["image"].shape == (6, 1, 16, 16, 16) and batch["group"].tolist() == [0, 0, 0, 1, 1, 1]
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_2d_step_resnet18_is_finite_with_grads(png_folder):
    recipe = load_recipe("isimed_2d_medpix", [f"data.path={png_folder}", "data.crops.k=3", "method.embed_dim=16",
                                              "method.intensity_augment=true", "method.pairs=all"])
    method, batch, losses, grads = _step(recipe, 3)
    assert batch["image"].shape == (9, 1, 64, 64) and batch["coords"].shape == (9, 2)
    assert method.embed(batch["image"]).shape == (9, 16)
    assert torch.isfinite(losses["loss"]) and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_intensity_augment_never_moves_content():
    recipe = load_recipe("isimed_2d_medpix", ["method.intensity_augment=true", "augment.brightness=0", "augment.contrast=0",
                                              "augment.noise_std=0", "augment.rotate_deg=90", "augment.crop_scale=[0.3, 0.3]",
                                              "augment.flip=true", "augment.cutout_prob=1.0"])
    method = build_method(recipe)
    x = torch.rand(4, 1, 16, 16)
    assert torch.equal(method._intensity(x), x)  # only intensity, blur and noise parts are ever used
    method = build_method(load_recipe("isimed_2d_medpix", ["method.intensity_augment=true", "augment.brightness=0.5"]))
    assert not torch.equal(method._intensity(x), x)


def test_method_needs_crops_and_checks_options():
    method = build_method(load_recipe("isimed_2d_medpix"))
    with pytest.raises(DataError, match="data.crops"):
        method.training_step({"image": torch.rand(4, 1, 32, 32)})
    with pytest.raises(DataError, match="3 coordinates"):
        method.training_step({"image": torch.rand(4, 1, 32, 32), "coords": torch.rand(4, 3), "group": torch.zeros(4)})
    for override, field in (("method.pairs=cross", "method.pairs"), ("method.distance_scale=0", "method.distance_scale"),
                            ("method.var_weight=-1", "method.var_weight"), ("method.embed_dim=0", "method.embed_dim"),
                            ("method.projector=3", "method.projector")):
        with pytest.raises(RecipeError, match=field.replace(".", r"\.")):
            build_method(load_recipe("isimed_2d_medpix", [override]))


def _losses(run):
    rows = csv.DictReader((run / "logs" / "version_0" / "metrics.csv").open())
    return [float(r["train/loss"]) for r in rows if r.get("train/loss")]


@pytest.mark.slow
def test_pretrain_3d_on_synthetic_nifti_folder(volume_folder, tmp_path):
    recipe = load_recipe("isimed_3d_colin27", [
        f"data.path={volume_folder}", "trainer.max_steps=2", f"trainer.output_dir={tmp_path / 'run'}",
        "trainer.progress_bar=false", "trainer.log_every_n_steps=1", "trainer.accelerator=cpu",
        "data.batch_size=2", "data.crops.k=3", "data.crops.size=16", "data.crops.crop_mm=18.0", "model.name=resnet10",
    ])
    run = pretrain(recipe)
    losses = _losses(run)
    assert len(losses) == 2 and all(np.isfinite(losses))
    encoder = medrep.load_encoder(run)
    assert encoder(torch.rand(2, 1, 16, 16, 16)).shape == (2, 512)


@pytest.mark.slow
def test_pretrain_on_real_colin27(real_data, tmp_path):
    t1 = real_data.need("volumes/colin27_t1.nii.gz")
    folder = tmp_path / "colin"
    folder.mkdir()
    (folder / t1.name).symlink_to(t1)  # the real volume alone, read in place
    recipe = load_recipe("isimed_3d_colin27", [
        f"data.path={folder}", "trainer.max_steps=2", f"trainer.output_dir={tmp_path / 'run'}",
        "trainer.progress_bar=false", "trainer.log_every_n_steps=1", "trainer.accelerator=cpu", "data.crops.k=4",
        "data.crops.size=16", "model.name=resnet10",  # small crops and encoder: a few seconds
    ])
    ds = build_dataset(recipe["data"])
    item = ds[0]
    coords = item["coords"]  # mm in Colin27's (MNI-like) frame: inside the 181 x 217 x 181 mm box
    assert torch.all(coords > torch.tensor([-90.0, -126.0, -72.0])) and torch.all(coords < torch.tensor([91.0, 92.0, 110.0]))
    assert (item["image"] > 0.1).float().mean(dim=(1, 2, 3, 4)).min() >= 0.25
    run = pretrain(recipe)
    losses = _losses(run)
    assert len(losses) == 2 and all(np.isfinite(losses))
