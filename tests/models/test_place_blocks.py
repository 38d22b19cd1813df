"""PLACE's blocks: observation extractor and correlation predictor on real backbones' local tokens
(2D and 3D), attention and padding contracts, gradients, and patch masking in the backbones' token
order."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medrep.errors import MedrepError
from medrep.models import build_backbone
from medrep.models.backbones import _flat
from medrep.models.place import CorrelationPredictor, ObservationExtractor, mask_patches

torch.set_num_threads(1)

#: tiny backbones and the local grid each gives on a SIDE^n input (ResNet: stride-1 stem, no max-pool -> /8)
BACKBONES = {
    "resnet10": ({"name": "resnet10", "widen_factor": 0.125, "conv1_t_stride": 1, "no_max_pool": True}, 8),
    "vit": ({"name": "vit", "hidden_size": 32, "mlp_dim": 64, "num_layers": 1, "num_heads": 2, "patch_size": 8}, 8),
}
SIDE = {2: 32, 3: 16}


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def _backbone(name: str, spatial_dims: int):
    config, _ = BACKBONES[name]
    extra = {"img_size": SIDE[spatial_dims]} if name == "vit" else {}
    return build_backbone({**config, **extra, "spatial_dims": spatial_dims}).eval()


def _grid(name: str, spatial_dims: int) -> tuple[int, ...]:
    return (SIDE[spatial_dims] // BACKBONES[name][1],) * spatial_dims


# ---------------------------------------------------------------- on real backbones


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_blocks_take_backbone_tokens_and_masked_views(name, spatial_dims):
    net = _backbone(name, spatial_dims)
    x = torch.rand((2, 1) + (SIDE[spatial_dims],) * spatial_dims)
    grid = _grid(name, spatial_dims)
    masked, kept = mask_patches(x, grid, 0.5, torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, tokens = net.forward_with_local(x)
        _, masked_tokens = net.forward_with_local(masked)
    n = math.prod(grid)
    assert tokens.shape == (2, n, net.local_dim) and kept.shape == (2, n)
    obs, attn = ObservationExtractor(net.local_dim, width=16, queries=3, heads=2)(tokens, kept)
    assert obs.shape == (2, 3, 16) and attn.shape == (2, 3, n)
    corr = CorrelationPredictor(net.local_dim, 12, width=16, heads=2)(masked_tokens, torch.randn(2, 5, 12),
                                                                      torch.ones(2, 5, dtype=torch.bool))
    assert corr.shape == (2, n, n)


def test_mask_patches_cells_are_vit_patch_tokens_in_order():
    """Exact: a ViT's patch embedding of cell k is token k, so the changed tokens are the masked cells."""
    net = _backbone("vit", 2)
    x = torch.rand(3, 1, 32, 32) + 0.5  # no cell is already zero
    masked, kept = mask_patches(x, _grid("vit", 2), 0.25, torch.Generator().manual_seed(2))
    with torch.no_grad():
        embed = net.net.vit.patch_embedding
        changed = (embed(masked) - embed(x)).abs().amax(-1) > 1e-6
    assert torch.equal(changed, ~kept)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_mask_patches_order_matches_flat(spatial_dims):
    """Cell k holds value k + 1; average-pooling per cell and flattening as every backbone's local map
    (``_flat``, the ResNet and DenseNet order) reads 1..cells, and the masked cells read 0."""
    grid, size = (2, 3, 4)[:spatial_dims], 2
    index = torch.arange(math.prod(grid), dtype=torch.float32).view(1, 1, *grid) + 1
    images = F.interpolate(index, scale_factor=size, mode="nearest").repeat(2, 1, *[1] * spatial_dims)
    masked, kept = mask_patches(images, grid, 0.5)
    pool = F.avg_pool2d if spatial_dims == 2 else F.avg_pool3d
    assert torch.equal(_flat(pool(images, size))[..., 0], index.flatten().expand(2, -1))
    assert torch.equal(_flat(pool(masked, size))[..., 0], torch.where(kept, index.flatten(), 0.0))


# ---------------------------------------------------------------- observation extractor


def test_extractor_attention_is_a_distribution_over_valid_tokens():
    net = ObservationExtractor(6, width=16, queries=4, layers=2, heads=4, dropout=0.1).train()  # dropout spares attn
    tokens, valid = torch.randn(3, 7, 6), torch.rand(3, 7) > 0.4
    valid[:, 0] = True
    valid[2] = False  # no valid token: documented zero row, no NaN
    obs, attn = net(tokens, valid)
    assert (attn >= 0).all() and torch.isfinite(obs).all()
    assert torch.allclose(attn[:2].sum(-1), torch.ones(2, 4), atol=1e-5)
    assert (attn[~valid[:, None, :].expand_as(attn)] == 0).all()
    assert (attn[2] == 0).all()
    full = ObservationExtractor(6, width=16, queries=4, heads=4)(tokens)[1]
    assert torch.allclose(full.sum(-1), torch.ones(3, 4), atol=1e-5)


