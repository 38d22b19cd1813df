"""Linear probe: it must separate separable data, fail on random labels (so the first test can
fail), subsample correctly, reproduce per seed, and reject bad input naming the field."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medrep.errors import MedrepError
from medrep.evaluate import auroc, linear_probe, stratified_subsample


def gaussians(n_per_class: int, n_classes: int = 2, dim: int = 8, sep: float = 4.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n_classes, dim)) * sep
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = means[y] + rng.normal(size=(y.size, dim))
    perm = rng.permutation(y.size)
    return x[perm].astype(np.float32), y[perm]


def test_separable_gaussians_reach_auroc_one():
    x, y = gaussians(200)
    res = linear_probe(x[:300], y[:300], x[300:], y[300:], fractions=(0.1, 1.0))
    for key in ("0.1", "1"):
        assert res["fractions"][key]["auroc"]["mean"] > 0.99
        assert res["fractions"][key]["accuracy"]["mean"] > 0.95
    assert res["fractions"]["1"]["n_train"] == 300
    run = res["fractions"]["1"]["per_seed"][0]
    assert run["c_selection"].startswith("cv") and run["C"] in (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def test_random_labels_give_chance_auroc():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 16))
    y = rng.integers(0, 2, 600)
    res = linear_probe(x[:400], y[:400], x[400:], y[400:], fractions=(1.0,), C=1.0)
    assert 0.35 < res["fractions"]["1"]["auroc"]["mean"] < 0.65


def test_multiclass_auroc_matches_sklearn_ovr():
    tr_x, tr_y = gaussians(60, n_classes=3, sep=3.0)
    res = linear_probe(tr_x, tr_y, tr_x, tr_y, fractions=(1.0,), C=1.0)
    assert res["classes"] == [0, 1, 2]
    assert res["fractions"]["1"]["auroc"]["mean"] > 0.95
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 50)
    p = rng.dirichlet(np.ones(3), 50)
    assert auroc(y, p, np.arange(3)) == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))


def test_subsample_counts_keep_every_class():
    y = np.repeat([0, 1, 2], [500, 300, 200])
    idx = stratified_subsample(y, 0.01, seed=0)
    assert idx.size == 10 and np.array_equal(np.bincount(y[idx]), [5, 3, 2])
    assert np.array_equal(idx, np.unique(idx))  # sorted, no repeats
    idx = stratified_subsample(y, 0.001, seed=0)  # round(1) < 3 classes: one of each
    assert np.array_equal(np.bincount(y[idx]), [1, 1, 1])
    rare = np.array([0] * 99 + [1])
    assert set(rare[stratified_subsample(rare, 0.1, seed=4)]) == {0, 1}
    assert stratified_subsample(rare, 0.1, seed=4).size == 10
    assert np.array_equal(stratified_subsample(y, 1.0, seed=3), np.arange(y.size))
    a, b = stratified_subsample(y, 0.1, seed=0), stratified_subsample(y, 0.1, seed=1)
    assert np.array_equal(a, stratified_subsample(y, 0.1, seed=0)) and not np.array_equal(a, b)


def test_same_seed_same_result_and_seeds_summarised():
    x, y = gaussians(100, sep=0.7)
    args = (x[:150], y[:150], x[150:], y[150:])
    r1 = linear_probe(*args, fractions=(0.1,), seeds=(0, 1, 2))
    r2 = linear_probe(*args, fractions=(0.1,), seeds=(0, 1, 2))
    assert r1 == r2
    block = r1["fractions"]["0.1"]
    assert block["n_train"] == 15 and [r["seed"] for r in block["per_seed"]] == [0, 1, 2]
    aurocs = [r["auroc"] for r in block["per_seed"]]
    assert block["auroc"]["mean"] == pytest.approx(np.mean(aurocs))
    assert block["auroc"]["std"] == pytest.approx(np.std(aurocs))


def test_tiny_subsample_falls_back_to_default_c():
    x, y = gaussians(50)
    res = linear_probe(x, y, x, y, fractions=(0.02,))  # 2 examples: one per class, no CV possible
    run = res["fractions"]["0.02"]["per_seed"][0]
    assert run["n_train"] == 2 and run["C"] == 1.0 and run["c_selection"].startswith("default")
    res = linear_probe(x, y, x, y, fractions=(1.0,), C=0.5)
    assert res["fractions"]["1"]["per_seed"][0]["c_selection"] == "given"


@pytest.mark.parametrize(
    "change, where",
    [
        (dict(fractions=(0.0,)), "fractions"),
        (dict(fractions=(1.5,)), "fractions"),
        (dict(fractions=()), "fractions"),
        (dict(seeds=()), "seeds"),
        (dict(C=-1.0), "C"),
        (dict(max_iter=0), "max_iter"),
        (dict(train_y=np.zeros(40, dtype=int)), "train_y"),
        (dict(train_y=np.zeros(39, dtype=int)), "train_y"),
        (dict(train_x=np.full((40, 4), np.nan)), "train_x"),
        (dict(test_x=np.zeros((20, 5))), "test_x"),
        (dict(test_y=np.full(20, 7)), "test_y"),
        (dict(test_y=np.zeros(20, dtype=int)), "test_y"),
        (dict(train_y=np.linspace(0, 1, 40)), "train_y"),
    ],
)
def test_bad_inputs_name_the_field(change, where):
    rng = np.random.default_rng(0)
    kw = dict(
        train_x=rng.normal(size=(40, 4)),
        train_y=np.arange(40) % 2,
        test_x=rng.normal(size=(20, 4)),
        test_y=np.arange(20) % 2,
        fractions=(1.0,),
        C=1.0,
    )
    kw.update(change)
    with pytest.raises(MedrepError) as err:
        linear_probe(**kw)
    assert err.value.where == where
