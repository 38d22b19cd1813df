"""The numbers of ``medrep evaluate taskmap`` (TaCo), as pure functions of feature arrays, so each is
tested on hand-made features: task x task similarity and nearest tasks, k-means agreement with a
labelling, kNN task accuracy, and how a strength sweep moves an embedding.

Every function reads the features L2-normalised (:func:`~.embedding_map.l2_normalise`), as the
map, the kNN probe and the contrastive losses do: a feature's direction carries the meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import MedrepError
from ._checks import check_features, check_labels
from .embedding_map import l2_normalise
from .knn import knn_scores

#: neighbours of the kNN task probe (clipped to the fitted samples)
KNN_K = 20


def task_similarity(features: np.ndarray, tasks: np.ndarray, n_tasks: int) -> np.ndarray:
    """``(n_tasks, n_tasks)`` cosine similarity of the task centroids (means of the unit feature rows,
    then scaled to unit length): symmetric, ones on the diagonal. Every task needs a sample."""
    x = l2_normalise(features)
    y = check_labels(tasks, x.shape[0], "tasks")
    missing = sorted(set(range(n_tasks)) - set(y.tolist()))
    if missing:
        raise MedrepError(f"tasks {missing} have no sample", "tasks")
    centroids = l2_normalise(np.stack([x[y == t].mean(axis=0) for t in range(n_tasks)]))
    sim = np.clip(centroids @ centroids.T, -1.0, 1.0)
    sim = (sim + sim.T) / 2  # exactly symmetric, whatever the rounding of the product
    np.fill_diagonal(sim, 1.0)
    return sim


def nearest_tasks(similarity: np.ndarray, names: Sequence[str], k: int = 3) -> dict[str, list[dict[str, Any]]]:
    """Each task's ``k`` most similar other tasks, most similar first: ``{name: [{task, similarity}]}``."""
    sim = np.asarray(similarity, dtype=np.float64)
    out = {}
    for i, name in enumerate(names):
        order = [j for j in np.argsort(-sim[i], kind="stable") if j != i][:k]
        out[str(name)] = [{"task": str(names[j]), "similarity": float(sim[i, j])} for j in order]
    return out


def family_similarity(similarity: np.ndarray, families: Sequence[str]) -> dict[str, float | None]:
    """Mean similarity of distinct tasks of one family and of tasks of different families (None when
    no such pair): a map that groups tasks by family has the first well above the second."""
    fam = np.asarray(families)
    same = fam[:, None] == fam[None, :]
    off = ~np.eye(len(fam), dtype=bool)
    sim = np.asarray(similarity, dtype=np.float64)

    def mean(where: np.ndarray) -> float | None:
        return float(sim[where].mean()) if where.any() else None

    return {"within_family": mean(same & off), "between_families": mean(~same)}


def cluster_scores(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """k-means with k = the number of label classes on the unit feature rows, scored against the labels:
    NMI and ARI (1 when the clusters are the classes, about 0 for chance). None when fewer than 2
    classes, or no fewer points than classes."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    x = l2_normalise(features)
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise MedrepError(f"need one label per row ({x.shape[0]}), got shape {y.shape}", "labels")
    k = int(np.unique(y).size)
    if not 2 <= k < x.shape[0]:
        return {"k": k, "nmi": None, "ari": None}
    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    return {"k": k, "nmi": float(normalized_mutual_info_score(y, clusters)), "ari": float(adjusted_rand_score(y, clusters))}


def knn_task_accuracy(fit_x: np.ndarray, fit_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, k: int = KNN_K) -> dict[str, Any]:
    """Weighted kNN (cosine, :func:`~.knn.knn_scores`) of the test samples' task against the fitted
    ones: ``accuracy`` (the vote), ``accuracy_k1`` (the nearest sample). Test samples of a task with
    no fitted sample cannot be scored and are counted in ``dropped``."""
    fx = check_features(fit_x, "fit_x")
    fy = check_labels(fit_y, fx.shape[0], "fit_y")
    tx = check_features(test_x, "test_x")
    ty = check_labels(test_y, tx.shape[0], "test_y")
    if tx.shape[1] != fx.shape[1]:
        raise MedrepError(f"{tx.shape[1]} features per row, but fit_x has {fx.shape[1]}", "test_x")
    classes = np.unique(fy)
    seen = np.isin(ty, classes)
    if not seen.any():
        raise MedrepError("no test sample is of a task that was fitted", "test_y")
    k = int(min(k, fy.size))
    probs, nearest = knn_scores(fx, fy, tx[seen], classes, k)
    return {"accuracy": float(np.mean(classes[probs.argmax(axis=1)] == ty[seen])), "accuracy_k1": float(np.mean(nearest == ty[seen])),
            "k": k, "n_fit": int(fy.size), "n_test": int(seen.sum()), "dropped": int((~seen).sum())}


def trajectory_scores(embeddings: np.ndarray, strengths: Sequence[float]) -> dict[str, Any]:
    """A strength sweep of M images, ``embeddings`` ``(M, S, F)`` at the ``S`` ``strengths`` (the first
    the baseline): the cosine distance of each embedding from its image's first one, the Spearman
    correlation of strength and distance per image (1: the embedding moves steadily away as the task
    grows), and its mean and spread over images. ``spearman_euclidean`` does the same with the
    Euclidean distance of the raw embeddings, which stays defined where the first embedding is zero
    (the ``diff`` reading of an identity pair), where the cosine distance is not. An image whose
    distances are all equal or undefined has no correlation and is left out of the means
    (``spearman_undefined`` counts them)."""
    e = np.asarray(embeddings, dtype=np.float64)
    s = np.asarray(strengths, dtype=np.float64)
    if e.ndim != 3 or e.shape[1] != s.size or s.size < 3:
        raise MedrepError(f"need (images, {s.size} strengths, features) with 3 or more strengths, got {e.shape}", "embeddings")
    m, n_s, f = e.shape
    unit = l2_normalise(e.reshape(-1, f)).reshape(m, n_s, f)
    cosine = np.clip(1.0 - np.einsum("msf,mf->ms", unit, unit[:, 0]), 0.0, 2.0)
    valid = np.linalg.norm(e[:, 0], axis=1) > 0
    cosine[~valid] = np.nan  # a zero first embedding has no direction to measure from
    euclid = np.linalg.norm(e - e[:, :1], axis=2)
    rho, rho_e = _spearman_rows(s, cosine), _spearman_rows(s, euclid)
    none = [None] * n_s
    return {"strengths": s.tolist(), "images": m,
            "distance_mean": cosine[valid].mean(axis=0).tolist() if valid.any() else none,
            "distance_std": cosine[valid].std(axis=0).tolist() if valid.any() else none,
            "spearman": _mean_std(rho), "spearman_per_image": [float(r) if np.isfinite(r) else None for r in rho],
            "spearman_undefined": int((~np.isfinite(rho)).sum()), "spearman_euclidean": _mean_std(rho_e)}


def _spearman_rows(strengths: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Spearman correlation of ``strengths`` with each row (NaN for a constant or undefined row)."""
    from scipy.stats import spearmanr

    return np.asarray([spearmanr(strengths, row).statistic if np.isfinite(row).all() and np.ptp(row) > 1e-12 else np.nan
                       for row in distances], dtype=np.float64)


def _mean_std(values: np.ndarray) -> dict[str, float | None]:
    ok = np.isfinite(values)
    return {"mean": float(values[ok].mean()), "std": float(values[ok].std())} if ok.any() else {"mean": None, "std": None}
