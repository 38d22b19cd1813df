"""Transformation tasks against simple expectations: a flip undoes itself, a translation moves an
impulse by the expected pixels, brightness moves the mean by the expected amount, gamma and every
geometric task are the identity at strength 0 ... and the failure variants are no instance of their
task (the reason flips and translate replace the default mismatch)."""

import numpy as np
import pytest
from helpers import phantom
from scipy import ndimage

from medrep.tasks import get_task, mismatch, task_names
from medrep.tasks.transformation import scramble, shifted


def target(name, image, strength, seed=0):
    return get_task(name)(image, None, np.random.default_rng(seed), strength)[1][0]


def blob(size, centre, sigma=1.5):
    y, x = np.indices((size, size))
    return np.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / (2 * sigma ** 2)).astype(np.float32)


def centroid(a):
    return np.array(ndimage.center_of_mass(a))


def mid_grey(size=48, seed=0):
    """An image in [0.35, 0.65]: no intensity task below clips it."""
    return (0.5 + 0.15 * np.random.default_rng(seed).uniform(-1, 1, (size, size))).astype(np.float32)


def test_the_family_has_at_least_eleven_tasks_each_documented():
    names = task_names("transformation")
    assert len(names) >= 11 and "rotate" in names
    assert all(len(get_task(n).summary) > 40 for n in names)


@pytest.mark.parametrize("name", ["flip_horizontal", "flip_vertical"])
def test_flip_twice_is_identity_and_strength_does_nothing(name):
    image = phantom()[0]
    once = target(name, image, 0.3)
    np.testing.assert_array_equal(target(name, once, 0.9), image)
    np.testing.assert_array_equal(once, target(name, image, 1.0))
    assert not np.array_equal(once, image)


def test_shifted_moves_an_impulse_by_whole_pixels():
    image = np.zeros((32, 32), np.float32)
    image[10, 20] = 1.0
    moved = shifted(image, 3, -5)
    assert moved[13, 15] == pytest.approx(1.0) and moved.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_translate_moves_an_impulse_by_a_quarter_of_the_size_times_strength(seed):
    image = np.zeros((64, 64), np.float32)
    image[32, 32] = 1.0
    half = centroid(target("translate", image, 0.5, seed)) - 32
    full = centroid(target("translate", image, 1.0, seed)) - 32
    assert np.hypot(*half) == pytest.approx(8.0, abs=1e-3)  # 0.25 x 64 x 0.5, bilinear keeps the centroid
    np.testing.assert_allclose(full, 2 * half, atol=1e-3)  # the direction is drawn once, whatever the strength


@pytest.mark.parametrize("name", ["rotate", "translate", "zoom", "shear", "elastic", "gamma", "brightness", "contrast",
                                  "histogram_equalise", "window_level"])
def test_strength_0_is_the_identity(name):
    image = phantom()[0]
    np.testing.assert_allclose(target(name, image, 0.0), image, atol=1e-6)


@pytest.mark.parametrize("strength", [0.25, 0.5, 1.0])
def test_brightness_moves_the_mean_by_0_3_times_strength_both_ways(strength):
    image = mid_grey()
    deltas = [target("brightness", image, strength, seed).mean() - image.mean() for seed in range(8)]
    np.testing.assert_allclose(np.abs(deltas), 0.3 * strength, atol=1e-5)
    assert min(deltas) < 0 < max(deltas)


def test_contrast_keeps_the_mean_and_doubles_or_halves_deviations():
    image = mid_grey()
    ratios = []
    for seed in range(8):
        out = target("contrast", image, 1.0, seed)
        assert out.mean() == pytest.approx(image.mean(), abs=1e-5)
        ratios.append(out.std() / image.std())
    np.testing.assert_allclose(sorted({round(r, 4) for r in ratios}), [0.5, 2.0], atol=1e-3)


def test_gamma_at_strength_1_is_square_or_square_root_and_keeps_0_and_1():
    image = np.tile(np.array([0.0, 0.25, 1.0], np.float32), (16, 6))
    outs = {round(float(target("gamma", image, 1.0, seed)[0, 1]), 5) for seed in range(8)}
    assert outs == {0.0625, 0.5}
    out = target("gamma", image, 0.7)
    assert out[0, 0] == 0.0 and out[0, 2] == 1.0


def test_invert_maps_0_to_1_and_1_to_0_at_any_strength():
    image = np.tile(np.array([0.0, 0.25, 1.0], np.float32), (16, 6))
    for strength in (0.0, 1.0):
        np.testing.assert_allclose(target("invert", image, strength)[0, :3], [1.0, 0.75, 0.0])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_zoom_scales_distances_from_the_centre_by_1_5_in_or_out(seed):
    image = blob(65, (32, 42))  # 10 pixels right of the centre (32, 32)
    offset = centroid(target("zoom", image, 1.0, seed)) - 32
    assert offset[0] == pytest.approx(0.0, abs=0.05)
    assert min(abs(offset[1] - 15.0), abs(offset[1] - 10 / 1.5)) < 0.1


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_shear_slides_a_point_along_one_axis_by_half_its_distance_from_the_centre(seed):
    image = blob(65, (40, 40))  # 8 pixels below and right of the centre
    moved = np.abs(centroid(target("shear", image, 1.0, seed)) - 40)
    np.testing.assert_allclose(sorted(moved), [0.0, 4.0], atol=0.05)


