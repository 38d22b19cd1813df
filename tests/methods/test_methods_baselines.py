"""BYOL, Barlow Twins and VICReg as methods: 2D/3D steps, BYOL's momentum target, short
pretraining runs through the engine, bundled recipes and option validation."""

from __future__ import annotations

import csv

import lightning.pytorch as pl
import pytest
import torch
from helpers import tiny_recipe

import medrep
from medrep.engine import pretrain
from medrep.errors import RecipeError
from medrep.methods import build_method
from medrep.recipe import load_recipe

SMALL = {
    "byol": {"proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 32},
    "barlow_twins": {"proj_hidden_dim": 32, "proj_dim": 16},
    "vicreg": {"proj_hidden_dim": 32, "proj_dim": 16},
}
TERMS = {"byol": {"loss"}, "barlow_twins": {"loss"}, "vicreg": {"loss", "invariance", "variance", "covariance"}}


def _method(name: str, spatial_dims: int = 2, **options):
    model = {"name": "resnet10", "spatial_dims": spatial_dims}
    return build_method(load_recipe({"method": {"name": name, **SMALL[name], **options}, "model": model}))


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("shape", [(4, 1, 16, 16), (2, 1, 16, 16, 16)], ids=["2d", "3d"])
def test_step_gives_finite_loss_and_gradients(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    method = _method(name, spatial_dims=len(shape) - 2)
    losses = method.training_step({"image": torch.rand(shape)})
    assert set(losses) == TERMS[name]
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss"] > 0
    losses["loss"].backward()
    grads = [p.grad for p in method.encoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_byol_target_is_frozen_and_follows_the_online_network() -> None:
    torch.manual_seed(0)
    method = _method("byol", base_momentum=0.9)
    target = list(method.target_encoder.parameters()) + list(method.target_projector.parameters())
    online = list(method.encoder.parameters()) + list(method.projector.parameters())
    assert all(not p.requires_grad for p in target)
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    assert trainable.isdisjoint(id(p) for p in target)  # the engine's optimiser only takes these
    assert {id(p) for p in method.predictor.parameters()} <= trainable
    assert all(torch.equal(t, o) for t, o in zip(target, online))

    method.training_step({"image": torch.rand(4, 1, 16, 16)})["loss"].backward()
    assert all(p.grad is None for p in target)
    with torch.no_grad():
        for p in online:
            p.add_(torch.randn_like(p))
    before = [(t - o).norm().item() for t, o in zip(target, online)]
    method.on_train_batch_end(1, 10)
    after = [(t - o).norm().item() for t, o in zip(target, online)]
    tau = method.momentum_at(1, 10)
    assert method.momentum == tau and 0.9 < tau < 1
    for b, a in zip(before, after):
        assert a == pytest.approx(tau * b, rel=1e-4, abs=1e-6)
    # the same step again (gradient accumulation: no optimiser step in between) does not move it
    method.on_train_batch_end(1, 10)
    assert [(t - o).norm().item() for t, o in zip(target, online)] == after


def test_byol_momentum_schedule() -> None:
    method = _method("byol", base_momentum=0.99)
    assert method.momentum_at(0, 100) == pytest.approx(0.99)
    assert method.momentum_at(50, 100) == pytest.approx(0.995)
    assert method.momentum_at(100, 100) == 1.0
    assert method.momentum_at(150, 100) == 1.0
    steps = [method.momentum_at(s, 100) for s in range(101)]
    assert steps == sorted(steps)


class _Capture(pl.Callback):
    def on_train_end(self, trainer, pl_module) -> None:
        self.method = pl_module.method


@pytest.mark.parametrize("name", list(SMALL))
def test_pretrain_runs_and_exports_the_online_encoder(name: str, tiny_npz, tmp_path) -> None:
    capture = _Capture()
    recipe = load_recipe(tiny_recipe(tiny_npz, tmp_path / "run", method={"name": name, **SMALL[name]},
                                     trainer={"max_steps": 4, "checkpoint_every_n_steps": 4}))
    run = pretrain(recipe, extra_callbacks=[capture])
    rows = [row for f in sorted(run.glob("logs/**/metrics.csv")) for row in csv.DictReader(f.open())]
    for term in TERMS[name]:
        values = [float(r[f"train/{term}"]) for r in rows if r.get(f"train/{term}")]
        assert len(values) == 4 and all(torch.isfinite(torch.tensor(values))), term
    encoder = medrep.load_encoder(run)
    exported = encoder.state_dict()
    for key, value in capture.method.encoder.state_dict().items():
        assert torch.equal(exported[key], value), key
    if name == "byol":  # the engine calls the hook with max_steps: the momentum ends at 1
        assert capture.method.momentum == 1.0
        target = capture.method.target_encoder.state_dict()
        assert any(not torch.equal(exported[k], v) for k, v in target.items() if v.is_floating_point())


@pytest.mark.parametrize("name", list(SMALL))
def test_bundled_recipe_loads_and_builds(name: str) -> None:
    recipe = load_recipe(f"{name}_pneumoniamnist")
    assert recipe["method"]["name"] == name and recipe["optim"]["name"] == "adamw"
    simclr = load_recipe("simclr_pneumoniamnist")
    for section in ("model", "data", "augment"):
        assert recipe[section] == simclr[section], section
    assert build_method(recipe).name == name


@pytest.mark.parametrize(
    "name, key, value",
    [
        ("byol", "base_momentum", 1.5),
        ("byol", "pred_hidden_dim", 0),
        ("barlow_twins", "lambda_offdiag", -0.1),
        ("barlow_twins", "proj_layers", 0),
        ("barlow_twins", "scale_loss", "big"),
        ("vicreg", "var_weight", -1.0),
        ("vicreg", "proj_dim", 2.5),
        ("vicreg", "lambda_offdiag", 0.1),  # not a VICReg option
    ],
)
def test_bad_option_names_the_field(name: str, key: str, value) -> None:
    with pytest.raises(RecipeError, match=f"method.{key}"):
        _method(name, **{key: value})
