"""AUROC and accuracy from class scores, shared by the linear and kNN probes so both report
the same quantity: binary AUROC on the positive-class score, multiclass one-vs-rest macro AUROC."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def auroc(y_true: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> float:
    """AUROC of ``scores`` (n, len(classes)), column i scoring ``classes[i]``.

    Two classes: AUROC of column 1 (the larger label is the positive class). More: the mean of
    the one-vs-rest AUROCs over the classes present in ``y_true`` (classes absent from the test
    split have no defined ROC curve; when all are present this equals scikit-learn's
    ``roc_auc_score(..., multi_class="ovr", average="macro")``).
    """
    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=np.float64)
    if len(classes) == 2:
        return float(roc_auc_score(y_true == classes[1], scores[:, 1]))
    per_class = [
        roc_auc_score(y_true == c, scores[:, i])
        for i, c in enumerate(classes)
        if 0 < np.sum(y_true == c) < y_true.size
    ]
    return float(np.mean(per_class))


def accuracy(y_true: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> float:
    """Fraction of rows whose highest-scoring class is the true one (ties: the first class)."""
    pred = np.asarray(classes)[np.argmax(scores, axis=1)]
    return float(np.mean(pred == np.asarray(y_true)))
