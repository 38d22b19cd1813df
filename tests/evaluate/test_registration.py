"""The registration diagnostic: end-point error against a loop reference, a run folder reloads its
whole method, and a trained COVER beats predicting no motion on held-out pairs."""

import math

import numpy as np
import pytest
import torch
from helpers import tiny_recipe

from medrep.checkpoint import load_method
from medrep.engine import pretrain
from medrep.errors import MedrepError
from medrep.evaluate.registration import end_point_error, held_out_images, registration_eval
from medrep.recipe import load_recipe


def test_end_point_error_matches_loops():
    g = torch.Generator().manual_seed(0)
    pred, true = torch.randn(2, 2, 5, 6, generator=g), torch.randn(2, 2, 5, 6, generator=g)
    mask = torch.rand(2, 1, 5, 6, generator=g) > 0.4
    mask[1] = False
    got = end_point_error(pred, true, mask)
    errs = [math.hypot(*(pred[0, :, i, j] - true[0, :, i, j]).tolist()) for i in range(5) for j in range(6) if mask[0, 0, i, j]]
    assert got[0].item() == pytest.approx(np.mean(errs), rel=1e-6)
    assert torch.isnan(got[1])


@pytest.fixture(scope="module")
def cover_run(tmp_path_factory):
    from helpers import make_npz

    tmp = tmp_path_factory.mktemp("cover")
    npz = make_npz(tmp / "tiny.npz", n=64, size=16)
    recipe = tiny_recipe(npz, tmp / "run", method={"name": "cover", "neighbourhood": 3, "scale": [0.9, 1.1], "rotate_deg": 10.0,
                                                   "translate": 0.1, "shear_deg": 0.0},
                         model={"name": "unet", "spatial_dims": 2, "channels": [8, 8, 16, 16, 16], "groups": 4},
                         data={"size": [32, 32], "batch_size": 8}, trainer={"max_steps": 40, "checkpoint_every_n_steps": 40},
                         optim={"lr": 3e-3, "warmup_steps": 0})
    for key in ("conv1_t_size", "conv1_t_stride"):
        recipe["model"].pop(key)
    for key in ("proj_hidden_dim", "proj_dim"):
        recipe["method"].pop(key)
    torch.manual_seed(0)
    return pretrain(load_recipe(recipe))


@pytest.mark.slow
def test_run_reloads_and_beats_zero_motion(cover_run, tmp_path):
    method = load_method(cover_run)
    images = held_out_images(cover_run, split="test", n=16)
    assert images.shape == (16, 1, 32, 32)
    result = registration_eval(method, images, seed=1, plot=tmp_path / "fields.png")
    assert result["pairs"] == 16 and (tmp_path / "fields.png").stat().st_size > 0
    assert result["epe_mean"] < result["zero_flow_epe_mean"]


def test_not_a_cover_run(tmp_path, tiny_npz):
    run = pretrain(load_recipe(tiny_recipe(tiny_npz, tmp_path / "simclr")))
    with pytest.raises(MedrepError, match="--run"):
        registration_eval(load_method(run), torch.rand(2, 1, 16, 16))
    with pytest.raises(MedrepError, match="recipe.yaml"):
        load_method(tmp_path)


def test_cli_writes_result_and_plot(cover_run, tmp_path, capsys):
    from medrep.cli import main

    out = tmp_path / "reg.json"
    assert main(["evaluate", "registration", "--run", str(cover_run), "--split", "test", "--n", "4", "--plot",
                 str(tmp_path / "f.png"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "no motion" in text and out.is_file() and (tmp_path / "f.png").is_file()
    assert main(["evaluate", "registration", "--run", str(tmp_path), "--n", "4"]) == 2
    assert "recipe.yaml" in capsys.readouterr().err
