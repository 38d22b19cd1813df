"""Contracts every registered backbone keeps, generated from the registry (``BACKBONES``).

A new backbone is covered without a new test: it builds with tiny options in every dimensionality
its ``spatial_dims`` option allows, maps ``(B, C, *spatial)`` to ``(B, out_dim)``, refuses a batch
of the other dimensionality and an unknown option (naming ``model.<key>``), rebuilds from its
``config`` (what an exported encoder is loaded from), and, when it has sub-region features, gives
``(B, N, local_dim)`` from the same pass as its pooled output (else refuses naming ``model.name``).
"""

from __future__ import annotations

import typing

import pytest
import torch

from medrep.errors import RecipeError
from medrep.methods import available_methods
from medrep.models import BACKBONES, build_backbone
from medrep.options import options_of
from medrep.recipe import load_recipe

torch.set_num_threads(1)  # tiny tensors: a second thread costs more than it gives, far more on a busy machine
SIDE = 32  # what every backbone takes: a multiple of 16 (the U-Net pools 4x), >= 32 (DenseNet-121's five halvings)
#: tiny values for width-like options, applied to a builder that declares them (options, not backbone names)
TINY_OPTIONS = {"widen_factor": 0.25, "channels": [4, 8, 8, 16, 16], "groups": 4, "hidden_size": 32, "mlp_dim": 64,
                "num_layers": 2, "num_heads": 2, "patch_size": 8, "img_size": SIDE}


def _dims(name: str) -> tuple[int, ...]:
    """The dimensionalities a builder's ``spatial_dims`` option allows (``Literal[2, 3]``...)."""
    option = options_of(BACKBONES[name]).get("spatial_dims")  # missing: test_every_backbone_declares_spatial_dims fails
    return tuple(typing.get_args(option.annotation)) or (2, 3) if option is not None else (2,)


CASES = [pytest.param(name, d, id=f"{name}-{d}d") for name in sorted(BACKBONES) for d in _dims(name)]


def _tiny(name: str, spatial_dims: int) -> dict:
    declared = options_of(BACKBONES[name])
    return {"name": name, "spatial_dims": spatial_dims, **{k: v for k, v in TINY_OPTIONS.items() if k in declared}}


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_declares_spatial_dims(name):
    assert "spatial_dims" in options_of(BACKBONES[name]), f"backbone {name!r} must take a spatial_dims option"


@pytest.mark.parametrize("name, spatial_dims", CASES)
def test_backbone_gives_its_features_and_rebuilds_from_its_config(name, spatial_dims):
    net = build_backbone(_tiny(name, spatial_dims)).eval()
    assert net.spatial_dims == spatial_dims and net.config["name"] == name
    x = torch.rand((2, 1) + (SIDE,) * spatial_dims)
    with torch.no_grad():
        out = net(x)
        assert out.shape == (2, net.out_dim) and torch.isfinite(out).all()
        if net.local_dim is None:
            with pytest.raises(RecipeError, match=r"^model\.name"):
                net.forward_with_local(x)
        else:  # one pass gives both: the pooled output and the sub-region features
            pooled, local = net.forward_with_local(x)
            assert torch.allclose(pooled, out, atol=1e-5)
            assert local.ndim == 3 and local.shape[0] == 2 and local.shape[1] >= 1 and local.shape[2] == net.local_dim
        other = torch.rand((2, 1) + (SIDE,) * (5 - spatial_dims))
        if 5 - spatial_dims in getattr(net, "supported_dims", ()):  # one network for both (vit2d3d)
            assert net(other).shape == (2, net.out_dim)
        else:
            with pytest.raises(ValueError, match=f"spatial_dims={spatial_dims}"):  # a batch of the other dimensionality
                net(other)
    again = build_backbone(net.config)  # an exported encoder is rebuilt from its config alone
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_unknown_option_is_refused_naming_it(name):
    with pytest.raises(RecipeError, match=r"^model\.no_such_option"):
        build_backbone({"name": name, "no_such_option": 1})
    with pytest.raises(RecipeError, match=r"^model\.no_such_option"):
        load_recipe({"method": {"name": available_methods()[0]}, "model": {"name": name, "no_such_option": 1}})


def test_a_builder_with_loose_parameters_is_refused_at_registration():
    from medrep.models import BACKBONES, register_backbone

    def positional(spatial_dims: int = 2):  # an option passed by position would escape its recipe name
        raise AssertionError("never built")

    def untyped(*, spatial_dims=2):
        raise AssertionError("never built")

    for fn in (positional, untyped):
        with pytest.raises(TypeError, match="keyword-only, typed and defaulted"):
            register_backbone("loose")(fn)
    assert "loose" not in BACKBONES
