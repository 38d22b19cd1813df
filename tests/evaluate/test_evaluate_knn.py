"""Weighted kNN probe against a plain brute-force loop, the definition written out."""

from __future__ import annotations

import numpy as np
import pytest

from medrep.errors import MedrepError
from medrep.evaluate import knn_probe, knn_scores


def brute_force(train_x, train_y, test_x, classes, k, t):
    tr = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    probs, nearest = [], []
    for row in test_x:
        sims = tr @ (row / np.linalg.norm(row))
        order = np.argsort(-sims)[:k]
        votes = np.zeros(len(classes))
        for j in order:
            votes[list(classes).index(train_y[j])] += np.exp(sims[j] / t)
        probs.append(votes / votes.sum())
        nearest.append(train_y[order[0]])
    return np.array(probs), np.array(nearest)


@pytest.mark.parametrize("k, t", [(5, 0.07), (20, 0.5), (1, 0.1)])
def test_matches_brute_force(k, t):
    rng = np.random.default_rng(k)
    train_x, test_x = rng.normal(size=(80, 6)), rng.normal(size=(33, 6))
    train_y = rng.choice([2, 5, 9], 80)
    classes = np.array([2, 5, 9])
    probs, nearest = knn_scores(train_x, train_y, test_x, classes, k=k, temperature=t, chunk_size=7)
    ref_p, ref_n = brute_force(train_x, train_y, test_x, classes, k, t)
    np.testing.assert_allclose(probs, ref_p, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(1), ref_p.argmax(1))
    np.testing.assert_array_equal(nearest, ref_n)


def test_probe_scores_clusters_and_clips_k():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5
    y = rng.integers(0, 3, 300)
    x = centres[y] + rng.normal(size=(300, 16))
    res = knn_probe(x[:200], y[:200], x[200:], y[200:], k=10)
    assert res["auroc"] > 0.99 and res["accuracy"] > 0.95 and res["accuracy_k1"] > 0.95
    assert res["k"] == 10 and res["n_train"] == 200 and res["classes"] == [0, 1, 2]
    assert knn_probe(x[:200], y[:200], x[200:], y[200:], k=1000)["k"] == 200
    labels = rng.integers(0, 2, 300)  # random labels: chance
    assert 0.35 < knn_probe(x[:200], labels[:200], x[200:], labels[200:])["auroc"] < 0.65


@pytest.mark.parametrize(
    "change, where",
    [(dict(k=0), "k"), (dict(temperature=0.0), "temperature"), (dict(chunk_size=0), "chunk_size"),
     (dict(train_y=np.zeros(9, dtype=int)), "train_y"), (dict(test_x=np.ones((4, 3))), "test_x")],
)
def test_bad_inputs_name_the_field(change, where):
    kw = dict(train_x=np.eye(10, 4) + 0.1, train_y=np.arange(10) % 2, test_x=np.ones((4, 4)), test_y=np.array([0, 1, 0, 1]))
    kw.update(change)
    with pytest.raises(MedrepError) as err:
        knn_probe(**kw)
    assert err.value.where == where
