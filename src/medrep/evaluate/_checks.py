"""Input checks shared by the probes, so every bad array fails the same way: a MedrepError
naming the argument at fault, before scikit-learn or torch can fail with a less helpful message."""

from __future__ import annotations

import numpy as np

from ..errors import MedrepError


def check_features(x, name: str) -> np.ndarray:
    """Return ``x`` as a 2D float array with finite values; raise naming ``name`` otherwise."""
    try:
        arr = np.asarray(x)
        if not np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise MedrepError(f"features must be numeric ({exc})", where=name) from exc
    if arr.ndim != 2:
        raise MedrepError(f"features must be 2D (samples, features), got shape {arr.shape}", where=name)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise MedrepError(f"features are empty, shape {arr.shape}", where=name)
    if not np.all(np.isfinite(arr)):
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise MedrepError(f"features contain NaN or inf in {bad} of {arr.shape[0]} rows", where=name)
    return arr


def check_labels(y, n: int, name: str) -> np.ndarray:
    """Return ``y`` as a 1D int64 array of length ``n``; integral floats (0.0, 1.0) are accepted."""
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:  # MedMNIST stores labels as (N, 1)
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise MedrepError(f"labels must be 1D, got shape {arr.shape}", where=name)
    if arr.shape[0] != n:
        raise MedrepError(f"{arr.shape[0]} labels for {n} feature rows", where=name)
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        return arr.astype(np.int64)
    raise MedrepError(f"labels must be integer class ids, got dtype {arr.dtype}", where=name)


def check_split_pair(train_x, train_y, test_x, test_y) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Check a train/test pair of features and labels; return them and the training classes.

    The test split may hold only classes seen in training (a probe cannot score an unseen class)
    and needs two of them, since AUROC is undefined with one.
    """
    tr_x = check_features(train_x, "train_x")
    tr_y = check_labels(train_y, tr_x.shape[0], "train_y")
    te_x = check_features(test_x, "test_x")
    te_y = check_labels(test_y, te_x.shape[0], "test_y")
    if te_x.shape[1] != tr_x.shape[1]:
        raise MedrepError(f"{te_x.shape[1]} features per row, but train_x has {tr_x.shape[1]}", where="test_x")
    classes = np.unique(tr_y)
    if classes.size < 2:
        raise MedrepError(f"need at least 2 classes to train a probe, found {classes.tolist()}", where="train_y")
    unseen = np.setdiff1d(np.unique(te_y), classes)
    if unseen.size:
        raise MedrepError(f"classes {unseen.tolist()} do not occur in train_y", where="test_y")
    if np.unique(te_y).size < 2:
        raise MedrepError("need at least 2 classes in the test split for AUROC", where="test_y")
    return tr_x, tr_y, te_x, te_y, classes
