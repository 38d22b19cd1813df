"""The slice-selection check against a hand count from the atlas labels, 2D-3D consistency on stub
encoders whose answer is known, and both CLI verbs on a tiny prepared tree and run."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import require_text_model

from medrep.cli import main
from medrep.data.io.atlas import region_slices
from medrep.data.io.readers import read_image
from medrep.data.sources.colin27_lobes import colin27_example
from medrep.data.sources.colin27_regions import prepare_colin27_regions, read_region_columns
from medrep.engine import pretrain
from medrep.errors import MedrepError
from medrep.evaluate.consistency import slice_consistency
from medrep.evaluate.slice_selection import selection_hits
from medrep.models import build_backbone
from medrep.recipe import load_recipe

torch.set_num_threads(1)
VIT = {"name": "vit2d3d", "spatial_dims": 3, "img_size": 8, "depth": 6, "patch_size": 4, "hidden_size": 16, "mlp_dim": 32,
       "num_layers": 1, "num_heads": 2, "select_k": 2}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("regions")
    with tempfile.TemporaryDirectory() as volumes:
        colin27_example(Path(volumes))
        prepare_colin27_regions(root / "crops", volumes, crop=(8, 8, 6), spacing=(1.5, 1.5, 1.5), stride=2)
    return root / "crops"


def test_hits_match_a_count_from_the_atlas(prepared, monkeypatch):
    torch.manual_seed(0)
    encoder = build_backbone(VIT)
    fixed = torch.tensor([0.1, 0.9, 0.0, 0.2, 0.8, 0.3])  # slabs 1 and 4 are chosen
    monkeypatch.setattr(encoder.net, "slice_scores", lambda v: fixed.expand(len(v), -1).clone())
    result = selection_hits(encoder, prepared, split=None, min_voxels=1)
    columns = read_region_columns(prepared)
    want = {"attentive": [], "random": [], "central": []}
    for crop in columns.values():
        labels = read_image(str(crop.labels), 3)["image"][0].numpy().round().astype(np.int64)
        for region in crop.regions:
            holds = region_slices(labels, region, prepared / "label_names.txt", 1)
            want["attentive"].append(holds[[1, 4]].mean())
            want["random"].append(holds.mean())
            want["central"].append(holds[[2, 3]].mean())
    assert result["pairs"] == len(want["random"]) > 0
    for rule, values in want.items():
        assert result["all"][rule] == pytest.approx(float(np.mean(values)))
    assert 0 <= result["all"]["best"] <= 1 and result["all"]["best"] >= result["all"]["attentive"]
    assert result["score_spread"] == pytest.approx(0.9 / (2.3 / 6))  # (max - min) / mean, the same for every crop


def test_selection_needs_a_vit2d3d(prepared):
    with pytest.raises(MedrepError, match="vit2d3d"):
        selection_hits(build_backbone({"name": "resnet10", "spatial_dims": 3}), prepared)


class _Mean(torch.nn.Module):
    """Embeds any input as (mean, 1): a volume and its own (constant) slices coincide."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.flatten(1).mean(1), torch.ones(len(x))], dim=1)


def test_consistency_is_perfect_when_slices_embed_as_their_volume():
    volumes = torch.arange(1, 7, dtype=torch.float32)[:, None, None, None, None].expand(-1, 1, 4, 4, 3).clone()
    out = slice_consistency(_Mean(), volumes)
    assert out["R@1"] == 1.0 and out["auroc"] == 1.0 and out["mean_rank"] == 1.0 and out["slices_per_volume"] == 3


class _Noise(torch.nn.Module):
    """Embeds any input as seeded noise: blind to what it is shown."""

    def __init__(self):
        super().__init__()
        self.g = torch.Generator().manual_seed(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(len(x), 8, generator=self.g)


def test_consistency_of_an_encoder_blind_to_the_volume_is_near_chance():
    volumes = torch.rand(40, 1, 4, 4, 4)
    out = slice_consistency(_Noise(), volumes, stride=2)
    assert out["R@1"] < 0.2 and 0.3 < out["auroc"] < 0.7


def test_consistency_needs_two_volumes():
    with pytest.raises(MedrepError, match="at least two volumes"):
        slice_consistency(_Mean(), torch.rand(1, 1, 4, 4, 3))


@pytest.mark.slow
def test_cli_slices_and_consistency(prepared, tmp_path):
    require_text_model()
    run = pretrain(load_recipe({
        "method": {"name": "unimedi", "dino_out": 16, "dino_hidden_dim": 16, "dino_bottleneck_dim": 8, "embed_dim": 16,
                   "proj_hidden_dim": 16, "max_length": 32},
        "model": VIT, "data": {"source": "colin27-regions", "path": str(prepared), "intensity": "none", "batch_size": 2},
        "trainer": {"max_steps": 2, "checkpoint_every_n_steps": 1, "keep_checkpoints": None, "output_dir": str(tmp_path / "run"),
                    "progress_bar": False, "accelerator": "cpu"},
    }))
    study = next(iter(read_region_columns(prepared)))
    out = tmp_path / "sel" / "s.json"
    assert main(["evaluate", "slices", "--run", str(run), "--data", str(prepared), "--split", "all", "--every-checkpoint",
                 "--figure", study, "--out", str(out)]) == 0
    steps = json.loads(out.read_text())["steps"]
    assert set(steps) == {"0", "1", "2", "last"} and out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "c.json"
    assert main(["evaluate", "consistency", "--encoder", str(run), "--data", str(prepared), "--split", "all", "--out", str(out)]) == 0
    assert 0 <= json.loads(out.read_text())["auroc"] <= 1
    assert main(["evaluate", "slices", "--run", str(tmp_path / "nope"), "--data", str(prepared)]) == 2
