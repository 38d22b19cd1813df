import math

import pytest
import torch

from medrep.errors import RecipeError
from medrep.transforms.displacement import (
    CoverViews,
    affine_flow,
    identity_grid,
    inside_mask,
    invert_affine,
    noise_blocks,
    random_affine,
    warp,
)

OFF = dict(noise_std=0.0, blur_prob=0.0, contrast=0.0, brightness=0.0, blocks=0)


def blob(shape: tuple[int, ...], sigma: float = 4.0) -> torch.Tensor:
    """A smooth (1, 1, *shape) image: bilinear resampling errs by O(1 / sigma^2)."""
    grid = identity_grid(shape)
    c = torch.tensor([(s - 1) / 2 for s in shape]).reshape(-1, *([1] * len(shape)))
    offset = torch.tensor([1.5, -2.0, 1.0][: len(shape)]).reshape_as(c)
    return torch.exp(-((grid - c - offset) ** 2).sum(0) / (2 * sigma**2))[None, None]


@pytest.mark.parametrize("sd,size", [(2, 32), (3, 16)])
def test_inverse_undoes_the_warp(sd, size):
    shape = (size,) * sd
    g = torch.Generator().manual_seed(0)
    A, t = random_affine(4, shape, rotate_deg=25.0, scale=(0.8, 1.2), translate=0.1, shear_deg=8.0, generator=g)
    A_inv, t_inv = invert_affine(A, t)
    fwd, back = affine_flow(A, t, shape), affine_flow(A_inv, t_inv, shape)
    # composing the fields: p -> p + back(p) -> (p + back(p)) + fwd(p + back(p)) = p; bilinear is exact on affine fields
    ok = inside_mask(back)
    composed = back + warp(fwd, back)
    assert ok.float().mean() > 0.3
    torch.testing.assert_close(composed * ok, torch.zeros_like(composed), atol=1e-3, rtol=0)
    x = blob(shape).expand(4, 1, *shape)
    there_and_back = warp(warp(x, fwd), back)
    valid = ok & (warp(inside_mask(fwd).float(), back) > 0.999)
    assert valid.float().mean() > 0.3
    err = (there_and_back - x).abs()[valid]
    bound = 2 * sd / (8 * 4.0**2)  # two resamplings, (1/8) h^2 |f''| per axis, |f''| <= 1 / sigma^2 for the blob
    assert err.max() < bound and err.mean() < bound / 5


def test_identity_parameters_give_zero_field():
    A, t = random_affine(3, (8, 9), rotate_deg=0.0, scale=1.0, translate=0.0, shear_deg=0.0)
    torch.testing.assert_close(A, torch.eye(2).expand(3, 2, 2))
    assert affine_flow(A, t, (8, 9)).abs().max() < 1e-5


@pytest.mark.parametrize("sd", [2, 3])
def test_pure_translation(sd):
    shape = (12, 10, 11)[:sd]
    shift = torch.tensor([3.0, -2.0, 1.0][:sd])
    flow = affine_flow(torch.eye(sd)[None], shift[None], shape)
    torch.testing.assert_close(flow, shift.reshape(1, sd, *([1] * sd)).expand_as(flow), atol=1e-5, rtol=0)
    x = torch.rand(2, 3, *shape, generator=torch.Generator().manual_seed(1))
    y = warp(x, flow)
    dst = [slice(None), slice(None)] + [slice(0, s - int(d)) if d > 0 else slice(-int(d), s) for s, d in zip(shape, shift)]
    src = [slice(None), slice(None)] + [slice(int(d), s) if d > 0 else slice(0, s + int(d)) for s, d in zip(shape, shift)]
    torch.testing.assert_close(y[tuple(dst)], x[tuple(src)], atol=1e-5, rtol=0)
    mask = inside_mask(flow)
    expected = torch.zeros_like(mask)
    expected[tuple(dst)] = True
    assert torch.equal(mask, expected)
    assert y[~mask.expand_as(y)].abs().max() < 1e-5


