"""The embedding map of one split under one encoder (``medrep evaluate map``): features from
:func:`~medrep.evaluate.frozen.split_features`, projected and scored by :mod:`.embedding_map`,
written as ``PREFIX.png``, ``PREFIX.csv`` and ``PREFIX.json``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MedrepError
from ..options import PositiveInt, check_options, check_value
from ..results import format_table, write_json
from .embedding_map import class_counts, map_labels, plot_map, project, silhouettes, write_map_csv
from .frozen import split_features
from .subsample import stratified_subsample

SUFFIXES = (".png", ".csv", ".json")
COLUMNS = ["encoder", "split", "method", "points", "classes", "silhouette_features", "silhouette_map"]


def map_paths(out: str | Path) -> dict[str, Path]:
    """``out`` a folder (one that exists, or written with a trailing slash): ``FOLDER/map.png`` and so
    on; otherwise a prefix (a .png/.csv/.json suffix is dropped): ``PREFIX.png``, ``.csv``, ``.json``."""
    text = str(out)
    path = Path(text)
    if text.endswith(("/", "\\")) or path.is_dir():
        path = path / "map"
    elif path.suffix in SUFFIXES:
        path = path.with_suffix("")
    return {suffix[1:]: path.with_name(path.name + suffix) for suffix in SUFFIXES}


def encoder_name(path: str | Path) -> str:
    """The run's folder name for a run folder, its ``encoder/`` folder or a file in it (for the title)."""
    path = Path(path)
    if path.suffix in (".json", ".safetensors"):
        path = path.parent
    return path.parent.name if path.name == "encoder" and path.parent.name else path.name


def _subsample(labels: np.ndarray, max_points: int | None, seed: int) -> np.ndarray | None:
    """Stratified indices of at most about ``max_points`` points (None: keep all)."""
    if max_points is None or len(labels) <= max_points:
        return None
    return stratified_subsample(labels, max_points / len(labels), seed)


def split_map(
    encoder_path: str | Path,
    data: dict,
    split: str = "test",
    method: str = "umap",
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    max_points: int | None = None,
    class_names: Sequence[str] | None = None,
    random_init: bool = False,
    batch_size: int = 256,
    device: str = "auto",
    out: str | Path = "map",
) -> dict[str, Any]:
    """Map ``split`` of ``data`` under the encoder; write the PNG, the CSV (with the file of each point
    when the data set has files) and the JSON of settings and silhouettes; return the JSON's dict.

    ``max_points`` draws a stratified, seeded subsample before the encoder runs (the map and the
    plot of a very large split gain nothing from every point); the CSV's ``index`` is then each
    point's position in the whole split. ``seed`` also fixes the weights of a ``random_init``
    encoder. ``class_names`` names integer classes for data that carry no names (MedMNIST); data
    that name their classes (class folders, manifest names) refuse it.
    """
    import torch
    from torch.utils.data import Subset

    from ..checkpoint import load_encoder
    from ..data import build_dataset

    check_options(project, dict(method=method, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist), "", "map")  # before encoding
    check_value(max_points, PositiveInt | None, "max_points")
    with torch.random.fork_rng(devices=[]):  # seeded, so a random-init map reproduces; the caller's RNG is left alone
        torch.manual_seed(seed)
        encoder = load_encoder(encoder_path, weights=not random_init)
    dataset = build_dataset(data, split=split)
    known = list(getattr(dataset, "classes", None) or [])
    if class_names and known:
        raise MedrepError(f"the data name their classes ({', '.join(known)}); class names are for data that do not", "class_names")
    records = getattr(dataset, "records", None)
    ids = [str(r.path) for r in records] if records is not None else None
    index = np.arange(len(dataset))
    listed = getattr(dataset, "labels", None)  # labels known without reading images: subsample before encoding
    keep = _subsample(np.asarray(listed), max_points, seed) if listed is not None else None
    if keep is not None:
        index, dataset = keep, Subset(dataset, keep.tolist())
    feats, labels = split_features(encoder, data, split, batch_size, device, dataset=dataset)
    keep = _subsample(labels, max_points, seed)
    if keep is not None:  # a dataset that does not list its labels
        feats, labels, index = feats[keep], labels[keep], index[keep]
    y, names = map_labels(labels, len(labels), class_names or known or None)
    coords = project(feats, method=method, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist)
    scores = silhouettes(feats, coords, y, seed)

    paths = map_paths(out)
    kind = "random-init" if random_init else "pretrained"
    title = f"{encoder_name(encoder_path)} ({kind}), split {split}: {method.upper()} of {len(y)} points"
    write_map_csv(paths["csv"], coords, y, names, index, None if ids is None else [ids[i] for i in index], id_column="path")
    plot_map(paths["png"], coords, y, names, title, axis=method.upper(), seed=seed)
    classes = class_counts(y, names)
    row = {"encoder": kind, "split": split, "method": method, "points": len(y), "classes": len(classes),
           "silhouette_features": scores["features"], "silhouette_map": scores["map"]}
    result: dict[str, Any] = {
        "task": "map", "encoder": str(encoder_path), "random_init": random_init, "data": data, "split": split,
        "method": method, "seed": seed, "normalise": "l2", "max_points": max_points, "points": len(y),
        "classes": classes, "silhouette": scores, "files": {k: str(v) for k, v in paths.items()},
        "table": format_table([row], COLUMNS),
    }
    if method == "umap":
        result["umap"] = {"n_neighbors": n_neighbors, "min_dist": min_dist}
    write_json(paths["json"], result)
    return result
