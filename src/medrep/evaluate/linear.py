"""Linear probe: how much label information a frozen encoder's features carry, read out by a
logistic regression trained on 1 %, 10 % and 100 % of the labels (the standard label-efficiency
protocol for medical self-supervised learning, where labels are the scarce resource)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from ..errors import MedrepError
from ._checks import check_split_pair
from .metrics import accuracy, auroc
from .report import summarise
from .subsample import check_fraction, nested_subsamples

#: Inverse regularisation strengths tried by cross-validation when ``C`` is not given.
C_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
#: Most folds used to choose C; fewer when the rarest class has fewer examples.
MAX_FOLDS = 5


def _fit(x: np.ndarray, y: np.ndarray, C: float | None, seed: int, max_iter: int) -> tuple[Any, float, str]:
    """Fit scaler + logistic regression; return (model, C used, how C was chosen).

    C is cross-validated on the subsample only (never the test split); the scaler is inside the
    pipeline so each fold standardises with its own training statistics.
    """

    def pipe(c: float):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter))

    if C is not None:
        return pipe(C).fit(x, y), float(C), "given"
    n_folds = min(MAX_FOLDS, int(np.bincount(np.unique(y, return_inverse=True)[1]).min()))
    if n_folds < 2:  # a class with a single example cannot appear in both a fit and a val fold
        return pipe(1.0).fit(x, y), 1.0, "default (too few examples per class for cross-validation)"
    search = GridSearchCV(
        pipe(1.0),
        {"logisticregression__C": list(C_GRID)},
        scoring="neg_log_loss",  # smooth, unlike AUROC which ties on tiny validation folds
        cv=StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed),
        refit=True,
    )
    search.fit(x, y)
    best = float(search.best_params_["logisticregression__C"])
    return search.best_estimator_, best, f"cv ({n_folds}-fold, neg log-loss)"


def linear_probe(
    train_x,
    train_y,
    test_x,
    test_y,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seeds: Sequence[int] = (0,),
    C: float | None = None,
    max_iter: int = 2000,
) -> dict[str, Any]:
    """Logistic-regression probe on frozen features at several label fractions.

    For each fraction and seed: take that seed's stratified subsample of the training split
    (:func:`~medrep.evaluate.subsample.nested_subsamples`: a seed's smaller fractions are nested
    in its larger ones, as in ``evaluate finetune``), standardise features (fit on the subsample), fit lbfgs
    logistic regression with ``C`` (or, when ``None``, the best of :data:`C_GRID` by stratified
    CV on the subsample; ``C=1.0`` when a class has a single example), then score the test split.

    Returns ``{"probe": "linear", "classes": [...], "fractions": {"0.01": {"fraction",
    "n_train", "auroc": {"mean","std"}, "accuracy": {"mean","std"}, "per_seed": [{"seed",
    "n_train", "auroc", "accuracy", "C", "c_selection", "converged"}]}, ...}}``.
    AUROC: binary on the larger label's probability; multiclass one-vs-rest macro.
    """
    tr_x, tr_y, te_x, te_y, classes = check_split_pair(train_x, train_y, test_x, test_y)
    fracs = [check_fraction(f) for f in fractions]
    if not fracs:
        raise MedrepError("give at least one label fraction", where="fractions")
    seed_list = list(seeds)
    if not seed_list or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in seed_list):
        raise MedrepError(f"seeds must be a non-empty list of integers, got {seeds!r}", where="seeds")
    if C is not None and not (isinstance(C, (int, float)) and math.isfinite(C) and C > 0):
        raise MedrepError(f"C must be a positive number or None, got {C!r}", where="C")
    if not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise MedrepError(f"max_iter must be a positive integer, got {max_iter!r}", where="max_iter")

    out: dict[str, Any] = {"probe": "linear", "classes": classes.tolist(), "n_test": int(te_y.size), "fractions": {}}
    subsets = {int(seed): nested_subsamples(tr_y, fracs, int(seed)) for seed in seed_list}
    for f in fracs:
        runs = []
        for seed in seed_list:
            idx = subsets[int(seed)][f]
            x, y = tr_x[idx], tr_y[idx]
            if np.unique(y).size < 2:  # cannot happen by construction; kept as a guard
                raise MedrepError(f"training subset at fraction {f} has fewer than 2 classes", where="fractions")
            # One BLAS thread: lbfgs works on small vectors, where multithreaded BLAS costs more
            # in synchronisation than it gains (measured 3-16x slower with 2 threads).
            with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
                warnings.simplefilter("ignore", ConvergenceWarning)  # CV fits at extreme C; see "converged"
                model, c_used, how = _fit(x, y, C, int(seed), int(max_iter))
                proba = model.predict_proba(te_x)  # columns follow model.classes_ == classes
            runs.append(
                {
                    "seed": int(seed),
                    "n_train": int(idx.size),
                    "auroc": auroc(te_y, proba, classes),
                    "accuracy": accuracy(te_y, proba, classes),
                    "C": c_used,
                    "c_selection": how,
                    "converged": bool(np.all(model[-1].n_iter_ < max_iter)),
                }
            )
        out["fractions"][f"{f:g}"] = {
            "fraction": f,
            "n_train": runs[0]["n_train"],
            "auroc": summarise(r["auroc"] for r in runs),
            "accuracy": summarise(r["accuracy"] for r in runs),
            "per_seed": runs,
        }
    return out
