"""2D maps of embeddings: project (N, F) features to (N, 2) with UMAP or PCA, score how well the
labels separate before and after, and write the map as a CSV and a PNG.

Nothing here knows about encoders or data sets: the features may be images' (``medrep evaluate
map``) or tasks' (TaCo), the labels integer classes or names, so that every map in the project is
drawn and scored the same way.

Features are L2-normalised before projection. The self-supervised and image-text losses compare
embeddings by cosine similarity, and the kNN probe does too, so the direction of a feature vector
is what carries meaning, not its length; on unit vectors Euclidean distance is a monotone function
of cosine distance, so UMAP's neighbours are the cosine neighbours. Standardising instead would
give every feature unit variance, blowing nearly-dead channels (common after ReLU and pooling) up
to the size of the informative ones.

UMAP (umap-learn) is optional and imported only when asked for: its numba import takes a second
or two and its first call compiles for several more.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np

from ..errors import MedrepError
from ..options import NonNegativeInt, Range, checked
from ._checks import check_features

MapMethod = Literal["umap", "pca"]
METHODS: tuple[str, ...] = ("umap", "pca")
#: UMAP's spectral initialisation needs a few more points than dimensions.
MIN_UMAP_POINTS = 4
#: Silhouette needs all pairwise distances; above this many points it is computed on a random sample.
SILHOUETTE_SAMPLE = 5000
#: Most classes named in the legend (the largest ones); the rest are counted in one line.
LEGEND_CLASSES = 30

Neighbours = Annotated[int, Range(ge=2)]
MinDist = Annotated[float, Range(ge=0, le=1)]  # UMAP's default spread is 1, and min_dist may not exceed it


def l2_normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (an all-zero row stays zero)."""
    x = check_features(features, "features").astype(np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


@checked("")
def project(
    features: np.ndarray, method: MapMethod = "umap", seed: NonNegativeInt = 0, n_neighbors: Neighbours = 15, min_dist: MinDist = 0.1,
) -> np.ndarray:
    """(N, 2) float32 coordinates of the L2-normalised ``features``: ``umap`` (``n_neighbors``,
    ``min_dist``) or ``pca``. The same ``seed`` gives the same map: UMAP runs single-threaded with
    ``random_state=seed``, and the order of its parallel updates is then fixed."""
    x = l2_normalise(features)
    n, f = x.shape
    if f < 2:
        raise MedrepError(f"a 2D map needs features of at least 2 dimensions, got {f}", "features")
    if method == "pca":
        if n < 2:
            raise MedrepError(f"PCA needs at least 2 points, got {n}", "features")
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x).astype(np.float32)
    if n < MIN_UMAP_POINTS:
        raise MedrepError(f"UMAP needs at least {MIN_UMAP_POINTS} points, got {n}; use method pca", "features")
    if n_neighbors >= n:
        raise MedrepError(f"must be smaller than the number of points ({n}), got {n_neighbors}", "n_neighbors")
    try:
        import umap
    except ImportError as exc:
        raise MedrepError(f"umap-learn is not installed ({exc}): pip install umap-learn (or medrep[map]), or use method pca",
                          "method") from exc
    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=min_dist, metric="euclidean", random_state=seed, n_jobs=1)
    return np.asarray(reducer.fit_transform(x), dtype=np.float32)


