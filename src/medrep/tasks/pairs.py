"""Task samples for TaCo: 2D slices x tasks -> channel-stacked (input, target) pairs, and the P x K batches.

Design choices (METHODS.md leaves them to us; each is an option where a user may want another):

- A sample is ``image = [input, target]`` stacked on channels, each half as 3 channels (a 1-channel
  half is repeated), so colour targets (colourisation) and gray ones share one encoder input of
  :data:`PAIR_CHANNELS` channels.
- Strength is drawn uniformly from ``strength`` (default 0.25-1). Not from 0: at strength 0 most
  generative and transformation tasks are the identity, and the pair (x, x) would belong to all of
  them at once; the strength sweep of ``evaluate taskmap`` still covers 0-1.
- A failure variant (target inconsistent with the input) replaces the true pair with probability
  ``failure_rate`` (default 0.2); the loss decides what a failure is (negative only, or a class).
- The only augmentation is a joint random crop of input and target (``crop``): rotation, flips,
  brightness and noise are tasks themselves, so an augmentation of that kind would blur the
  classes the encoder must tell apart.
- A task that needs a mask draws only from slices that have one; if no slice has one it is an error
  naming the task and the data sets.
- Which slice, strength, failure and crop a sample gets depends only on ``(seed, task, draw)``, so a
  batch is reproducible whatever the worker or process that builds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import BatchSampler, Dataset

from .base import FAMILIES, Task, TaskError

PAIR_CHANNELS = 6


class SliceLike(Protocol):
    image: np.ndarray  # (H, W) float32 in [0, 1]
    mask: np.ndarray | None
    source: str
    id: str


def stack_pair(inp: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` input and target (C 1 or 3) -> ``(6, H, W)``: each half as 3 channels."""
    return np.concatenate([np.repeat(a, 3 // a.shape[0], axis=0) for a in (inp, tgt)]).astype(np.float32, copy=False)


class TaskPairs(Dataset):
    """``dataset[(task_index, draw)]`` -> a sample dict; ``len`` is the draws per epoch.

    Keys: ``image`` (6, H, W), ``task``, ``family`` (index in :data:`FAMILIES`), ``dataset`` (index
    in ``self.sets``), ``failure`` (bool), ``strength`` (float). An int key ``i`` stands for
    ``(i % n_tasks, i)`` (plain samplers); :class:`TaskBatchSampler` gives P tasks x K draws.
    """

    def __init__(self, slices: Sequence[SliceLike], tasks: Sequence[Task], *, draws: int = 4096, failure_rate: float = 0.2,
                 strength: tuple[float, float] = (0.25, 1.0), crop: int | None = None, tasks_per_batch: int = 8, seed: int = 0):
        if not slices:
            raise TaskError("no slices to build task samples from", "data")
        if not tasks:
            raise TaskError("no tasks selected", "data.tasks")
        lo, hi = strength
        if not 0.0 <= lo <= hi <= 1.0:
            raise TaskError(f"must be two numbers 0 <= low <= high <= 1, got {strength!r}", "data.strength")
        if not 0.0 <= failure_rate < 1.0:
            raise TaskError(f"must lie in [0, 1), got {failure_rate!r}", "data.failure_rate")
        self.slices, self.tasks = list(slices), list(tasks)
        self.sets = sorted({s.source for s in self.slices})
        self.draws, self.failure_rate, self.strength, self.crop, self.seed = int(draws), failure_rate, (lo, hi), crop, seed
        self.tasks_per_batch = min(int(tasks_per_batch), len(self.tasks))
        side = min(min(s.image.shape) for s in self.slices)
        with_mask = [i for i, s in enumerate(self.slices) if s.mask is not None]
        self.eligible = []
        for t in self.tasks:
            if t.needs_mask and not with_mask:
                raise TaskError(f"needs a mask, and none of the data sets has one ({', '.join(self.sets)}); add a set with "
                                "masks (medrep list) or choose tasks that need none (data.tasks, data.families)", f"task {t.name!r}")
            need = max(t.min_size, crop or 0)
            if side < need:
                raise TaskError(f"needs images of at least {need} x {need} pixels; the smallest slice is {side} pixels "
                                "(raise data.size or lower data.crop)", f"task {t.name!r}")
            self.eligible.append(np.asarray(with_mask if t.needs_mask else range(len(self.slices))))

    def __len__(self) -> int:
        return self.draws

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        t, draw = key if isinstance(key, tuple) else (int(key) % len(self.tasks), int(key))
        task = self.tasks[t]
        rng = np.random.default_rng([self.seed, t, draw])
        s = self.slices[int(rng.choice(self.eligible[t]))]
        strength = float(rng.uniform(*self.strength))
        failure = bool(rng.random() < self.failure_rate)
        make = task.failure if failure else task
        try:
            inp, tgt = make(s.image, s.mask if task.needs_mask else None, rng, strength)
        except TaskError as err:
            raise TaskError(f"{err} (slice {s.id} of data set {s.source!r})") from err
        x = stack_pair(inp, tgt)
        if self.crop:
            y0, x0 = (int(rng.integers(0, n - self.crop + 1)) for n in x.shape[1:])
            x = x[:, y0:y0 + self.crop, x0:x0 + self.crop]
        return {"image": torch.from_numpy(np.ascontiguousarray(x)), "task": torch.tensor(t),
                "family": torch.tensor(FAMILIES.index(task.family)), "dataset": torch.tensor(self.sets.index(s.source)),
                "failure": torch.tensor(failure), "strength": torch.tensor(strength, dtype=torch.float32)}


class TaskBatchSampler(BatchSampler):
    """Batches of P tasks x K draws (``batch_size`` = P * K) over the draw ids ``sampler`` yields.

    It keeps :class:`torch.utils.data.BatchSampler`'s signature, so Lightning can swap ``sampler``
    for a ``DistributedSampler`` under DDP: every rank then gets its own draw ids, and chooses its
    own P tasks (seeded by the batch's first draw id), and the loss gathers them all. P is the
    dataset's ``tasks_per_batch`` (read through the sampler's ``dataset``/``data_source``).
    """

    def __init__(self, sampler, batch_size: int, drop_last: bool):
        super().__init__(sampler, batch_size, drop_last)
        dataset = getattr(sampler, "dataset", None) or getattr(sampler, "data_source", None)
        if not isinstance(dataset, TaskPairs):
            raise TypeError("TaskBatchSampler draws over a TaskPairs data set's sampler")
        self.n_tasks, self.p, self.seed = len(dataset.tasks), dataset.tasks_per_batch, dataset.seed
        if batch_size % self.p:
            raise TaskError(f"must be a multiple of data.tasks_per_batch ({self.p}), got {batch_size}", "data.batch_size")
        self.k = batch_size // self.p

    def __iter__(self):
        for draws in super().__iter__():
            rng = np.random.default_rng([self.seed, int(draws[0])])
            tasks = rng.choice(self.n_tasks, self.p, replace=False)
            yield [(int(tasks[j // self.k]), int(d)) for j, d in enumerate(draws)]


TaskPairs.batch_sampler_class = TaskBatchSampler  # the engine's loader batches a TaskPairs set with it
