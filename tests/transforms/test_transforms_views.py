import math

import pytest
import torch
import torch.nn.functional as F

from medrep.errors import RecipeError
from medrep.transforms import (
    RandomCutout,
    RandomGaussianBlur,
    RandomGaussianNoise,
    RandomIntensity,
    RandomResizedCropAffine,
    ViewAugment,
    apply_affine,
    gaussian_blur,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


OFF = dict(
    crop_scale=(1.0, 1.0), rotate_deg=0.0, flip=False, brightness=0.0, contrast=0.0, gamma=0.0,
    noise_std=0.0, blur_prob=0.0, cutout_prob=0.0,
)


def batch(sd, b=4, n=16, c=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((b, c) + (n,) * sd, generator=g)


@pytest.mark.parametrize("sd", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_shape_and_dtype_kept(sd, dtype):
    x = batch(sd, c=2).to(dtype)
    aug = ViewAugment(sd, cutout_prob=0.5, blur_prob=1.0)
    y = aug(x)
    assert y.shape == x.shape and y.dtype == dtype
    assert torch.isfinite(y.float()).all()


def test_non_square_2d_shape():
    x = torch.rand(3, 1, 20, 33)
    assert ViewAugment(2, cutout_prob=1.0)(x).shape == x.shape


@pytest.mark.parametrize("sd", [2, 3])
def test_identity_when_everything_off(sd):
    x = batch(sd)
    torch.testing.assert_close(ViewAugment(sd, **OFF)(x), x, atol=1e-5, rtol=0)
    # the resampling path itself is exact for an identity matrix
    theta = torch.eye(sd, sd + 1).expand(x.shape[0], -1, -1)
    torch.testing.assert_close(apply_affine(x, theta), x, atol=1e-5, rtol=0)
    # crop scale (1, 1) is the whole image whatever the aspect-ratio range
    crop = RandomResizedCropAffine(sd, scale=(1.0, 1.0), ratio=(0.5, 2.0), rotate_deg=0.0, flip=False)
    theta = crop.sample_theta(x.shape)
    torch.testing.assert_close(theta, torch.eye(sd, sd + 1).expand_as(theta), atol=1e-6, rtol=0)


@pytest.mark.parametrize("sd", [2, 3])
def test_pure_flip_is_exact(sd):
    x = batch(sd, n=9)
    flip = RandomResizedCropAffine(sd, scale=(1.0, 1.0), rotate_deg=0.0, flip=True, flip_prob=1.0)
    torch.testing.assert_close(flip(x), x.flip(list(range(2, 2 + sd))), atol=1e-5, rtol=0)


def test_flip_is_per_axis_random():
    x = batch(2, b=64, n=8)
    y = RandomResizedCropAffine(2, scale=(1.0, 1.0), rotate_deg=0.0, flip=True)(x)
    kinds = set()
    for xi, yi in zip(x, y):
        for k, dims in enumerate([[], [-1], [-2], [-2, -1]]):
            if torch.allclose(yi, xi.flip(dims) if dims else xi, atol=1e-5):
                kinds.add(k)
    assert kinds == {0, 1, 2, 3}


@pytest.mark.parametrize("n", [8, 9])
def test_rotation_90_matches_rot90(n):
    x = batch(2, n=n)
    for deg, k in ((90.0, 1), (-90.0, -1)):
        rot = RandomResizedCropAffine(2, scale=(1.0, 1.0), rotate_deg=(deg, deg), flip=False)
        torch.testing.assert_close(rot(x), torch.rot90(x, k, dims=(-2, -1)), atol=1e-4, rtol=0)


def test_rotation_3d_is_a_rotation():
    crop = RandomResizedCropAffine(3, scale=(1.0, 1.0), rotate_deg=30.0, flip=True)
    lin = crop.sample_theta((16, 1, 8, 8, 8))[:, :, :3]
    eye = torch.eye(3).expand_as(lin)
    torch.testing.assert_close(lin @ lin.transpose(1, 2), eye, atol=1e-5, rtol=0)
    assert not torch.allclose(lin.abs(), eye, atol=1e-3)


def test_crop_zooms_in():
    n = 64
    x = torch.zeros(16, 1, n, n)
    x[:, :, 24:40, 24:40] = 1.0  # 16x16 centred square
    crop = RandomResizedCropAffine(2, scale=(0.25, 0.25), ratio=(1.0, 1.0), rotate_deg=0.0, flip=False)
    theta = crop.sample_theta(x.shape)
    torch.testing.assert_close(theta[:, :, :2], 0.5 * torch.eye(2).expand(16, 2, 2))
    theta[:, :, 2] = 0.0  # centred crop: the square doubles its side
    y = apply_affine(x, theta)
    assert (y[:, :, 17:47, 17:47] > 0.99).all()  # edges are half-pixel blends
    assert (y[:, :, :15] < 1e-6).all() and (y[:, :, 49:] < 1e-6).all()
    # with random centres the square still grows on average and moves around
    y = crop(x)
    assert y.sum((1, 2, 3)).mean() > 2.0 * x[0].sum()
    assert not torch.allclose(y[0], y[1])


def test_crop_area_fraction_and_ratio():
    crop = RandomResizedCropAffine(3, scale=(0.3, 0.6), ratio=(0.5, 2.0), rotate_deg=0.0, flip=False)
    theta = crop.sample_theta((512, 1, 8, 8, 8))
    sides = torch.diagonal(theta[:, :, :3], dim1=1, dim2=2)
    area = sides.prod(1)
    assert (sides <= 1 + 1e-6).all()
    assert area.min() >= 0.3 - 1e-5 and area.max() <= 0.6 + 1e-5
    assert (theta[:, :, 3].abs() <= 1 - sides + 1e-6).all()  # unrotated box stays inside


@pytest.mark.parametrize("sd", [2, 3])
def test_per_sample_params_differ(sd):
    x = batch(sd, b=1).expand(6, *batch(sd, b=1).shape[1:]).contiguous()
    for module in (
        RandomResizedCropAffine(sd),
        RandomIntensity(sd),
        RandomGaussianBlur(sd, prob=1.0),
        RandomGaussianNoise(sd, prob=1.0),
        ViewAugment(sd),
    ):
        y = module(x)
        diffs = [(y[0] - y[i]).abs().max().item() for i in range(1, 6)]
        assert min(diffs) > 1e-4, type(module).__name__


@pytest.mark.parametrize("sd", [2, 3])
def test_reproducible(sd):
    x = batch(sd)
    aug = ViewAugment(sd, cutout_prob=0.5)
    torch.manual_seed(123)
    a = aug(x)
    torch.manual_seed(123)
    b = aug(x)
    c = aug(x)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.allclose(b, c)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    torch.testing.assert_close(aug(x, generator=g1), aug(x, generator=g2), atol=0, rtol=0)


def _naive_blur(x, sigma, sd):
    r = max(1, math.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    out = x
    conv = F.conv2d if sd == 2 else F.conv3d
    for axis in range(sd):
        shape = [1, 1] + [1] * sd
        shape[2 + axis] = 2 * r + 1
        pad = [0, 0] * sd
        pad[2 * (sd - 1 - axis)] = pad[2 * (sd - 1 - axis) + 1] = r
        out = conv(F.pad(out, pad, mode="reflect"), k.reshape(shape))
    return out


@pytest.mark.parametrize("sd", [2, 3])
def test_blur_matches_reference_and_smooths(sd):
    x = batch(sd, b=3, n=12)
    for sigma in (0.5, 1.3):
        blur = RandomGaussianBlur(sd, sigma=(sigma, sigma), prob=1.0)
        y = blur(x)
        ref = torch.cat([_naive_blur(xi[None], sigma, sd) for xi in x])
        torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)
        assert y.var() < 0.5 * x.var()
        torch.testing.assert_close(y.flatten(1).mean(1), x.flatten(1).mean(1), atol=0.02, rtol=0)
    # per-sample sigmas in one call agree with one-by-one blurs
    sig = torch.tensor([0.3, 1.0, 2.0])
    y = gaussian_blur(x, sig, sd)
    for i in range(3):
        ref = gaussian_blur(x[i : i + 1], sig[i], sd, truncate=3.0 * 2.0 / sig[i].item())
        torch.testing.assert_close(y[i : i + 1], ref, atol=1e-5, rtol=0)
    assert y[2].var() < y[1].var() < y[0].var()


def test_blur_prob():
    x = batch(2, b=200, n=8)
    y = RandomGaussianBlur(2, prob=0.5)(x)
    touched = (y - x).flatten(1).abs().amax(1) > 1e-6
    assert 60 < touched.sum() < 140


def test_noise():
    x = torch.full((64, 1, 32, 32), 0.5)
    y = RandomGaussianNoise(2, std=0.1, prob=1.0)(x)
    std = (y - x).flatten(1).std(1)
    assert std.max() <= 0.11 and std.min() >= 0.0 and std.std() > 0.01
    assert abs(std.mean().item() - 0.05) < 0.015
    assert torch.equal(RandomGaussianNoise(2, std=0.0, prob=1.0)(x), x)


def test_intensity_parts():
    x = batch(2, b=32)
    d = RandomIntensity(2, brightness=0.3, contrast=0, gamma=0)(x) - x
    per = d.flatten(1)
    assert (per.max(1).values - per.min(1).values).max() < 1e-5
    assert per.abs().max() <= 0.3 + 1e-6 and per[:, 0].std() > 0.05
    y = RandomIntensity(2, brightness=0, contrast=0.5, gamma=0)(x)
    torch.testing.assert_close(y.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-5, rtol=0)
    ratio = y.std((1, 2, 3)) / x.std((1, 2, 3))
    assert ratio.min() >= 0.5 - 1e-4 and ratio.max() <= 1.5 + 1e-4 and ratio.std() > 0.05
    y = RandomIntensity(2, brightness=0, contrast=0, gamma=0.5)(x * 1.4 - 0.2)
    assert y.min() >= 0 and y.max() <= 1


def test_cutout_fraction():
    x = torch.ones(2000, 1, 32, 32)
    y = RandomCutout(2, prob=1.0, n_holes=1, size=0.25)(x)
    assert ((y == 0).flatten(1).sum(1) == 64).all()  # 8x8 box inside the image
    y = RandomCutout(2, prob=0.5, n_holes=1, size=0.25)(x)
    frac = (y == 0).float().mean().item()
    assert abs(frac - 0.5 * 64 / 1024) < 0.005
    x3 = torch.ones(300, 1, 8, 8, 8)
    y3 = RandomCutout(3, prob=1.0, n_holes=2, size=(0.25, 0.5))(x3)
    dropped = (y3 == 0).flatten(1).sum(1)
    assert dropped.min() >= 8 and dropped.max() <= 128 and dropped.float().std() > 1


def test_recipe_defaults_build():
    from medrep.recipe import DEFAULTS

    aug = ViewAugment(2, **DEFAULTS["augment"])
    assert aug(batch(2)).shape == batch(2).shape


@pytest.mark.parametrize(
    "key,value",
    [
        ("noise_std", -0.1),
        ("crop_scale", [0.0, 1.0]),
        ("crop_scale", [0.5, 1.2]),
        ("crop_scale", [0.8, 0.5]),
        ("crop_scale", 0.5),
        ("crop_scale", "big"),
        ("rotate_deg", -5),
        ("rotate_deg", 400),
        ("flip", "yes"),
        ("brightness", -1),
        ("contrast", "a"),
        ("gamma", -0.2),
        ("blur_prob", 1.5),
        ("blur_sigma", [0.0, 1.0]),
        ("blur_sigma", [2.0, 1.0]),
        ("cutout_prob", -0.1),
        ("cutout_prob", True),
        ("noise_std", float("nan")),
    ],
)
def test_invalid_values_raise_recipe_error(key, value):
    with pytest.raises(RecipeError) as err:
        ViewAugment(2, **{key: value})
    assert err.value.where == f"augment.{key}"
    assert str(err.value).startswith(f"augment.{key}:")


def test_unknown_key_and_bad_spatial_dims():
    with pytest.raises(TypeError):
        ViewAugment(2, colour_jitter=0.4)
    with pytest.raises(RecipeError):
        ViewAugment(4)
    with pytest.raises(ValueError):
        ViewAugment(3)(torch.rand(2, 1, 8, 8))


def test_augment_options_are_keyword_only():
    with pytest.raises(TypeError):
        ViewAugment(2, (0.5, 1.0))  # crop_scale by position: refused, so a recipe key always names its option
