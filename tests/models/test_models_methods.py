import pytest
import torch

from medrep.errors import RecipeError
from medrep.methods import available_methods, build_method, method_options
from medrep.models import build_backbone
from medrep.recipe import load_recipe

VIT_2D = dict(name="vit", spatial_dims=2, img_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_layers=2, num_heads=2)
VIT_3D = dict(VIT_2D, spatial_dims=3)


@pytest.mark.parametrize(
    "config, shape, dim",
    [
        (dict(name="resnet18", spatial_dims=2, conv1_t_size=3, conv1_t_stride=1), (2, 1, 28, 28), 512),
        (dict(name="resnet50", spatial_dims=2), (2, 1, 32, 32), 2048),
        (dict(name="resnet18", spatial_dims=3), (2, 1, 16, 16, 16), 512),
        (dict(name="resnet50", spatial_dims=3, widen_factor=0.25), (2, 1, 16, 16, 16), 512),
        (VIT_2D, (2, 1, 16, 16), 32),
        (VIT_3D, (2, 1, 16, 16, 16), 32),
        (dict(name="densenet121", spatial_dims=3), (2, 1, 32, 32, 32), 1024),
    ],
)
def test_backbones_give_one_vector_per_input(config, shape, dim):
    net = build_backbone(config)
    out = net(torch.rand(shape))
    assert out.shape == (shape[0], dim) == (shape[0], net.out_dim)


def test_unknown_backbone_and_option_name_the_field():
    with pytest.raises(RecipeError, match="model.name"):
        build_backbone({"name": "resnet19"})
    with pytest.raises(RecipeError, match="model.depth"):
        build_backbone({"name": "resnet18", "depth": 3})


def test_unknown_method_and_option_name_the_field():
    assert "simclr" in available_methods()
    with pytest.raises(RecipeError, match="method.name"):
        build_method(load_recipe({"method": {"name": "simclrr"}}))
    with pytest.raises(RecipeError, match="method.temp"):
        build_method(load_recipe({"method": {"name": "simclr", "temp": 0.1}}))
    assert method_options("simclr")["temperature"] == 0.1


@pytest.mark.parametrize("dims, shape, model", [
    (2, (4, 1, 16, 16), {"name": "resnet10"}),
    (3, (4, 1, 16, 16, 16), {"name": "resnet10", "spatial_dims": 3}),
    (2, (4, 1, 16, 16), VIT_2D),
])
def test_simclr_step_gives_finite_loss_and_gradients(dims, shape, model):
    recipe = load_recipe({"method": {"name": "simclr", "proj_hidden_dim": 32, "proj_dim": 8}, "model": model})
    method = build_method(recipe)
    losses = method.training_step({"image": torch.rand(shape)})
    assert torch.isfinite(losses["loss"]) and losses["loss"] > 0
    losses["loss"].backward()
    grads = [p.grad for p in method.encoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_supervised_reference_learns_labels_and_refuses_unlabelled():
    from medrep.errors import DataError

    recipe = load_recipe({"method": {"name": "supervised", "num_classes": 2}, "model": {"name": "resnet10"}})
    method = build_method(recipe)
    x, y = torch.rand(8, 1, 16, 16), torch.tensor([0, 1] * 4)
    out = method.training_step({"image": x, "label": y})
    assert torch.isfinite(out["loss"]) and 0 <= out["accuracy"] <= 1
    with pytest.raises(DataError, match="label"):
        method.training_step({"image": x})
    with pytest.raises(DataError, match="method.num_classes"):
        method.training_step({"image": x, "label": y + 1})


def test_a_broken_method_file_does_not_break_the_others(tmp_path, monkeypatch):
    import medrep.methods as package
    from medrep.methods import get_method
    from medrep.methods.registry import METHODS

    broken = tmp_path / "broken_method.py"
    broken.write_text("raise ImportError('half-written method')\n")
    import sys

    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "medrep.methods.simclr", raising=False)  # restored afterwards
    saved = dict(METHODS)
    METHODS.clear()
    try:
        assert get_method("simclr").name == "simclr"
        with pytest.raises(ImportError, match="half-written"):
            get_method("no_such_method")  # only the full listing meets the broken file
    finally:
        METHODS.clear()
        METHODS.update(saved)
