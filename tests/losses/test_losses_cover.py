"""COVER's losses against loops over positions, the official formulas, masking and edge cases."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from medrep.errors import MedrepError
from medrep.losses import consistency_loss, cover_loss, vector_loss
from medrep.transforms.displacement import inside_mask, warp

# ---------------------------------------------------------------- naive references


def _positions(mask):
    b_size, _, *spatial = mask.shape
    for b in range(b_size):
        for p in itertools.product(*(range(s) for s in spatial)):
            if mask[(b, 0, *p)]:
                yield (b, slice(None), *p)


def naive_vec(pred, true, mask):
    terms = [sum((pred[i][c] - true[i][c]).abs() for c in range(pred.shape[1])) for i in _positions(mask)]
    return torch.stack(terms).mean()


def naive_con(f_b, f_a, flow, mask):
    moved = warp(f_a, flow)
    terms = []
    for i in _positions(mask):
        a, b = f_b[i], moved[i]
        terms.append(1 - (a * b).sum() / (a.norm().clamp_min(1e-12) * b.norm().clamp_min(1e-12)))
    return torch.stack(terms).mean()


def _data(spatial, channels=3, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = len(spatial)
    pred = torch.randn(batch, n, *spatial, generator=g, dtype=torch.float64).requires_grad_(True)
    true = torch.randn(batch, n, *spatial, generator=g, dtype=torch.float64) * 1.5
    f_b = torch.randn(batch, channels, *spatial, generator=g, dtype=torch.float64).requires_grad_(True)
    f_a = torch.randn(batch, channels, *spatial, generator=g, dtype=torch.float64).requires_grad_(True)
    return pred, true, inside_mask(true), f_b, f_a


SPATIAL = [(5, 6), (3, 4, 5)]


@pytest.mark.parametrize("spatial", SPATIAL)
def test_losses_match_naive(spatial):
    pred, true, mask, f_b, f_a = _data(spatial)
    assert 0 < mask.sum() < mask.numel()
    out = cover_loss(pred, true, mask, f_b, f_a)
    vec, con = naive_vec(pred, true, mask), naive_con(f_b, f_a, true, mask)
    assert set(out) == {"loss", "vec", "con"} and out["loss"].dtype == torch.float64
    assert out["vec"].item() == pytest.approx(vec.item(), rel=1e-12)
    assert out["con"].item() == pytest.approx(con.item(), rel=1e-12)
    assert out["loss"].item() == pytest.approx(vec.item() + con.item(), rel=1e-12)
    got = torch.autograd.grad(out["loss"], (pred, f_b, f_a))
    want = torch.autograd.grad(vec + con, (pred, f_b, f_a))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("spatial", SPATIAL)
def test_losses_equal_official_formulas(spatial):
    """``partical_MAE`` and ``1 + partical_COS`` of YutingHe-list/COVER utils/losses.py (mask as float)."""
    pred, true, mask, f_b, f_a = _data(spatial, seed=3)
    m = mask.double()
    mae = torch.sum(torch.abs(true - pred) * m) / torch.sum(m)
    cos = -torch.sum(torch.sum(F.normalize(f_b, dim=1) * F.normalize(warp(f_a, true), dim=1), dim=1, keepdim=True) * m) / torch.sum(m)
    assert vector_loss(pred, true, mask).item() == pytest.approx(mae.item(), rel=1e-12)
    assert consistency_loss(f_b, f_a, true, mask).item() == pytest.approx(1 + cos.item(), rel=1e-12)


@pytest.mark.parametrize("spatial", SPATIAL)
def test_masked_positions_are_ignored(spatial):
    """Values at masked positions, even non-finite ones, change neither the loss nor its gradient."""
    pred, true, mask, f_b, f_a = _data(spatial, seed=1)
    base = cover_loss(pred, true, mask, f_b, f_a)
    grads = torch.autograd.grad(base["loss"], (pred, f_b))
    outside = ~mask
    pred2 = torch.where(outside, torch.full_like(pred, float("nan")), pred).detach().requires_grad_(True)
    f_b2 = torch.where(outside, torch.full_like(f_b, float("inf")), f_b).detach().requires_grad_(True)
    true2 = torch.where(outside, true + 100.0, true)
    assert torch.equal(inside_mask(true2), mask)
    moved = cover_loss(pred2, true2, mask, f_b2, f_a)
    for key in base:
        assert moved[key].item() == pytest.approx(base[key].item(), rel=1e-12)
    for g, h in zip(grads, torch.autograd.grad(moved["loss"], (pred2, f_b2))):
        assert torch.isfinite(h).all()
        torch.testing.assert_close(h, g)


@pytest.mark.parametrize("spatial", SPATIAL)
def test_identical_views_and_zero_flow_give_zero(spatial):
    f = torch.randn(2, 4, *spatial) + 0.5
    zero = torch.zeros(2, len(spatial), *spatial)
    out = cover_loss(zero, zero, inside_mask(zero), f, f.clone())
    assert out["vec"].item() == 0.0
    assert out["con"].item() == pytest.approx(0.0, abs=1e-6)


def test_empty_mask_gives_zero_with_gradient():
    pred, true, mask, f_b, f_a = _data((4, 5))
    out = cover_loss(pred, true, torch.zeros_like(mask), f_b, f_a)
    assert out["loss"].item() == 0.0 and out["vec"].item() == 0.0 and out["con"].item() == 0.0
    out["loss"].backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred)) and torch.equal(f_b.grad, torch.zeros_like(f_b))


def test_bf16_autocast_computes_in_float32():
    conv = torch.nn.Conv2d(2, 3, 1)
    x = torch.randn(2, 2, 6, 6)
    flow = torch.randn(2, 2, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        f = conv(x)
        out = cover_loss(f[:, :2], flow, inside_mask(flow), f, f.flip(-1))
    assert f.dtype == torch.bfloat16 and out["loss"].dtype == torch.float32
    out["loss"].backward()
    assert torch.isfinite(conv.weight.grad).all()


def test_bad_arguments():
    pred, true, mask, f_b, f_a = _data((4, 5))
    with pytest.raises(MedrepError, match="bool"):
        vector_loss(pred, true, mask.double())
    with pytest.raises(MedrepError, match="mask"):
        vector_loss(pred, true, mask[:1])
    with pytest.raises(MedrepError, match="pred and true"):
        vector_loss(pred, true[..., :4], mask)
    with pytest.raises(MedrepError, match="flow"):
        consistency_loss(f_b, f_a, true[:, :1], mask)
    with pytest.raises(MedrepError, match="f_b and f_a"):
        consistency_loss(f_b, f_a[:, :2], true, mask)
