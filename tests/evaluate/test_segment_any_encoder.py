"""Segmentation from any exported encoder: ResNet and ViT encoders (2D and 3D) fine-tuned with a new
decoder on the colin27-lobes example tree, their pretrained weights loaded and (frozen) kept, the
patch rule each encoder sets, and the errors for encoders and patches that do not fit."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import square_items
from safetensors.torch import load_file

from medrep.checkpoint import export_encoder
from medrep.cli import main
from medrep.data.sources.colin27_lobes import colin27_example, colin27_lobes
from medrep.errors import MedrepError
from medrep.evaluate.encoder import resolve_encoder
from medrep.evaluate.patches import PatchSampler
from medrep.evaluate.segment import SegNet, check_dense, fine_tune, fresh_backbone, segment_eval
from medrep.models import build_backbone
from medrep.models.dense import STAGES, DenseModel, dense_model, dense_spec

torch.set_num_threads(1)

TINY = {
    "resnet": {"name": "resnet10", "widen_factor": 0.25},  # ImageNet stem: features at 1/2 .. 1/32
    "vit": {"name": "vit", "img_size": 32, "patch_size": 8, "hidden_size": 32, "mlp_dim": 64, "num_layers": 2, "num_heads": 2},
}
CASES = [pytest.param(kind, dims, id=f"{kind}-{dims}d") for kind in TINY for dims in (2, 3)]
KW = dict(fractions=(1.0,), seeds=(0,), batch_size=2, lr=1e-3, progress=False, device="cpu")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The colin27-lobes example tree (8 classes; 2D: 10 + 10 slices of 32x32; 3D: one 10x32x32 half each)
    and a tiny exported encoder per kind and dimensionality (random weights stand in for pretrained ones)."""
    root = tmp_path_factory.mktemp("anyenc")
    colin27_example(root / "colin")
    for i, (kind, config) in enumerate(TINY.items()):
        for dims in (2, 3):
            torch.manual_seed(10 + i + dims)
            export_encoder(build_backbone({**config, "spatial_dims": dims}), root / f"{kind}{dims}d",
                           {"method": {"name": "simclr"}, "data": {"spatial_dims": dims}})
    return root




def task(tree, dims):
    return colin27_lobes(tree / "colin", spatial_dims=dims)


@pytest.mark.parametrize("kind, dims", CASES)
def test_fine_tunes_any_encoder_to_finite_dice(tree, kind, dims):
    t = task(tree, dims)
    result = segment_eval(tree / f"{kind}{dims}d", t.train, t.test, t.num_classes, steps=2, class_names=t.class_names, **KW)
    run = result["results"]["1"]["seeds"]["0"]
    assert math.isfinite(run["mean_dice"]) and 0.0 <= run["mean_dice"] <= 1.0 and math.isfinite(run["final_loss"])
    assert result["options"]["patch"] == [32] * dims  # resnet: a multiple of 32 fitting the items; vit: its img_size
    assert ("UNETR" if kind == "vit" else "UpCat") in result["options"]["decoder"]
    again = segment_eval(tree / f"{kind}{dims}d", t.train, t.test, t.num_classes, steps=2, class_names=t.class_names, **KW)
    assert again["results"]["1"]["seeds"]["0"]["mean_dice"] == run["mean_dice"]  # seeded: the same run twice


@pytest.mark.parametrize("kind", TINY)
def test_new_decoder_learns(kind):
    """Squares on noise (as test_segment.py checks the U-Net): 30 steps from scratch take Dice well above an untrained net."""
    torch.manual_seed(0)
    encoder = build_backbone({**TINY[kind], "spatial_dims": 2})
    kw = {**KW, "batch_size": 4, "lr": 1e-2, "random_init": True}
    untrained = segment_eval(encoder, square_items(12, 0), square_items(6, 1), 2, steps=0, **kw)["results"]["1"]["mean_dice"]["mean"]
    trained = segment_eval(encoder, square_items(12, 0), square_items(6, 1), 2, steps=30, **kw)["results"]["1"]["mean_dice"]["mean"]
    assert trained > max(0.8, untrained + 0.4), (untrained, trained)


@pytest.mark.parametrize("kind, dims", CASES)
def test_pretrained_weights_are_the_exported_ones(tree, kind, dims):
    path = tree / f"{kind}{dims}d"
    exported = load_file(str(path / "encoder.safetensors"))
    base, _ = resolve_encoder(path)
    model = SegNet(fresh_backbone(base, False, 3, check_dense(base)), 8)
    assert isinstance(model.backbone, DenseModel)
    state = model.backbone.encoder.state_dict()
    assert state.keys() == exported.keys() and all(torch.equal(state[k], exported[k]) for k in exported)
    first = "net.conv1.weight" if kind == "resnet" else "net.vit.patch_embedding.patch_embeddings.weight"
    assert torch.equal(model.backbone.encoder.get_parameter(first).detach(), exported[first])
    scratch_base, _ = resolve_encoder(path, random_init=True)
    scratch = fresh_backbone(scratch_base, True, 3, check_dense(scratch_base))
    assert not torch.equal(scratch.encoder.get_parameter(first).detach(), exported[first])


