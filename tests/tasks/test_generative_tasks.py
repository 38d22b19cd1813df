"""Each generative task against what its summary promises, on images simple enough to know the answer
(a constant, a ramp, a point, the phantom): the target is the clean image, the noise has the stated
statistics, the missing region is where the input is zeroed, binning is blockwise constant ..."""

import time

import numpy as np
import pytest
from helpers import phantom

from medrep.tasks import generative, get_task, mismatch, task_names

GENERATIVE = task_names("generative")
RESTORING = [n for n in GENERATIVE if n != "colourise"]  # target = the clean image


def run(name, image, strength, seed=0):
    inp, tgt = get_task(name)(np.asarray(image, np.float32), None, np.random.default_rng(seed), strength)
    return inp[0] if inp.shape[0] == 1 else inp, tgt[0] if tgt.shape[0] == 1 else tgt


def flat(value, size=128):
    return np.full((size, size), value, np.float32)


def test_the_family_has_at_least_eleven_tasks_each_with_a_physical_range():
    assert len(GENERATIVE) >= 11
    assert all(any(c.isdigit() for c in get_task(n).summary) for n in GENERATIVE)


@pytest.mark.parametrize("name", RESTORING)
@pytest.mark.parametrize("strength", [0.0, 0.4, 1.0])
def test_target_is_the_clean_image_and_strength_zero_degrades_nothing(name, strength):
    image = phantom()[0]
    inp, tgt = run(name, image, strength, seed=5)
    np.testing.assert_array_equal(tgt, image)
    if strength == 0:
        np.testing.assert_array_equal(inp, image)
    assert inp.min() >= 0 and inp.max() <= 1


@pytest.mark.parametrize("name", GENERATIVE)
def test_failure_keeps_the_input_and_the_random_choices(name):
    image = phantom()[0]
    task = get_task(name)
    inp, tgt = task(image, None, np.random.default_rng(4), 0.7)
    bad_inp, bad_tgt = task.failure(image, None, np.random.default_rng(4), 0.7)
    np.testing.assert_array_equal(bad_inp, inp)
    np.testing.assert_array_equal(bad_tgt, task(mismatch(image), None, np.random.default_rng(4), 0.7)[1])
    assert not np.array_equal(bad_tgt, tgt)


def test_generators_are_fast_on_a_64_pixel_image():
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    for name in GENERATIVE:
        task, times = get_task(name), []
        for seed in range(10):
            start = time.perf_counter()
            task(image, None, np.random.default_rng(seed), 0.8)
            times.append(time.perf_counter() - start)
        assert np.median(times) < 5e-3, f"{name}: {np.median(times) * 1e3:.2f} ms"


# ---------------------------------------------------------------- noise


@pytest.mark.parametrize("strength", [0.1, 0.2, 0.4])
def test_gaussian_noise_std_is_0_3_strength(strength):
    inp, tgt = run("denoise_gaussian", flat(0.5), strength)
    assert np.std(inp - tgt) == pytest.approx(0.3 * strength, rel=0.03)
    assert np.mean(inp - tgt) == pytest.approx(0, abs=0.01 * strength)


def test_poisson_noise_variance_is_intensity_over_photons():
    image = flat(0.6)
    image[:, :64] = 0.15
    inp, _ = run("denoise_poisson", image, 0.5)  # 80 photons at intensity 1
    for value, part in ((0.15, inp[:, :64]), (0.6, inp[:, 64:])):
        assert part.mean() == pytest.approx(value, rel=0.02)  # unbiased
        assert part.var() == pytest.approx(value / 80, rel=0.08)
    # counts: the input is a whole number of photons over the dose
    np.testing.assert_allclose(inp * 80, np.round(inp * 80), atol=1e-3)


def test_speckle_is_multiplicative_with_std_half_the_strength():
    image = flat(0.4)
    image[:, :64] = 0.2
    inp, tgt = run("denoise_speckle", image, 1.0)
    ratio = inp / tgt
    assert ratio.mean() == pytest.approx(1, abs=0.02)
    assert ratio[:, :64].std() == pytest.approx(0.5, rel=0.05)
    assert ratio[:, 64:].std() == pytest.approx(0.5, rel=0.05)  # the same contrast at twice the intensity


def test_impulse_noise_hits_its_fraction_with_black_and_white_pixels():
    inp, tgt = run("denoise_impulse", flat(0.5), 0.5)
    hit = inp != tgt
    assert hit.mean() == pytest.approx(0.15, abs=0.01)
    assert set(np.unique(inp[hit])) == {0.0, 1.0}
    assert (inp[hit] == 1).mean() == pytest.approx(0.5, abs=0.05)
    more, _ = run("denoise_impulse", flat(0.5), 1.0)
    assert (more[hit] == inp[hit]).all()  # the same seed hits a superset at a higher strength


