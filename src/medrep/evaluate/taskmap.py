"""The analysis of a task embedding (TaCo, ``medrep evaluate taskmap``; METHODS.md "TaCo", analyses).

Given an encoder, 2D slices (each of a data set and a split, :mod:`.task_slices`) and tasks:

1. ``samples_per_task`` true pairs per task (strength uniform in [0.25, 1], seeded) of the held-out
   (test) images, embedded under a reading mode (:mod:`.task_features`: ``pair`` for a TaCo encoder,
   ``concat`` or ``diff`` for any other medrep encoder as a baseline);
2. the task x task cosine similarity of their centroids, and each task's 3 nearest tasks;
3. the 2D map (UMAP or PCA, :mod:`.embedding_map`) coloured by family, task and data set;
4. k-means against family, task and data-set labels (NMI, ARI) and their silhouettes;
5. kNN task accuracy, fitted on pairs of the train images and scored on the held-out ones; and, for a
   named held-out data set, fitted on the other sets' pairs and scored on that set's;
6. strength sweeps (0..1) of a few tasks on ``sweep_images`` images: the distance from strength 0 and
   its Spearman correlation with the strength.

Written into the ``out`` folder: ``taskmap.json`` (options, encoder, counts, every metric),
``similarity.png``, ``map_family.png``, ``map_task.png``, ``map_dataset.png``, ``map.csv``,
``trajectories.png``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import MedrepError
from ..results import format_table, write_json
from ..tasks.base import TASKS, Task, get_task, select_tasks, task_names
from ..tasks.pairs import SliceLike, TaskPairs
from .embedding_map import plot_map, project, silhouettes
from .encoder import resolve_device, resolve_encoder
from .split_map import encoder_name
from .task_features import PairReader, SweepPairs, check_read, embed_pairs, encoder_channels
from .task_metrics import cluster_scores, family_similarity, knn_task_accuracy, nearest_tasks, task_similarity, trajectory_scores
from .task_plots import plot_similarity, plot_trajectories
from .task_slices import slice_splits

STRENGTH = (0.25, 1.0)
DEFAULT_SWEEP = ("rotate", "denoise_gaussian")
LABELLINGS = ("family", "task", "dataset")
COLUMNS = ["metric", "value"]


def default_sweep() -> list[str]:
    """rotate, denoise_gaussian, and the first brightness task, of those registered."""
    names = task_names()
    bright = [n for n in names if n.startswith("brightness")]
    return [n for n in DEFAULT_SWEEP if n in TASKS] + bright[:1]


def choose_tasks(slices: Sequence[SliceLike], names: Sequence[str] | None = None, families: Sequence[str] | None = None
                 ) -> tuple[list[Task], list[str]]:
    """``(tasks, skipped)``. Tasks named are kept (a mask task without masks is then an error later);
    tasks taken by family or as all of them leave out those that need a mask when no slice has one."""
    tasks = select_tasks(list(names) if names else None, list(families) if families else None)
    if names or any(s.mask is not None for s in slices):
        return tasks, []
    return [t for t in tasks if not t.needs_mask], [t.name for t in tasks if t.needs_mask]


def taskmap(
    encoder: torch.nn.Module | str | Path,
    slices: Sequence[SliceLike],
    splits: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    families: Sequence[str] | None = None,
    *,
    read: str | None = None,
    random_init: bool = False,
    samples_per_task: int = 24,
    heldout_set: str | None = None,
    sweep: Sequence[str] | None = None,
    sweep_images: int = 8,
    sweep_steps: int = 11,
    method: str = "umap",
    seed: int = 0,
    batch_size: int = 128,
    device: str = "auto",
    out: str | Path = "taskmap",
    progress: bool = True,
) -> dict[str, Any]:
    """Run the analysis (module docstring), write its files into ``out``; return the JSON's dict.

    ``splits`` gives each slice's split (train or test); None reads each record's ``split``.
    ``encoder`` is a module or an exported encoder's path (``random_init``: its architecture with
    seeded random weights). Everything is checked before the first pair is embedded."""
    for name, value, low in (("samples_per_task", samples_per_task, 2), ("sweep_images", sweep_images, 1), ("sweep_steps", sweep_steps, 3),
                             ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise MedrepError(f"must be an integer of at least {low}, got {value!r}", name)
    split_of = slice_splits(slices, splits)
    test = [s for s, sp in zip(slices, split_of) if sp == "test"]
    fit = [s for s, sp in zip(slices, split_of) if sp == "train"]
    if not test or not fit:
        raise MedrepError(f"needs train and test slices, got {len(fit)} train and {len(test)} test", "splits")
    shapes = sorted({tuple(np.shape(s.image)) for s in slices})
    if len(shapes) > 1:
        raise MedrepError(f"slices differ in shape ({shapes[:4]}); resize them to one size", "slices")
    chosen, skipped = choose_tasks(slices, tasks, families)
    if len(chosen) < 2:
        raise MedrepError(f"a task map needs at least 2 tasks, got {[t.name for t in chosen]}", "tasks")
    sets = sorted({s.source for s in slices})
    if heldout_set is not None and heldout_set not in sets:
        raise MedrepError(f"no data set {heldout_set!r}; data sets: {', '.join(sets)}", "heldout_set")
    if heldout_set is not None and len(sets) < 2:
        raise MedrepError("a held-out data set needs another data set to fit on", "heldout_set")
    swept = _sweep_tasks(sweep, test)
    with torch.random.fork_rng(devices=[]):  # seeded random weights; the caller's RNG is left alone
        torch.manual_seed(seed)
        module, name = resolve_encoder(encoder, random_init)
    channels = encoder_channels(module)
    read = check_read(read, channels)
    dev = resolve_device(device)
    reader = PairReader(module, read).to(dev)

    pools = {split: TaskPairs(part, chosen, draws=samples_per_task, failure_rate=0.0, strength=STRENGTH, seed=seed + i)
             for i, (split, part) in enumerate((("test", test), ("train", fit)))}
    keys = [(t, d) for t in range(len(chosen)) for d in range(samples_per_task)]
    emb = {}
    for split, pool in pools.items():
        x, meta = embed_pairs(reader, pool, keys, batch_size, dev, progress, desc=f"{split} pairs")
        emb[split] = (x, meta["task"].astype(np.int64), np.asarray(pool.sets)[meta["dataset"]], meta["strength"])
    x, y, data_sets, strength = emb["test"]
    names = [t.name for t in chosen]
    fams = [t.family for t in chosen]
    labels = {"family": np.asarray(fams)[y], "task": np.asarray(names)[y], "dataset": data_sets}

    sim = task_similarity(x, y, len(chosen))
    coords = project(x, method=method, seed=seed, **({"n_neighbors": min(15, len(y) - 1)} if method == "umap" else {}))
    clusters = {k: {**cluster_scores(x, v, seed), "silhouette": silhouettes(x, coords, v, seed)} for k, v in labels.items()}
    fx, fy, fsets, _ = emb["train"]
    knn = {"heldout_images": knn_task_accuracy(fx, fy, x, y)}
    if heldout_set is not None:
        other, own = fsets != heldout_set, data_sets == heldout_set
        if not own.any():
            raise MedrepError(f"no held-out pair was drawn from data set {heldout_set!r}; raise samples_per_task", "heldout_set")
        knn["heldout_set"] = {"set": heldout_set, **knn_task_accuracy(fx[other], fy[other], x[own], y[own])}
    trajectories = {t.name: _trajectory(reader, t, test, sweep_images, sweep_steps, seed, batch_size, dev, progress) for t in swept}

    out = Path(out)
    files = _write_figures(out, sim, names, fams, coords, labels, strength, trajectories, name, random_init, read, method, seed)
    result: dict[str, Any] = {
        "task": "taskmap", "encoder": name, "random_init": random_init, "read": read, "in_channels": channels,
        "options": {"samples_per_task": samples_per_task, "strength": list(STRENGTH), "heldout_set": heldout_set,
                    "sweep_images": sweep_images, "sweep_steps": sweep_steps, "method": method, "seed": seed, "normalise": "l2"},
        "tasks": [{"name": t.name, "family": t.family} for t in chosen], "skipped_tasks": skipped, "families": sorted(set(fams)),
        "datasets": {s: {"train": sum(1 for v in fit if v.source == s), "test": sum(1 for v in test if v.source == s)} for s in sets},
        "samples": {"test": len(y), "train": len(fy)},
        "similarity": {"tasks": names, "matrix": np.round(sim, 6).tolist(), **family_similarity(sim, fams)},
        "nearest_tasks": nearest_tasks(sim, names), "clustering": clusters, "knn": knn, "trajectories": trajectories,
        "files": {k: str(v) for k, v in files.items()},
    }
    result["table"] = format_table(_rows(result), COLUMNS)
    write_json(out / "taskmap.json", result)
    return result


def _sweep_tasks(sweep: Sequence[str] | None, test: Sequence[SliceLike]) -> list[Task]:
    masks = any(s.mask is not None for s in test)
    if sweep is None:
        return [get_task(n) for n in default_sweep() if masks or not get_task(n).needs_mask]
    tasks = [get_task(n) for n in sweep]
    for t in tasks:
        if t.needs_mask and not masks:
            raise MedrepError(f"task {t.name!r} needs a mask, and no held-out slice has one", "sweep")
    return tasks


def _trajectory(reader, task: Task, test: Sequence[SliceLike], m: int, steps: int, seed: int, batch_size: int, dev, progress) -> dict:
    eligible = [s for s in test if s.mask is not None or not task.needs_mask]
    pick = np.random.default_rng(seed).choice(len(eligible), min(m, len(eligible)), replace=False)
    strengths = np.linspace(0.0, 1.0, steps)
    pairs = SweepPairs(task, [eligible[i] for i in sorted(pick)], strengths, seed)
    x, _ = embed_pairs(reader, pairs, pairs.keys(), batch_size, dev, progress, desc=f"sweep {task.name}")
    return {"family": task.family, **trajectory_scores(x.reshape(len(pick), steps, -1), strengths)}


def _write_figures(out: Path, sim, names, fams, coords, labels, strength, trajectories, name, random_init, read, method,
                   seed) -> dict[str, Path]:
    kind = "random-init" if random_init else "pretrained"
    head = f"{encoder_name(name)} ({kind}, read {read})"
    files = {"json": out / "taskmap.json", "csv": out / "map.csv"}
    files["similarity"] = plot_similarity(out / "similarity.png", sim, names, fams, f"{head}: task similarity")
    for key, values in labels.items():
        files[f"map_{key}"] = plot_map(out / f"map_{key}.png", coords, values, title=f"{head}: {method.upper()} by {key}",
                                       axis=method.upper(), seed=seed)
    if trajectories:
        files["trajectories"] = plot_trajectories(out / "trajectories.png", trajectories, f"{head}: strength sweeps")
    with open(files["csv"], "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["index", "x", "y", *LABELLINGS, "strength"])
        for i in range(len(coords)):
            writer.writerow([i, f"{coords[i, 0]:.6g}", f"{coords[i, 1]:.6g}", *(labels[k][i] for k in LABELLINGS), f"{strength[i]:.4f}"])
    return files


def _rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The printed table: one row per metric."""
    rows = [{"metric": "kNN task accuracy, held-out images", "value": result["knn"]["heldout_images"]["accuracy"]}]
    if "heldout_set" in result["knn"]:
        h = result["knn"]["heldout_set"]
        rows.append({"metric": f"kNN task accuracy, held-out set {h['set']}", "value": h["accuracy"]})
    for key in LABELLINGS:
        c = result["clustering"][key]
        rows += [{"metric": f"k-means NMI, {key} (k={c['k']})", "value": c["nmi"]}, {"metric": f"k-means ARI, {key}", "value": c["ari"]},
                 {"metric": f"silhouette, {key}", "value": c["silhouette"]["features"]}]
    sim = result["similarity"]
    rows += [{"metric": "task similarity within family", "value": sim["within_family"]},
             {"metric": "task similarity between families", "value": sim["between_families"]}]
    for n, t in result["trajectories"].items():
        for key, what in (("spearman", "cosine"), ("spearman_euclidean", "Euclidean")):
            rows.append({"metric": f"Spearman(strength, {what} distance), {n}", "value": t[key] if t[key]["mean"] is not None else None})
    return rows
