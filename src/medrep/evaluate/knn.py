"""Weighted k-nearest-neighbour probe: a parameter-free read-out of frozen features (no fitting,
no hyper-parameter search), the monitor used by DINO and solo-learn. Cosine similarity on
L2-normalised features; each of the k neighbours votes for its class with weight exp(sim / T)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MedrepError
from ._checks import check_split_pair
from .metrics import accuracy, auroc


def knn_scores(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    classes: np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (n_test, len(classes)) and nearest-neighbour labels (n_test,).

    Inputs are assumed checked. Test rows are processed ``chunk_size`` at a time, so memory is
    O(chunk_size * n_train) rather than O(n_test * n_train). Votes are computed as
    exp((sim - max_sim) / T), which leaves the normalised scores unchanged but cannot overflow.
    """
    train = F.normalize(torch.as_tensor(np.ascontiguousarray(train_x), dtype=torch.float32), dim=1)
    test = F.normalize(torch.as_tensor(np.ascontiguousarray(test_x), dtype=torch.float32), dim=1)
    label_idx = torch.as_tensor(np.searchsorted(classes, train_y), dtype=torch.long)
    k = min(k, train.shape[0])
    probs = np.empty((test.shape[0], len(classes)), dtype=np.float64)
    nearest = np.empty(test.shape[0], dtype=np.int64)
    with torch.inference_mode():
        for start in range(0, test.shape[0], chunk_size):
            sim = test[start : start + chunk_size] @ train.T
            top_sim, top_idx = sim.topk(k, dim=1)  # sorted, most similar first
            top_sim = top_sim.double()
            weights = torch.exp((top_sim - top_sim[:, :1]) / temperature)
            votes = torch.zeros(sim.shape[0], len(classes), dtype=torch.float64)
            votes.scatter_add_(1, label_idx[top_idx], weights)
            probs[start : start + sim.shape[0]] = (votes / votes.sum(dim=1, keepdim=True)).numpy()
            nearest[start : start + sim.shape[0]] = classes[label_idx[top_idx[:, 0]].numpy()]
    return probs, nearest


def knn_probe(
    train_x,
    train_y,
    test_x,
    test_y,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> dict[str, Any]:
    """Weighted kNN probe of the test split against the whole training split.

    Returns ``{"probe": "knn", "k", "temperature", "n_train", "n_test", "classes", "auroc",
    "accuracy", "accuracy_k1"}``: AUROC from the normalised class votes (binary: the larger
    label; multiclass: one-vs-rest macro), accuracy from their argmax, and for reference the
    plain 1-nearest-neighbour accuracy. ``k`` larger than the training split is clipped.
    """
    tr_x, tr_y, te_x, te_y, classes = check_split_pair(train_x, train_y, test_x, test_y)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise MedrepError(f"k must be a positive integer, got {k!r}", where="k")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise MedrepError(f"temperature must be a positive number, got {temperature!r}", where="temperature")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise MedrepError(f"chunk_size must be a positive integer, got {chunk_size!r}", where="chunk_size")
    k_used = int(min(k, tr_y.size))
    probs, nearest = knn_scores(tr_x, tr_y, te_x, classes, k_used, float(temperature), int(chunk_size))
    return {
        "probe": "knn",
        "k": k_used,
        "temperature": float(temperature),
        "n_train": int(tr_y.size),
        "n_test": int(te_y.size),
        "classes": classes.tolist(),
        "auroc": auroc(te_y, probs, classes),
        "accuracy": accuracy(te_y, probs, classes),
        "accuracy_k1": float(np.mean(nearest == te_y)),
    }
