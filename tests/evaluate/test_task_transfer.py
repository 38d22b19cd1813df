"""Task transfer: the gain matrix and the similarity-transfer correlation with its task-level interval."""

from dataclasses import dataclass

import numpy as np
import pytest
from helpers import phantom

from medrep.evaluate.task_transfer import TransferOptions, off_diagonal, similarity_vs_transfer, transfer_matrix
from medrep.tasks import get_task


def test_perfect_and_inverse_rank_agreement():
    rng = np.random.default_rng(0)
    sim = rng.random((6, 6))
    up = similarity_vs_transfer(sim, 2 * sim + 1, resamples=200)
    assert up["spearman"] == pytest.approx(1.0) and up["ci95"][0] == pytest.approx(1.0) and up["pairs"] == 30
    down = similarity_vs_transfer(sim, -sim, resamples=200)
    assert down["spearman"] == pytest.approx(-1.0)


def test_unrelated_gains_give_an_interval_around_zero():
    rng = np.random.default_rng(1)
    out = similarity_vs_transfer(rng.random((10, 10)), rng.random((10, 10)), resamples=300)
    assert out["ci95"][0] < 0 < out["ci95"][1]


def test_within_target_removes_how_easy_each_target_is():
    """Gains = a large per-target offset + similarity: over all pairs the offset drowns the similarity,
    within each target the more similar source gains more, always."""
    rng = np.random.default_rng(2)
    n = 8
    sim = rng.random((n, n))
    np.fill_diagonal(sim, np.nan)
    sim -= np.nanmean(sim, axis=0)  # every target's sources average to 0
    np.fill_diagonal(sim, 0.0)
    offset = 100 * rng.permutation(n)
    gain = sim + offset[None, :]
    out = similarity_vs_transfer(sim, gain, resamples=200)
    assert out["ci95"][0] < 0 < out["ci95"][1]
    assert out["within_target"]["spearman"] == pytest.approx(1.0) and out["within_target"]["ci95"][0] > 0.5


def test_off_diagonal_order():
    m = np.arange(9).reshape(3, 3)
    assert off_diagonal(m).tolist() == [1, 2, 3, 5, 6, 7]


@dataclass
class Slice:
    image: np.ndarray
    mask: np.ndarray | None
    source: str
    id: str


@pytest.mark.slow
def test_transfer_matrix_is_seeded_and_has_no_diagonal():
    image, _ = phantom(32)
    slices = [Slice(np.rot90(image, k).copy(), None, "p", str(k)) for k in range(4)]
    tasks = [get_task(n) for n in ("denoise_gaussian", "rotate")]
    opts = TransferOptions(source_samples=8, source_steps=3, few_samples=4, few_steps=2, test_samples=4, batch_size=4,
                           channels=(4, 8), seeds=(0,))
    a = transfer_matrix(slices[:3], slices[3:], tasks, opts)
    b = transfer_matrix(slices[:3], slices[3:], tasks, opts)
    gain = np.array(a["runs"][0]["gain"])
    assert np.isnan(np.diag(gain)).all() and np.isfinite(off_diagonal(gain)).all()
    for key in ("scratch_error", "finetuned_error", "gain"):
        np.testing.assert_array_equal(np.array(a["runs"][0][key]), np.array(b["runs"][0][key]))  # NaN == NaN here
