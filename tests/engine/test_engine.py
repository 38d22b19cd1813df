import csv

import pytest
import torch
import yaml
from helpers import tiny_recipe

import medrep
from medrep.checkpoint import export_encoder, load_encoder
from medrep.engine import pretrain
from medrep.errors import MedrepError, RecipeError
from medrep.methods import build_method
from medrep.recipe import load_recipe


def test_pretrain_writes_run_folder_and_exports_loadable_encoder(tiny_npz, tmp_path):
    recipe = load_recipe(tiny_recipe(tiny_npz, tmp_path / "run"))
    run = pretrain(recipe)
    assert (run / "recipe.yaml").is_file() and yaml.safe_load((run / "recipe.yaml").read_text()) == recipe
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "checkpoints" / "step2.ckpt").is_file()
    rows = list(csv.DictReader((run / "logs" / "version_0" / "metrics.csv").open()))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert any((run / "tensorboard").iterdir())
    encoder = medrep.load_encoder(run)
    assert isinstance(encoder, torch.nn.Module) and not encoder.training
    assert encoder.preprocess["intensity"] == "minmax"
    x = torch.rand(4, 1, 16, 16)
    assert encoder(x).shape == (4, encoder.out_dim)
    random = load_encoder(run / "encoder", weights=False)
    assert not torch.allclose(random(x), encoder(x))


def test_export_roundtrip_is_exact(tmp_path):
    method = build_method(load_recipe({"method": {"name": "simclr"}, "model": {"name": "resnet10"}}))
    enc = method.encoder.eval()
    export_encoder(enc, tmp_path / "enc")
    back = load_encoder(tmp_path / "enc" / "encoder.safetensors")
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(enc(x), back(x))


@pytest.mark.slow
def test_resume_continues_from_last_checkpoint(tiny_npz, tmp_path):
    run = tmp_path / "run"
    pretrain(load_recipe(tiny_recipe(tiny_npz, run, trainer={"max_steps": 2})))
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert first["global_step"] == 2
    pretrain(load_recipe(tiny_recipe(tiny_npz, run, trainer={"max_steps": 4})), resume=True)
    second = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert second["global_step"] == 4
    def steps(version):
        return [int(r["step"]) for r in csv.DictReader((run / "logs" / version / "metrics.csv").open()) if r.get("train/loss")]

    assert steps("version_0") == [0, 1] and steps("version_1") == [2, 3]


def test_resume_without_checkpoint_names_the_folder(tiny_npz, tmp_path):
    with pytest.raises(MedrepError, match="last.ckpt"):
        pretrain(load_recipe(tiny_recipe(tiny_npz, tmp_path / "empty")), resume=True)


def test_bf16_mixed_and_accumulation_run_on_cpu(tiny_npz, tmp_path):
    trainer = {"precision": "bf16-mixed", "accumulate_grad_batches": 2, "max_steps": 2}
    recipe = load_recipe(tiny_recipe(tiny_npz, tmp_path / "run", trainer=trainer))
    run = pretrain(recipe)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


def test_16_mixed_on_cpu_is_refused(tiny_npz, tmp_path):
    recipe = load_recipe(tiny_recipe(tiny_npz, tmp_path / "run", trainer={"precision": "16-mixed"}))
    with pytest.raises(RecipeError, match="trainer.precision"):
        pretrain(recipe)


@pytest.mark.slow
def test_same_seed_same_weights(tiny_npz, tmp_path):
    encs = [medrep.load_encoder(pretrain(load_recipe(tiny_recipe(tiny_npz, tmp_path / f"r{i}", trainer={"max_steps": 2}))))
            for i in range(2)]
    for a, b in zip(encs[0].state_dict().values(), encs[1].state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_training_reduces_the_loss(tiny_npz, tmp_path):
    recipe = load_recipe(tiny_recipe(tiny_npz, tmp_path / "run", trainer={"max_steps": 30, "checkpoint_every_n_steps": 30},
                                     optim={"lr": 3e-3, "warmup_steps": 0}))
    run = pretrain(recipe)
    losses = [float(r["train/loss"]) for r in csv.DictReader((run / "logs" / "version_0" / "metrics.csv").open()) if r.get("train/loss")]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