def test_rician_noise_lifts_the_dark_background_to_a_rayleigh_floor():
    image = flat(0.0)
    image[:, 64:] = 0.6
    inp, _ = run("denoise_rician", image, 1.0)  # sigma 0.2
    assert inp[:, :64].mean() == pytest.approx(0.2 * np.sqrt(np.pi / 2), rel=0.03)
    assert inp[:, 64:].mean() == pytest.approx(np.sqrt(0.6**2 + 0.2**2), rel=0.03)  # bright: ~ sqrt(A^2 + sigma^2)


# ---------------------------------------------------------------- blur and resolution


def point(size=65):
    image = np.zeros((size, size), np.float32)
    image[size // 2, size // 2] = 1
    return image


def psf_moments(psf):
    y, x = np.mgrid[0: psf.shape[0], 0: psf.shape[1]]
    w = psf / psf.sum()
    my, mx = (w * y).sum(), (w * x).sum()
    cov = np.array([[(w * (y - my) ** 2).sum(), (w * (y - my) * (x - mx)).sum()],
                    [(w * (y - my) * (x - mx)).sum(), (w * (x - mx) ** 2).sum()]])
    return (my, mx), np.linalg.eigvalsh(cov)


@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_gaussian_blur_spreads_a_point_to_sigma_3_strength(strength):
    inp, _ = run("deblur_gaussian", point(), strength)
    assert inp.sum() == pytest.approx(1, abs=1e-4)
    centre, var = psf_moments(inp)
    np.testing.assert_allclose(centre, 32, atol=1e-3)
    np.testing.assert_allclose(var, (3 * strength) ** 2, rtol=0.02)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_motion_blur_spreads_a_point_along_one_line_of_12_strength_pixels(seed):
    inp, _ = run("deblur_motion", point(), 1.0, seed)
    assert inp.sum() == pytest.approx(1, abs=1e-4)
    centre, (minor, major) = psf_moments(inp)
    np.testing.assert_allclose(centre, 32, atol=0.05)
    assert major == pytest.approx(12**2 / 12, rel=0.1)  # a uniform segment of length L: variance L^2 / 12
    assert minor < 0.3


def test_line_kernel_follows_its_angle():
    flat_line = generative.line_kernel(8.0, 0.0)
    assert flat_line.sum() == pytest.approx(1)
    assert flat_line[flat_line.shape[0] // 2].sum() == pytest.approx(1)  # all in the middle row
    upright = generative.line_kernel(8.0, np.pi / 2)
    assert upright[:, upright.shape[1] // 2].sum() == pytest.approx(1)


@pytest.mark.parametrize(("strength", "factor"), [(0.25, 2), (0.5, 3), (1.0, 4)])
def test_super_resolution_input_is_blockwise_constant_at_the_factor(strength, factor):
    image = np.random.default_rng(1).random((48, 48)).astype(np.float32)
    inp, _ = run("super_resolution", image, strength, seed=3)
    edges = []
    for axis in (0, 1):
        changes = np.flatnonzero(np.abs(np.diff(inp, axis=axis)).max(axis=1 - axis) > 0) + 1  # first index of each block
        assert len(changes) >= 48 // factor - 1
        assert (np.diff(changes) == factor).all(), changes
        edges.append(changes[0])
    r, c = edges  # an interior block holds the mean of the image over it
    np.testing.assert_allclose(inp[r: r + factor, c: c + factor], image[r: r + factor, c: c + factor].mean(), atol=1e-6)


# ---------------------------------------------------------------- missing data


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_inpaint_box_zeroes_one_box_that_grows_with_strength(seed):
    image = 0.2 + 0.6 * np.random.default_rng(9).random((48, 48)).astype(np.float32)  # never 0 itself
    boxes = []
    for strength in (0.5, 1.0):
        inp, _ = run("inpaint_box", image, strength, seed)
        hole = inp == 0
        rows, cols = np.flatnonzero(hole.any(axis=1)), np.flatnonzero(hole.any(axis=0))
        assert hole.sum() == len(rows) * len(cols) and np.ptp(rows) == len(rows) - 1 and np.ptp(cols) == len(cols) - 1
        np.testing.assert_array_equal(inp[~hole], image[~hole])
        assert hole.mean() == pytest.approx(0.25 * strength**2, rel=0.25)  # sides strength/2 of the image's
        boxes.append(hole)
    assert (boxes[1] >= boxes[0]).all()  # nested: the same place, larger


def test_inpaint_pixels_zeroes_its_fraction_nested_in_strength():
    image = flat(0.5)
    holes = [run("inpaint_pixels", image, s)[0] == 0 for s in (0.5, 1.0)]
    assert holes[0].mean() == pytest.approx(0.35, abs=0.01)
    assert holes[1].mean() == pytest.approx(0.7, abs=0.01)
    assert (holes[1] >= holes[0]).all()


# ---------------------------------------------------------------- renderings and intensity corruptions


def luminance(rgb):
    return np.tensordot([0.299, 0.587, 0.114], rgb, axes=1)


def test_colourise_target_is_rgb_whose_luminance_tracks_the_image():
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (16, 1))
    inp, tgt = run("colourise", ramp, 1.0)
    np.testing.assert_array_equal(inp, ramp)
    assert tgt.shape == (3, 16, 64) and tgt.min() >= 0 and tgt.max() <= 1
    lum = luminance(tgt)[0]
    assert lum[0] == 0 and lum[-1] == pytest.approx(1) and (np.diff(lum) > 0).all()  # hot iron: black to white
    image = phantom()[0]
    _, tgt = run("colourise", image, 1.0)
    assert np.corrcoef(luminance(tgt).ravel(), image.ravel())[0, 1] > 0.95
    assert np.abs(tgt - image).max() > 0.3  # a colour rendering, not the gray image
    _, gray = run("colourise", image, 0.0)
    np.testing.assert_array_equal(gray, np.stack([image] * 3))


def test_bias_field_is_a_smooth_factor_up_to_2_to_the_strength():
    image = flat(0.4, 48)  # times at most 2: never clipped
    logs = [np.log2(run("bias_field", image, s, seed)[0] / image) for seed in (0, 1) for s in (0.5, 1.0)]
    for log, s in zip(logs, (0.5, 1.0, 0.5, 1.0)):
        assert np.abs(log).max() == pytest.approx(s, abs=1e-4)  # reaches its amplitude, and no further
        assert np.abs(np.diff(log, 2, axis=0)).max() < 0.01 and np.abs(np.diff(log, 2, axis=1)).max() < 0.01
    np.testing.assert_allclose(logs[1], 2 * logs[0], atol=1e-4)  # one field per seed, scaled by strength
    assert np.abs(logs[1] - logs[3]).max() > 0.1  # another seed, another field


@pytest.mark.parametrize(("strength", "levels"), [(0.5, 23), (1.0, 2)])  # round(2 ** (8 - 7 strength))
def test_dequantise_input_has_the_stated_levels(strength, levels):
    image = np.random.default_rng(2).random((64, 64)).astype(np.float32)
    inp, _ = run("dequantise", image, strength)
    grid = np.linspace(0, 1, levels, dtype=np.float32)
    assert len(np.unique(inp)) == levels
    assert np.abs(inp[:, :, None] - grid).min(axis=2).max() < 1e-6  # on the grid of levels
    assert np.abs(inp - image).max() <= 0.5 / (levels - 1) + 1e-6


def test_one_streak_is_a_thin_straight_line_across_the_image(monkeypatch):
    monkeypatch.setattr(generative, "STREAKS", 1)
    image = flat(0.5, 48)
    diffs = []
    for seed in range(3):
        inp, _ = run("deartifact_streaks", image, 1.0, seed)
        diffs.append(inp - image)
        _, (minor, major) = psf_moments(np.abs(diffs[-1]) > 0.02)
        assert minor < 1.5 and major > 40**2 / 12  # one line, at least 40 pixels long
    half, _ = run("deartifact_streaks", image, 0.5, 0)
    np.testing.assert_allclose(half - image, diffs[0] / 2, atol=1e-6)  # amplitude 0.3 strength


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaks_meet_in_one_point(seed):
    image = flat(0.5, 48)
    inp, _ = run("deartifact_streaks", image, 1.0, seed)
    streaked = np.abs(inp - image) > 0.02
    assert 0.05 < streaked.mean() < 0.6  # thin lines, not a haze
    # six lines through one point: a small disc around it is covered, most equal discs elsewhere are not
    y, x = np.mgrid[0:48, 0:48]
    cover = [streaked[(y - cy) ** 2 + (x - cx) ** 2 <= 4].mean() for cy in range(4, 44, 2) for cx in range(4, 44, 2)]
    assert max(cover) > 0.9 and np.median(cover) < 0.55
