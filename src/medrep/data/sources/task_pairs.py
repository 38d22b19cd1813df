"""TaCo's data: the registered slice sets (:mod:`medrep.data.slices`) plus a user's own images.

Two sources read the same slice pool, so that TaCo and its baselines see the same images:

- ``tasks`` (kind ``tasks``): task samples, :class:`~medrep.tasks.pairs.TaskPairs` over the pool;
- ``slices`` (kind ``image``): the pool's images as plain image samples (label = data-set index),
  what SimCLR and the other image methods pretrain on for TaCo's baselines.

``data.sets`` names slice sets (None: every set available on this machine, ``[]``: none);
``data.path`` adds a user's folders, MedMNIST ``.npz`` files or manifests as one more set,
``user``, without masks (so it serves every task that needs none). ``data.holdout`` of each set's
slices (by a seeded shuffle of their ids) form the ``test`` split: the held-out images of
``evaluate taskmap``. Slices of one volume are separate images here: for a volume set "held out"
means other slices of the same subject; ``data.exclude_sets`` (leave one data set out) is the
stronger test.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import RecipeError
from .registry import Source, register_source

OPTIONS: dict[str, Any] = {
    "sets": None, "exclude_sets": [], "slices_per_set": 64, "holdout": 0.2,
    "tasks": None, "families": None, "draws": 4096, "failure_rate": 0.2, "strength": [0.25, 1.0], "crop": None,
    "tasks_per_batch": 8, "task_seed": 0,
}
SLICE_OPTIONS = ("sets", "exclude_sets", "slices_per_set", "holdout")
DEFAULT_SIZE = 64


def _names(value: Any, key: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise RecipeError(f"must be a list of names, got {value!r}", f"data.{key}")
    return list(value)


def _check(data: dict[str, Any]) -> None:
    """The keys' types and ranges; names (sets, tasks) are checked when the data is built."""
    for key in ("sets", "exclude_sets", "tasks", "families"):
        _names(data.get(key, OPTIONS[key]), key)
    for key in ("slices_per_set", "draws", "tasks_per_batch"):
        value = data.get(key, OPTIONS[key])
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RecipeError(f"must be a positive integer, got {value!r}", f"data.{key}")
    for key, upper in (("holdout", 0.9), ("failure_rate", 0.95)):
        value = data.get(key, OPTIONS[key])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= upper:
            raise RecipeError(f"must be a number in [0, {upper}], got {value!r}", f"data.{key}")
    lo_hi = data.get("strength", OPTIONS["strength"])
    if (not isinstance(lo_hi, (list, tuple)) or len(lo_hi) != 2 or not all(isinstance(v, (int, float)) for v in lo_hi)
            or not 0 <= lo_hi[0] <= lo_hi[1] <= 1):
        raise RecipeError(f"must be [low, high] with 0 <= low <= high <= 1, got {lo_hi!r}", "data.strength")
    crop = data.get("crop", OPTIONS["crop"])
    if crop is not None and (isinstance(crop, bool) or not isinstance(crop, int) or crop < 8):
        raise RecipeError(f"must be null or an integer >= 8, got {crop!r}", "data.crop")


def slice_size(data: dict[str, Any]) -> int:
    size = data.get("size")
    if size is None:
        return DEFAULT_SIZE
    sizes = [size] if isinstance(size, int) else list(size)
    if len(set(sizes)) != 1:
        raise RecipeError(f"slices are square: give one side, got {size!r}", "data.size")
    return int(sizes[0])


def load_pool(data: dict[str, Any]) -> list:
    """Every slice of the chosen sets (and the user's data), in a fixed order."""
    from ..slices import get_slice_set, slice_set_names, user_slice_set

    names = _names(data.get("sets"), "sets")
    excluded = set(_names(data.get("exclude_sets"), "exclude_sets") or [])
    for name in [*(names or []), *excluded]:
        get_slice_set(name)  # an unknown name is an error suggesting close ones
    if names is None:
        names = [n for n in slice_set_names() if get_slice_set(n).available()[0]]
    sets = [get_slice_set(n) for n in names if n not in excluded]
    if data.get("path"):
        paths = data["path"] if isinstance(data["path"], (list, tuple)) else [data["path"]]
        sets.append(user_slice_set([Path(p) for p in paths]))
    if not sets:
        raise RecipeError("no slice set left to read (data.sets, data.exclude_sets and data.path select none)", "data.sets")
    size, per_set = slice_size(data), int(data.get("slices_per_set", OPTIONS["slices_per_set"]))
    pool = []
    for s in sets:
        pool += s.load(per_set, size, np.random.default_rng(zlib.crc32(s.name.encode())))
    return pool


