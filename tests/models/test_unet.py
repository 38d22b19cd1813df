import pytest
import torch

from medrep.checkpoint import export_encoder, load_encoder
from medrep.errors import RecipeError
from medrep.models import build_backbone
from medrep.models.unet import UNetBackbone

TINY = dict(channels=[4, 8, 8, 16, 16], groups=4)


def tiny(sd: int, in_channels: int = 1) -> UNetBackbone:
    return build_backbone({"name": "unet", "spatial_dims": sd, "in_channels": in_channels, **TINY})


@pytest.mark.parametrize("sd,size", [(2, 32), (3, 16)])
def test_forward_and_dense_shapes(sd, size):
    torch.manual_seed(0)
    net = tiny(sd, in_channels=2)
    assert isinstance(net, UNetBackbone) and net.out_dim == 16
    assert net.dense_channels == (16, 16, 8, 8, 4)
    x = torch.randn((2, 2) + (size,) * sd)
    assert net(x).shape == (2, 16)
    levels = net.dense(x)
    assert len(levels) == 5
    for level, (c, div) in enumerate(zip(net.dense_channels, (16, 8, 4, 2, 1))):
        assert levels[level].shape == (2, c) + (size // div,) * sd


def test_default_config_is_cover_sized():
    net = build_backbone({"name": "unet", "spatial_dims": 2})
    assert net.out_dim == 512 and net.dense_channels == (512, 256, 128, 64, 32)
    assert net.config == dict(name="unet", spatial_dims=2, in_channels=1, channels=[32, 64, 128, 256, 512], groups=8,
                              negative_slope=0.2)


@pytest.mark.parametrize("shape", [(1, 1, 24, 32), (1, 1, 32, 40)])
def test_size_not_divisible_by_16(shape):
    net = tiny(2)
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.zeros(shape))
    with pytest.raises(ValueError, match=str(shape).replace("(", r"\(").replace(")", r"\)")):
        net.dense(torch.zeros(shape))


@pytest.mark.parametrize(
    "kwargs,where",
    [
        (dict(channels=[4, 8, 16, 32]), "model.channels"),
        (dict(channels=[4, 8, 16, 32, 0]), "model.channels"),
        (dict(channels=[4, 8, 16, 32, 2.5]), "model.channels"),
        (dict(channels="4,8,16,32,64"), "model.channels"),
        (dict(channels=[4, 8, 12, 16, 20], groups=8), "model.channels"),
        (dict(groups=0), "model.groups"),
        (dict(spatial_dims=4), "model.spatial_dims"),
    ],
)
def test_bad_config(kwargs, where):
    with pytest.raises(RecipeError) as info:
        build_backbone({"name": "unet", **kwargs})
    assert info.value.where == where


def test_encoder_decoder_partition_parameters():
    net = tiny(2)
    all_ids = {id(p) for p in net.parameters()}
    enc = {id(p) for p in net.encoder.parameters()}
    dec = {id(p) for p in net.decoder.parameters()}
    assert enc and dec and not enc & dec and enc | dec == all_ids
    keys = list(net.state_dict())
    assert len(keys) == len(set(keys))
    assert all(k.startswith(("net.encoder.", "net.decoder.")) for k in keys)


def test_forward_uses_encoder_only():
    net = tiny(2)
    net(torch.randn(2, 1, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in net.encoder.parameters())
    assert all(p.grad is None for p in net.decoder.parameters())


def test_frozen_encoder_still_trains_decoder():
    net = tiny(2)
    for p in net.encoder.parameters():
        p.requires_grad_(False)
    net.dense(torch.randn(2, 1, 32, 32))[-1].sum().backward()
    assert all(p.grad is None for p in net.encoder.parameters())
    assert all(p.grad is not None for p in net.decoder.parameters())


@pytest.mark.parametrize("sd,size", [(2, 32), (3, 16)])
def test_export_round_trip(tmp_path, sd, size):
    torch.manual_seed(0)
    net = tiny(sd).eval()
    export_encoder(net, tmp_path / "enc")
    loaded = load_encoder(tmp_path / "enc")
    assert isinstance(loaded, UNetBackbone) and loaded.config == net.config
    x = torch.randn((2, 1) + (size,) * sd)
    with torch.no_grad():
        for a, b in zip(net.dense(x), loaded.dense(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(net(x), loaded(x), rtol=0, atol=0)
