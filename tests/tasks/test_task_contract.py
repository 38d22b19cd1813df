"""Every registered task, through the contract of :mod:`medrep.tasks.base`: shapes, seeded
determinism, strength that moves the pair monotonically where the task says it does, a failure
variant whose target differs from the true one, and clear errors for what a task cannot use."""

import numpy as np
import pytest
from helpers import phantom

from medrep.tasks import FAMILIES, TaskError, get_task, task_names

ALL = task_names()
STRENGTHS = [0.0, 0.25, 0.5, 0.75, 1.0]


def pair(name, strength=0.6, seed=0, failure=False):
    image, mask = phantom()
    task = get_task(name)
    fn = task.failure if failure else task
    return fn(image, mask if task.needs_mask else None, np.random.default_rng(seed), strength)


@pytest.mark.parametrize("name", ALL)
def test_shapes_and_range(name):
    inp, tgt = pair(name)
    assert inp.dtype == np.float32 and tgt.dtype == np.float32
    assert inp.ndim == 3 and tgt.ndim == 3 and inp.shape[0] in (1, 3) and tgt.shape[0] in (1, 3)
    assert inp.shape[1:] == tgt.shape[1:] == (48, 48)
    assert np.isfinite(inp).all() and np.isfinite(tgt).all()


@pytest.mark.parametrize("name", ALL)
def test_one_seed_one_sample(name):
    a, b = pair(name, seed=3), pair(name, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("name", ALL)
def test_failure_target_differs_and_is_seeded(name):
    _, true_target = pair(name, seed=1)
    inp, bad_target = pair(name, seed=1, failure=True)
    assert inp.shape[1:] == bad_target.shape[1:]
    assert np.abs(bad_target - true_target).mean() > 1e-3
    np.testing.assert_array_equal(bad_target, pair(name, seed=1, failure=True)[1])


@pytest.mark.parametrize("name", [n for n in ALL if get_task(n).monotone])
def test_strength_moves_the_pair_monotonically(name):
    base = np.concatenate([a.ravel() for a in pair(name, 0.0, seed=2)])
    dist = [np.abs(np.concatenate([a.ravel() for a in pair(name, s, seed=2)]) - base).mean() for s in STRENGTHS]
    assert dist[-1] > 1e-3, f"strength 1 gives the strength-0 pair: {dist}"
    assert all(b >= a - 1e-4 for a, b in zip(dist, dist[1:])), f"distance from strength 0 not monotone: {dist}"


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "high"])
def test_strength_out_of_range_names_the_task(bad):
    image, mask = phantom()
    with pytest.raises(TaskError, match="task 'rotate'.*strength"):
        get_task("rotate")(image, None, np.random.default_rng(0), bad)


def test_mask_task_without_mask_names_the_task():
    image, _ = phantom()
    name = next(n for n in ALL if get_task(n).needs_mask)
    with pytest.raises(TaskError, match=f"task '{name}'.*needs a mask"):
        get_task(name)(image, None, np.random.default_rng(0), 0.5)


def test_images_too_small_nan_or_unscaled_are_errors():
    task = get_task("rotate")
    rng = np.random.default_rng(0)
    with pytest.raises(TaskError, match="at least"):
        task(np.zeros((8, 8), np.float32), None, rng, 0.5)
    img = phantom()[0].copy()
    img[3, 3] = np.nan
    with pytest.raises(TaskError, match="NaN"):
        task(img, None, rng, 0.5)
    with pytest.raises(TaskError, match=r"\[0, 1\]"):
        task(phantom()[0] * 255, None, rng, 0.5)
    with pytest.raises(TaskError, match="2D"):
        task(np.zeros((2, 32, 32), np.float32), None, rng, 0.5)


def test_unknown_names_suggest_close_ones():
    with pytest.raises(TaskError, match="did you mean rotate"):
        get_task("rotat")
    with pytest.raises(TaskError, match="unknown family"):
        task_names("geometric")


def test_every_family_is_populated_and_listed_in_order():
    fams = [get_task(n).family for n in ALL]
    assert fams == sorted(fams, key=FAMILIES.index)
    assert set(fams) == set(FAMILIES)
