"""COVER as a registered method: a step trains the U-Net and the pyramid, and bad options name their
recipe field. Its bundled recipes are built and stepped by tests/methods/test_method_contracts.py."""

import pytest
import torch
from helpers import tiny_recipe

from medrep.checkpoint import load_encoder
from medrep.engine import pretrain
from medrep.errors import RecipeError
from medrep.methods import build_method
from medrep.recipe import load_recipe

TINY_UNET = ["model.name=unet", "model.channels=[4, 8, 8, 16, 16]", "model.groups=4"]


def cover(dims: int, *extra: str):
    return build_method(load_recipe(None, ["method.name=cover", f"model.spatial_dims={dims}", *TINY_UNET, *extra]))


@pytest.mark.parametrize("dims,shape", [(2, (2, 1, 32, 32)), (3, (1, 1, 16, 16, 16))])
def test_step_gives_both_losses_and_trains_every_part(dims, shape):
    torch.manual_seed(0)
    method = cover(dims, "method.neighbourhood=3")
    out = method.training_step({"image": torch.rand(shape)})
    assert set(out) == {"loss", "vec", "con"}
    assert torch.isfinite(out["loss"]) and torch.allclose(out["loss"], out["vec"] + out["con"])
    out["loss"].backward()
    for part in (method.encoder.encoder, method.encoder.decoder, method.pyramid):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads)


def test_views_follow_spatial_dims_defaults():
    assert cover(2).cover_views.rotate_deg == 30.0
    assert cover(3).cover_views.rotate_deg == 15.0
    assert cover(2, "method.rotate_deg=5.0").cover_views.rotate_deg == 5.0


def test_needs_a_dense_backbone():
    with pytest.raises(RecipeError, match="model.name.*unet"):
        build_method(load_recipe(None, ["method.name=cover", "model.name=resnet10"]))


@pytest.mark.parametrize("override,field", [
    ("method.neighbourhood=4", "method.neighbourhood"),
    ("method.heads=[4, 4, 1]", "method.heads"),
    ("method.rotate_deg=-3.0", "method.rotate_deg"),
    ("method.appearance={sharpen: 1.0}", "method.appearance"),
])
def test_bad_options_name_their_field(override, field):
    with pytest.raises(RecipeError, match=field.replace(".", r"\.")):
        cover(2, override)


def test_pretrain_from_recipe_exports_the_whole_unet(tiny_npz, tmp_path):
    recipe = tiny_recipe(tiny_npz, tmp_path / "run", method={"name": "cover", "neighbourhood": 3},
                         model={"name": "unet", "spatial_dims": 2, "channels": [4, 8, 8, 16, 16], "groups": 4},
                         data={"size": [32, 32], "batch_size": 4})
    recipe["model"].pop("conv1_t_size"), recipe["model"].pop("conv1_t_stride")
    recipe["method"].pop("proj_hidden_dim"), recipe["method"].pop("proj_dim")
    run = pretrain(load_recipe(recipe))
    encoder = load_encoder(run)
    dense = encoder.dense(torch.rand(1, 1, 32, 32))
    assert [f.shape[1] for f in dense] == [16, 16, 8, 8, 4]
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_pretrain_3d_on_real_colin27(real_data, tmp_path):
    real_data.need("volumes/colin27_t1.nii.gz")
    folder = tmp_path / "colin"
    folder.mkdir()
    (folder / "colin27_t1.nii.gz").symlink_to(real_data / "volumes" / "colin27_t1.nii.gz")
    recipe = load_recipe("cover_3d_colin27", [f"data.path={folder}", "model.channels=[4, 8, 8, 16, 16]", "model.groups=4",
                                              "method.neighbourhood=3", "data.crops.size=32", "data.crops.k=1",
                                              "trainer.max_steps=1", f"trainer.output_dir={tmp_path / 'run'}",
                                              "trainer.progress_bar=false"])
    run = pretrain(recipe)
    assert load_encoder(run).dense(torch.rand(1, 1, 32, 32, 32))[-1].shape == (1, 4, 32, 32, 32)