def split_pool(pool: list, split: str | None, holdout: float) -> list:
    """``train`` / ``test`` (the held-out images) / None (all): per set, a seeded shuffle of slice ids."""
    if split is None:
        return pool
    if split not in ("train", "test"):
        raise RecipeError(f"task data has the splits train and test (held-out images), got {split!r}", "data.split")
    out = []
    for name in sorted({s.source for s in pool}):
        members = sorted((s for s in pool if s.source == name), key=lambda s: s.id)
        order = np.random.default_rng(zlib.crc32(name.encode())).permutation(len(members))
        n_test = int(round(holdout * len(members)))
        chosen = set(order[:n_test] if split == "test" else order[n_test:])
        out += [m for i, m in enumerate(members) if i in chosen]
    return out


def task_samples(data: dict[str, Any], split: str | None):
    from ...tasks import TaskError, select_tasks
    from ...tasks.pairs import TaskPairs

    try:
        tasks = select_tasks(_names(data.get("tasks"), "tasks"), _names(data.get("families"), "families"))
    except TaskError as err:
        text = str(err)[len(err.where) + 2:] if err.where else str(err)  # the recipe key replaces "task"/"family"
        raise RecipeError(text, "data.families" if err.where == "family" else "data.tasks") from err
    slices = split_pool(load_pool(data), split, float(data.get("holdout", OPTIONS["holdout"])))
    return TaskPairs(slices, tasks, draws=int(data.get("draws", OPTIONS["draws"])),
                     failure_rate=float(data.get("failure_rate", OPTIONS["failure_rate"])),
                     strength=tuple(data.get("strength", OPTIONS["strength"])), crop=data.get("crop"),
                     tasks_per_batch=int(data.get("tasks_per_batch", OPTIONS["tasks_per_batch"])),
                     seed=int(data.get("task_seed", OPTIONS["task_seed"])))


class SliceImages:
    """The pool as image samples: ``image`` (1, H, W), ``label`` = data-set index, ``meta`` with set and id."""

    def __init__(self, slices: list, transform=None):
        self.slices, self.transform = slices, transform
        self.sets = sorted({s.source for s in slices})
        self.labels = [self.sets.index(s.source) for s in slices]

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        s = self.slices[i]
        sample = {"image": torch.from_numpy(s.image[None].copy()), "spacing": torch.ones(2), "label": torch.tensor(self.labels[i]),
                  "meta": {"path": s.id, "set": s.source, "modality": s.modality}}
        return self.transform(sample) if self.transform is not None else sample


def slice_images(data: dict[str, Any], split: str | None, **common) -> SliceImages:
    if common.get("spatial_dims") not in (None, 2):
        raise RecipeError("slices are 2D images", "data.spatial_dims")
    return SliceImages(split_pool(load_pool(data), split, float(data.get("holdout", OPTIONS["holdout"]))), common.get("transform"))


def example(root: Path, spatial_dims: int = 2) -> dict[str, Any]:
    """A folder of 8 PNG images read as the user's set (no registered set: the example needs no data)."""
    from ..synthetic import write_png

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:40, 0:40] / 40
    for i in range(8):
        blob = ((x - 0.3 - 0.05 * i) ** 2 + (y - 0.5) ** 2 < 0.05).astype(float)
        write_png(Path(root) / f"img{i}.png", (255 * np.clip(0.2 + 0.5 * blob + 0.1 * rng.random((40, 40)), 0, 1)).astype(np.uint8))
    return {"path": str(root), "sets": [], "size": 32}


def _maskless() -> list[str]:
    from ...tasks import get_task, task_names

    return [t for t in task_names() if not get_task(t).needs_mask]


register_source(Source(
    name="tasks", kind="tasks", summary="TaCo task samples: (input, target) pairs of the registered tasks on the slice sets "
                                        "(medrep list) and data.path", task_samples=task_samples,
    options=OPTIONS, check=_check, supported_dims=(2,),
    example=lambda root, spatial_dims=2: {"source": "tasks", **example(root), "tasks_per_batch": 2, "tasks": _maskless()},
))
register_source(Source(
    name="slices", kind="image", summary="the slice sets' images (TaCo's pool) as plain images, label = data set",
    images=slice_images, options={k: OPTIONS[k] for k in SLICE_OPTIONS}, supported_dims=(2,),
    example=lambda root, spatial_dims=2: {"source": "slices", **example(root)},
))