def map_labels(labels: Sequence[Any] | np.ndarray, n: int, class_names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, names)``: labels as an int64 or str array of length ``n`` and each point's display
    name. Integer labels are named by ``class_names[label]`` when given, else by their number;
    string labels (task names, say) name themselves, and then ``class_names`` is refused."""
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != n:
        raise MedrepError(f"need one label per point ({n}), got shape {y.shape}", "labels")
    if y.dtype.kind in "US" or (y.dtype == object and all(isinstance(v, str) for v in y)):
        if class_names is not None:
            raise MedrepError("labels are names already; class_names is for integer labels", "class_names")
        y = y.astype(str)
        return y, y
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    if y.dtype.kind not in "iub":
        raise MedrepError(f"labels must be integer classes or names, got dtype {y.dtype}", "labels")
    y = y.astype(np.int64)
    if class_names is None:
        return y, y.astype(str)
    names = np.asarray([str(c) for c in class_names])
    bad = sorted({int(v) for v in y if not 0 <= v < len(names)})
    if bad:
        raise MedrepError(f"{len(names)} names ({', '.join(names)}) do not cover classes {bad}", "class_names")
    return y, names[y]


def silhouettes(features: np.ndarray, coords: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, float | None]:
    """Silhouette of the labels in feature space (cosine distance, the geometry the map is built on)
    and in the map (Euclidean): near 1 when classes form tight separate clusters, near 0 when they
    overlap. ``None`` when undefined (fewer than 2 classes, or every point its own class). Above
    :data:`SILHOUETTE_SAMPLE` points both are computed on the same seeded random sample."""
    from sklearn.metrics import silhouette_score

    y = np.asarray(labels)
    k = np.unique(y).size
    if not 2 <= k <= len(y) - 1:
        return {"features": None, "map": None}
    sample = None if len(y) <= SILHOUETTE_SAMPLE else SILHOUETTE_SAMPLE

    def score(x: np.ndarray, metric: str) -> float:
        return float(silhouette_score(x, y, metric=metric, sample_size=sample, random_state=seed))

    return {"features": score(check_features(features, "features"), "cosine"), "map": score(check_features(coords, "coords"), "euclidean")}


def class_counts(labels: np.ndarray, names: np.ndarray) -> list[dict[str, Any]]:
    """One entry per class, in label order: label, name and count."""
    values, first, counts = np.unique(labels, return_index=True, return_counts=True)
    return [{"label": v.item(), "name": str(names[i]), "count": int(c)} for v, i, c in zip(values, first, counts)]


def write_map_csv(
    path: str | Path, coords: np.ndarray, labels: np.ndarray, names: np.ndarray | None = None, index: Sequence[int] | None = None,
    ids: Sequence[str] | None = None, id_column: str = "id",
) -> Path:
    """One row per point: ``index`` (position in the split; default 0..N-1), ``x``, ``y``, ``label``,
    ``label_name`` when ``names`` differ from the labels, and ``id_column`` when ``ids`` are given."""
    coords = check_features(coords, "coords")
    n = coords.shape[0]
    index = np.arange(n) if index is None else np.asarray(index)
    columns = {"index": index, "x": coords[:, 0], "y": coords[:, 1], "label": np.asarray(labels)}
    if names is not None and not np.array_equal(np.asarray(names).astype(str), np.asarray(labels).astype(str)):
        columns["label_name"] = np.asarray(names)
    if ids is not None:
        columns[id_column] = np.asarray(ids)
    for name, values in columns.items():
        if len(values) != n:
            raise MedrepError(f"{len(values)} values for {n} points", name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for i in range(n):
            writer.writerow([f"{v[i]:.6g}" if k in ("x", "y") else v[i] for k, v in columns.items()])
    return path


def _colours(k: int) -> np.ndarray:
    import matplotlib.pyplot as plt

    if k <= 10:
        return plt.get_cmap("tab10")(np.arange(k))
    if k <= 20:
        return plt.get_cmap("tab20")(np.arange(k))
    return plt.get_cmap("turbo")(np.linspace(0.05, 0.95, k))


def plot_map(
    path: str | Path, coords: np.ndarray, labels: np.ndarray, names: np.ndarray | None = None, title: str = "", axis: str = "",
    seed: int = 0,
) -> Path:
    """Scatter of the map, one colour per class, legend ``name (n=count)``; written as a PNG.
    Points are drawn in a seeded random order so that no class is hidden under the one drawn last."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    coords = check_features(coords, "coords")
    labels = np.asarray(labels)
    names = labels.astype(str) if names is None else np.asarray(names)
    classes = class_counts(labels, names)
    colours = _colours(len(classes))
    which = np.searchsorted(np.unique(labels), labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7.5, 6), dpi=120)
    try:
        size = float(np.clip(4000 / len(labels), 2, 30))
        ax.scatter(coords[order, 0], coords[order, 1], c=colours[which[order]], s=size, alpha=0.8, linewidths=0)
        shown = sorted(range(len(classes)), key=lambda c: -classes[c]["count"])[:LEGEND_CLASSES]
        handles = [Line2D([], [], ls="", marker="o", color=colours[c], label=f"{classes[c]['name']} (n={classes[c]['count']})")
                   for c in sorted(shown)]
        if len(classes) > LEGEND_CLASSES:
            handles.append(Line2D([], [], ls="", label=f"... {len(classes) - LEGEND_CLASSES} smaller classes"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False,
                  ncol=1 + len(handles) // 26)
        ax.set_xlabel(f"{axis} 1" if axis else "")
        ax.set_ylabel(f"{axis} 2" if axis else "")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