@pytest.mark.parametrize("size", [8, 9])
def test_rotation_by_90_degrees(size):
    quarter = torch.tensor([[0.0, -1.0], [1.0, 0.0]])  # _rotation_matrices at +90 degrees
    x = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(2))
    flow = affine_flow(quarter[None], torch.zeros(1, 2), (size, size))
    assert inside_mask(flow).all()
    torch.testing.assert_close(warp(x, flow), torch.rot90(x, k=-1, dims=(-2, -1)), atol=1e-5, rtol=0)
    # a rectangle: only the central square stays inside
    x = torch.rand(1, 1, 6, 10)
    flow = affine_flow(quarter[None], torch.zeros(1, 2), (6, 10))
    mask = inside_mask(flow)[0, 0]
    assert mask[:, 2:8].all() and not mask[:, :2].any() and not mask[:, 8:].any()
    torch.testing.assert_close(warp(x, flow)[..., 2:8], torch.rot90(x[..., 2:8], k=-1, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_3d_rotation_about_depth_axis():
    quarter = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    x = torch.rand(1, 2, 5, 8, 8)
    flow = affine_flow(quarter[None], torch.zeros(1, 3), (5, 8, 8))
    assert flow[:, 0].abs().max() < 1e-5
    torch.testing.assert_close(warp(x, flow), torch.rot90(x, k=-1, dims=(-2, -1)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("sd", [2, 3])
def test_random_affine_ranges(sd):
    g = torch.Generator().manual_seed(3)
    A, t = random_affine(64, (20,) * sd, rotate_deg=30.0, scale=1.0, translate=0.0, shear_deg=0.0, generator=g)
    eye = torch.eye(sd).expand_as(A)
    torch.testing.assert_close(A @ A.transpose(1, 2), eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(A), torch.ones(64), atol=1e-5, rtol=0)
    if sd == 2:
        angle = torch.atan2(A[:, 1, 0], A[:, 0, 0]) * 180 / math.pi
        assert angle.abs().max() <= 30.0 + 1e-4 and angle.abs().max() > 20
    A, t = random_affine(64, (20, 10, 16)[:sd], rotate_deg=0.0, scale=(0.5, 1.5), translate=0.25, shear_deg=0.0, generator=g)
    diag = torch.diagonal(A, dim1=1, dim2=2)
    assert diag.min() >= 0.5 and diag.max() <= 1.5 and not torch.allclose(diag[:, 0], diag[:, 1])
    assert (t.abs() <= 0.25 * torch.tensor([20.0, 10.0, 16.0][:sd])).all()
    A, _ = random_affine(16, (20,) * sd, 0.0, (0.5, 1.5), 0.0, 0.0, generator=g, isotropic_scale=True)
    diag = torch.diagonal(A, dim1=1, dim2=2)
    torch.testing.assert_close(diag, diag[:, :1].expand_as(diag))
    A, _ = random_affine(64, (20,) * sd, rotate_deg=0.0, scale=1.0, translate=0.0, shear_deg=10.0, generator=g)
    torch.testing.assert_close(torch.linalg.det(A), torch.ones(64), atol=1e-5, rtol=0)
    assert (A - torch.eye(sd)).abs().max() > 0.05


@pytest.mark.parametrize("sd,size", [(2, 32), (3, 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cover_views_outputs(sd, size, dtype):
    shape = (size,) * sd
    x = torch.rand(3, 2, *shape, dtype=dtype, generator=torch.Generator().manual_seed(4))
    out = CoverViews(sd)(x, generator=torch.Generator().manual_seed(5))
    assert set(out) == {"view_a", "view_b", "flow", "mask"}
    assert out["view_a"].shape == x.shape and out["view_a"].dtype == dtype
    assert out["view_b"].shape == x.shape and out["view_b"].dtype == dtype
    assert out["flow"].shape == (3, sd, *shape) and out["flow"].dtype == dtype
    assert out["mask"].shape == (3, 1, *shape) and out["mask"].dtype == torch.bool
    torch.testing.assert_close(out["view_b"], warp(x, out["flow"]), atol=0, rtol=0)
    pos = identity_grid(shape, dtype=dtype) + out["flow"]
    sizes = torch.tensor(shape, dtype=dtype).reshape(1, sd, *([1] * sd))
    inside = ((pos >= 0) & (pos <= sizes - 1)).all(1, keepdim=True)
    assert torch.equal(out["mask"], inside)
    far = ((pos <= -1) | (pos >= sizes)).any(1, keepdim=True)
    assert (out["view_b"][far.expand_as(x)] == 0).all()
    assert 0.1 < out["mask"].float().mean() < 1.0
    assert not torch.equal(out["view_a"], x)
    assert not any(t.requires_grad for t in out.values())


def test_cover_views_defaults_and_appearance_off():
    assert CoverViews(2).scale == (0.25, 1.75) and CoverViews(2).rotate_deg == 30.0 and CoverViews(2).translate == 0.3
    v3 = CoverViews(3)
    assert (v3.rotate_deg, v3.scale, v3.translate, v3.shear_deg) == (15.0, (0.75, 1.25), 0.1, 10.0)
    assert CoverViews(3, rotate_deg=5.0).rotate_deg == 5.0
    x = torch.rand(2, 1, 16, 16)
    out = CoverViews(2, appearance=OFF)(x)
    torch.testing.assert_close(out["view_a"], x, atol=0, rtol=0)
    out = CoverViews(2, rotate_deg=0.0, scale=1.0, translate=0.0, shear_deg=0.0, appearance=OFF)(x)
    assert out["flow"].abs().max() < 1e-5 and out["mask"].all()
    torch.testing.assert_close(out["view_b"], x, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "kwargs,where",
    [
        (dict(rotate_deg=-1.0), "rotate_deg"),
        (dict(scale=(0.0, 1.0)), "scale"),
        (dict(shear_deg=90.0), "shear_deg"),
        (dict(appearance={"nois_std": 0.1}), "appearance"),
        (dict(appearance={"blur_sigma": (0.0, 1.0)}), "appearance"),
    ],
)
def test_cover_views_bad_config(kwargs, where):
    with pytest.raises(RecipeError) as info:
        CoverViews(2, **kwargs)
    assert info.value.where == where


@pytest.mark.parametrize("sd,size", [(2, 32), (3, 16)])
def test_cover_views_reproducible(sd, size):
    x = torch.rand(2, 1, *(size,) * sd)
    views = CoverViews(sd)
    a = views(x, generator=torch.Generator().manual_seed(7))
    b = views(x, generator=torch.Generator().manual_seed(7))
    c = views(x, generator=torch.Generator().manual_seed(8))
    for key in a:
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["flow"], c["flow"]) and not torch.equal(a["view_a"], c["view_a"])
    torch.manual_seed(9)
    d = views(x)
    torch.manual_seed(9)
    assert torch.equal(d["flow"], views(x)["flow"])


def test_noise_blocks():
    x = torch.full((64, 2, 30, 30), -1.0)
    g = torch.Generator().manual_seed(0)
    y = noise_blocks(x, max_blocks=10, continue_prob=0.95, size=(0.1, 0.133), generator=g)
    changed = y != -1.0
    assert ((y[changed] >= 0) & (y[changed] <= 1)).all()
    assert torch.equal(changed[:, 0], changed[:, 1]) and torch.equal(y[:, 0], y[:, 1])
    frac = changed[:, 0].float().mean((1, 2))
    assert frac.max() <= 10 * 16 / 900 + 1e-6  # at most 10 blocks of at most 4 x 4 voxels
    assert (frac > 0).float().mean() > 0.8
    assert torch.equal(noise_blocks(x, max_blocks=0), x)
    one = noise_blocks(x, max_blocks=1, continue_prob=1.0, size=0.1, generator=g)
    assert ((one != -1.0)[:, 0].sum((1, 2)) == 9).all()