def test_elastic_displaces_by_at_most_6_percent_of_the_side_smoothly():
    size, strength = 64, 1.0
    peak = 0.06 * strength * size
    rows, cols = np.indices((size, size), dtype=np.float32) / size  # a ramp is resampled exactly by bilinear
    u = np.stack([(target("elastic", ramp, strength, seed=5) - ramp) * size for ramp in (rows, cols)])
    inner = u[:, 5:-5, 5:-5]  # away from the zero fill
    length = np.sqrt((inner ** 2).sum(0))
    assert 0.3 * peak < length.max() <= peak + 1e-3
    assert np.abs(np.diff(inner, axis=-1)).max() < 0.5  # smooth: neighbours move alike


def test_histogram_equalise_at_strength_1_spreads_values_evenly_and_keeps_their_order():
    image = np.random.default_rng(0).beta(2, 8, (32, 32)).astype(np.float32)  # crowded near 0
    out = target("histogram_equalise", image, 1.0)
    np.testing.assert_allclose(np.sort(out.ravel()), np.linspace(0, 1, image.size), atol=1e-6)
    assert (np.argsort(out.ravel(), kind="stable") == np.argsort(image.ravel(), kind="stable")).all()


def test_window_level_at_strength_1_is_a_window_0_2_wide():
    image = np.tile(np.linspace(0, 1, 101, dtype=np.float32), (16, 1))
    out = target("window_level", image, 1.0)[0]
    inside = (out > 0) & (out < 1)
    assert 0.18 <= inside.mean() <= 0.22  # about 20 of the 101 grey levels show
    np.testing.assert_allclose(np.diff(out)[inside[1:] & inside[:-1]], 5 * 0.01, atol=1e-5)


def test_posterise_goes_from_256_levels_to_a_threshold():
    image = mid_grey() * 1.4 - 0.2
    assert np.abs(target("posterise", image, 0.0) - image).max() <= 1 / 510 + 1e-6
    np.testing.assert_array_equal(target("posterise", image, 1.0), (image > 0.5).astype(np.float32))


# --- failure variants -------------------------------------------------------------------------------

def off_centre_structure(size=32):
    """A left-right symmetric structure on black, placed so that base.mismatch (roll by (17, 11),
    mirror) lands it whole, mirrored onto itself: the mismatched copy is the image translated."""
    y, x = np.indices((size, size))
    image = 0.8 * (((x - 10) / 4.5) ** 2 + ((y - 6) / 3.5) ** 2 < 1) - 0.4 * ((np.abs(x - 10) - 2) ** 2 + (y - 5) ** 2 < 2)
    return image.astype(np.float32)


def spread(image):
    return np.abs(image - image.mean()).mean()


def nearest_translation(image, tgt):
    """(mean absolute residual, (dy, dx)) of the whole-pixel translation of image nearest tgt."""
    h, w = image.shape
    pad = np.pad(image, ((h, h), (w, w)))
    return min((np.abs(pad[h - dy:2 * h - dy, w - dx:2 * w - dx] - tgt).mean(), (dy, dx))
               for dy in range(-h + 1, h) for dx in range(-w + 1, w))


def test_the_default_mismatch_of_a_flip_or_a_translation_is_a_translation_of_the_image():
    image = off_centre_structure()
    residual, (dy, dx) = nearest_translation(image, mismatch(image))
    assert residual == 0.0 and abs(dy) > image.shape[0] / 2  # translate's default failure: a move past its range
    assert nearest_translation(image, mismatch(image)[:, ::-1])[0] == 0.0  # flip_horizontal's: unflipped, moved


@pytest.mark.parametrize("name", ["flip_horizontal", "flip_vertical", "translate"])
@pytest.mark.parametrize("make_image", [off_centre_structure, lambda: phantom(32)[0]])
def test_scrambled_failures_are_far_from_any_translation_and_from_the_true_target(name, make_image):
    image = make_image()
    scale = spread(image)
    inp, bad = get_task(name).failure(image, None, np.random.default_rng(0), 1.0)
    true = get_task(name)(image, None, np.random.default_rng(0), 1.0)[1]
    assert nearest_translation(image, bad[0])[0] > 0.25 * scale  # the default's is 0 on off_centre_structure
    assert np.abs(bad - true).mean() > 0.25 * scale
    np.testing.assert_array_equal(np.sort(scramble(image).ravel()), np.sort(image.ravel()))  # same pixels, moved


@pytest.mark.parametrize("make_image", [off_centre_structure, lambda: phantom(32)[0]])
def test_rotate_default_failure_is_no_admissible_rotation(make_image):
    image = make_image()
    _, bad = get_task("rotate").failure(image, None, np.random.default_rng(0), 0.5)
    nearest = min(np.abs(ndimage.rotate(image, a, reshape=False, order=1, mode="constant", cval=0.0) - bad[0]).mean()
                  for a in range(-45, 46, 3))
    assert nearest > 0.25 * spread(image)