def test_extractor_ignores_masked_token_values_and_trains_every_parameter():
    net = ObservationExtractor(6, width=16, queries=4, layers=2, heads=4).eval()
    tokens, valid = torch.randn(2, 7, 6), torch.rand(2, 7) > 0.5
    valid[:, 0] = True
    other = torch.where(valid[..., None], tokens, torch.randn(2, 7, 6) * 10)
    obs, attn = net(tokens, valid)
    obs2, attn2 = net(other, valid)
    assert torch.allclose(obs, obs2, atol=1e-5) and torch.allclose(attn, attn2, atol=1e-6)
    (obs * torch.randn_like(obs)).sum().add((attn * torch.randn_like(attn)).sum()).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------- correlation predictor


def test_correlation_gram_ignores_padding_and_follows_the_report():
    net = CorrelationPredictor(6, 5, width=16, heads=4, layers=2).eval()
    tokens, words = torch.randn(3, 4, 6), torch.randn(3, 6, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0] * 6], dtype=torch.bool)  # last: empty report
    corr = net(tokens, words, mask)
    repadded = torch.where(mask[..., None], words, torch.randn(3, 6, 5) * 10)
    assert torch.allclose(corr, net(tokens, repadded, mask), atol=1e-6)
    assert torch.isfinite(corr).all()
    assert torch.allclose(corr, corr.transpose(1, 2), atol=1e-6)
    assert torch.allclose(torch.diagonal(corr, dim1=1, dim2=2), torch.ones(3, 4), atol=1e-5)
    assert not torch.allclose(corr[:2], net(tokens, torch.randn(3, 6, 5), mask)[:2], atol=1e-3)  # real words matter


def test_correlation_trains_every_parameter():
    net = CorrelationPredictor(6, 5, width=16, heads=4)
    corr = net(torch.randn(2, 4, 6), torch.randn(2, 3, 5), torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool))
    (corr * torch.randn_like(corr)).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------- masking


@pytest.mark.parametrize("shape, grid, ratio, n_masked", [
    ((4, 2, 8, 12), (2, 3), 0.5, 3), ((3, 1, 4, 6, 8), (2, 3, 2), 0.75, 9), ((2, 1, 4, 4), (2, 2), 1.0, 3),
    ((2, 1, 4, 4), (2, 2), 0.0, 0),
])
def test_mask_patches_masks_exact_counts_deterministically(shape, grid, ratio, n_masked):
    images = torch.rand(shape) + 0.5
    masked, kept = mask_patches(images, grid, ratio, torch.Generator().manual_seed(3))
    again, kept_again = mask_patches(images, grid, ratio, torch.Generator().manual_seed(3))
    assert torch.equal(masked, again) and torch.equal(kept, kept_again)
    assert ((~kept).sum(1) == n_masked).all() and kept.dtype == torch.bool
    cell = [s // g for s, g in zip(shape[2:], grid)]
    voxels = kept.view(shape[0], 1, *grid)
    for axis, s in enumerate(cell):
        voxels = voxels.repeat_interleave(s, dim=2 + axis)
    voxels = voxels.expand(shape)
    assert torch.equal(masked[voxels], images[voxels]) and (masked[~voxels] == 0).all()


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("build, match", [
    (lambda: ObservationExtractor(8, queries=0), "queries"),
    (lambda: ObservationExtractor(0), "local_dim"),
    (lambda: ObservationExtractor(8, width=10, heads=4), "heads"),
    (lambda: ObservationExtractor(8, dropout=1.5), "dropout"),
    (lambda: CorrelationPredictor(8, 0), "text_dim"),
    (lambda: CorrelationPredictor(8, 4, layers=0), "layers"),
])
def test_bad_options_raise_naming_them(build, match):
    with pytest.raises(MedrepError, match=match):
        build()


def test_bad_inputs_raise_naming_them():
    ext, cor = ObservationExtractor(6, width=8, heads=2), CorrelationPredictor(6, 5, width=8, heads=2)
    ok = torch.ones(2, 3, dtype=torch.bool)
    cases = [
        (lambda: ext(torch.randn(2, 3, 7)), "tokens"),
        (lambda: ext(torch.randn(2, 6)), "tokens"),
        (lambda: ext(torch.randn(2, 3, 6), ok.float()), "token_mask"),
        (lambda: ext(torch.randn(2, 3, 6), ok[:1]), "token_mask"),
        (lambda: cor(torch.randn(2, 4, 6), torch.randn(2, 3, 4), ok), "words"),
        (lambda: cor(torch.randn(2, 4, 6), torch.randn(1, 3, 5), ok[:1]), "words"),
        (lambda: cor(torch.randn(2, 4, 6), torch.randn(2, 3, 5), ok[:, :2]), "word_mask"),
        (lambda: mask_patches(torch.rand(2, 1, 8, 10), (2, 3), 0.5), r"\(2, 3\).*\(8, 10\)"),
        (lambda: mask_patches(torch.rand(2, 1, 8, 9), (2, 3, 1), 0.5), "grid"),
        (lambda: mask_patches(torch.rand(2, 1, 8, 9), (2, 3), 1.5), "ratio"),
        (lambda: mask_patches(torch.rand(8, 9), (2, 3), 0.5), "images"),
    ]
    for call, match in cases:
        with pytest.raises(MedrepError, match=match):
            call()