@pytest.mark.parametrize("kind", TINY)
def test_frozen_encoder_keeps_every_encoder_weight_and_statistic(tree, kind):
    t = task(tree, 2)
    base, _ = resolve_encoder(tree / f"{kind}2d")
    model = SegNet(fresh_backbone(base, False, 0, check_dense(base)), t.num_classes)
    enc0 = {k: v.clone() for k, v in model.backbone.encoder.state_dict().items()}
    dec0 = {k: v.clone() for k, v in model.backbone.decoder.state_dict().items()}
    sampler = PatchSampler(t.train, (32, 32), 1.0, seed=0, unit="items")
    fine_tune(model, sampler, steps=2, batch_size=2, lr=1e-2, frozen_encoder=True, device=torch.device("cpu"), progress=False)
    assert all(torch.equal(v, model.backbone.encoder.state_dict()[k]) for k, v in enc0.items())  # BN statistics too
    assert any(not torch.equal(v, model.backbone.decoder.state_dict()[k]) for k, v in dec0.items())
    model = SegNet(fresh_backbone(base, False, 0, check_dense(base)), t.num_classes)
    fine_tune(model, sampler, steps=1, batch_size=2, lr=1e-2, frozen_encoder=False, device=torch.device("cpu"), progress=False)
    assert any(not torch.equal(v, model.backbone.encoder.state_dict()[k]) for k, v in enc0.items())


DENSE_CASES = [
    ({"name": "resnet18", "conv1_t_size": 3, "conv1_t_stride": 1, "widen_factor": 0.25}, 16),  # simclr_pneumoniamnist's stem
    ({"name": "resnet18", "conv1_t_stride": 1, "no_max_pool": True, "widen_factor": 0.25}, 8),  # stem and layer1 both at 1/1
    ({"name": "resnet50", "widen_factor": 0.25}, 32),
    ({"name": "densenet121"}, 32),
    ({"name": "vit", "img_size": 28, "patch_size": 4, "hidden_size": 32, "mlp_dim": 64, "num_layers": 6, "num_heads": 2}, 4),
]


@pytest.mark.parametrize("config, multiple", DENSE_CASES, ids=lambda v: v["name"] if isinstance(v, dict) else str(v))
def test_full_resolution_features_from_every_family(config, multiple):
    torch.manual_seed(0)
    encoder = build_backbone({**config, "spatial_dims": 2})
    spec = dense_spec(encoder)
    model = dense_model(encoder, spec)
    side = spec.size or (2 * multiple, 3 * multiple)
    out = model.dense(torch.randn(2, 1, *side))[-1]
    assert spec.multiple == multiple and out.shape == (2, model.dense_channels[-1], *side)
    assert model.encoder is encoder  # the encoder module itself, not a copy: its weights are the ones trained
    assert set(STAGES) >= {"resnet10", "resnet18", "resnet34", "resnet50", "densenet121"}


def test_patch_errors_name_the_option(tree):
    t = task(tree, 2)
    with pytest.raises(MedrepError, match=r"takes exactly its img_size \[32, 32\].*--patch 32") as exc:
        segment_eval(tree / "vit2d", t.train, t.test, t.num_classes, steps=1, patch=64, **KW)
    assert exc.value.where == "--patch"
    with pytest.raises(MedrepError, match=r"multiple of 32 \(the resnet10 encoder's coarsest features are 1/32") as exc:
        segment_eval(tree / "resnet2d", t.train, t.test, t.num_classes, steps=1, patch=16, **KW)
    assert exc.value.where == "--patch"


@pytest.mark.parametrize("config, needle", [
    ({"name": "vit", "img_size": 24, "patch_size": 6, "hidden_size": 32, "mlp_dim": 64, "num_layers": 1, "num_heads": 2},
     "patch_size \\[6, 6\\]: the UNETR decoder"),
    ({"name": "resnet10", "conv1_t_stride": 3, "widen_factor": 0.25}, "not powers of two"),
    ({"name": "resnet10", "in_channels": 3, "widen_factor": 0.25}, "single-channel"),
], ids=["vit-patch6", "resnet-stride3", "rgb"])
def test_encoders_without_a_decoder_are_refused(config, needle):
    with pytest.raises(MedrepError, match=needle) as exc:
        check_dense(build_backbone({**config, "spatial_dims": 2}))
    assert exc.value.where == "--encoder"


def test_cli_segments_colin27_with_a_resnet_and_refuses_a_bad_patch(tree, capsys):
    out = tree / "seg.json"
    argv = ["evaluate", "segment", "--data", "colin27-lobes", "--volumes", str(tree / "colin"), "--fractions", "1.0",
            "--steps", "1", "--batch-size", "2", "--device", "cpu"]
    assert main(argv + ["--encoder", str(tree / "resnet2d"), "--frozen-encoder", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["spatial_dims"] == 2 and saved["options"]["patch"] == [32, 32] and "resnet10" in saved["options"]["decoder"]
    assert "frontal" in capsys.readouterr().out
    assert main(argv + ["--encoder", str(tree / "vit2d"), "--patch", "16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medrep: error: --patch:") and "img_size" in err
