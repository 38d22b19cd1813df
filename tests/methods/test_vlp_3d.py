"""ConVIRT, GLoRIA and MGCA on 3D volumes with reports: NIfTI studies through the engine and back."""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import brightness_pairs, require_text_model

from medrep.engine import pretrain
from medrep.errors import MedrepError
from medrep.recipe import load_recipe

pytest.importorskip("nibabel")
require_text_model()

torch.set_num_threads(1)
METHOD = {
    "convirt": {"embed_dim": 32, "max_length": 16},
    "gloria": {"embed_dim": 32, "max_length": 16},
    "mgca": {"embed_dim": 32, "proj_hidden_dim": 32, "max_length": 16, "num_prototypes": 8},
}


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> Path:
    return brightness_pairs(tmp_path_factory.mktemp("vol3d"), n=8, spatial_dims=3)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(METHOD))
def test_image_report_methods_train_on_volumes(name, volumes, tmp_path):
    from medrep.checkpoint import load_method

    recipe = {
        "method": {"name": name, **METHOD[name]},
        "model": {"name": "resnet10", "spatial_dims": 3, "conv1_t_size": 3, "conv1_t_stride": 1},
        "data": {"source": "image_text", "path": str(volumes), "batch_size": 4, "spatial_dims": 3, "size": [16, 16, 16]},
        "trainer": {"max_steps": 2, "checkpoint_every_n_steps": 2, "output_dir": str(tmp_path), "progress_bar": False,
                    "log_every_n_steps": 1, "accelerator": "cpu"},
    }
    run = pretrain(load_recipe(recipe))
    method = load_method(run).eval()
    with torch.no_grad():
        images = method.encode_image(torch.rand(3, 1, 16, 16, 16))
        texts = method.encode_text(["A bright CT volume.", "dark"])
        _, local = method.encoder.forward_with_local(torch.rand(2, 1, 16, 16, 16))
    assert images.shape == (3, 32) and texts.shape == (2, 32)
    assert torch.allclose(images.norm(dim=1), torch.ones(3), atol=1e-5)
    # a 3x3 stride-1 stem, max-pool and three stride-2 stages leave a 1x1x1 map of 16^3 input
    assert local.shape[:2] == (2, 1)


def test_a_2d_image_in_a_3d_recipe_names_the_file(volumes, tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "flat.png")
    bad = tmp_path / "pairs.csv"
    bad.write_text(volumes.read_text().replace("img/0.nii.gz", str(tmp_path / "flat.png")).replace("img/", f"{volumes.parent}/img/"))
    recipe = {
        "method": {"name": "convirt", **METHOD["convirt"]},
        "model": {"name": "resnet10", "spatial_dims": 3},
        "data": {"source": "image_text", "path": str(bad), "batch_size": 8, "spatial_dims": 3, "size": [16, 16, 16]},
        "trainer": {"max_steps": 1, "output_dir": str(tmp_path / "run"), "progress_bar": False, "accelerator": "cpu"},
    }
    with pytest.raises(MedrepError, match="flat.png.*expected a 3D image"):  # one batch holds every study
        pretrain(load_recipe(recipe))
