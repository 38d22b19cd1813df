"""Task samples and the P x K batch sampler: shapes, labels, seeding, crops, failures, errors."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from helpers import phantom
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from medrep.data.datasets.collate import collate
from medrep.tasks import TaskError, get_task, task_names
from medrep.tasks.pairs import PAIR_CHANNELS, TaskBatchSampler, TaskPairs, stack_pair


@dataclass
class Slice:
    image: np.ndarray
    mask: np.ndarray | None
    source: str
    id: str


def slices(masks=True):
    image, mask = phantom(48)
    return [Slice(np.rot90(image, k).copy(), np.rot90(mask, k).copy() if masks and k % 2 == 0 else None, f"set{k % 2}", f"img{k}")
            for k in range(4)]


def test_stack_pair_repeats_gray_halves():
    x = stack_pair(np.ones((1, 8, 8), np.float32), np.zeros((3, 8, 8), np.float32))
    assert x.shape == (PAIR_CHANNELS, 8, 8) and x[:3].min() == 1 and x[3:].max() == 0


def test_sample_keys_and_seeding():
    ds = TaskPairs(slices(), [get_task(n) for n in task_names()], draws=32, failure_rate=0.5, crop=32)
    a, b = ds[(1, 7)], ds[(1, 7)]
    assert a["image"].shape == (PAIR_CHANNELS, 32, 32)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert int(a["task"]) == 1 and 0 <= float(a["strength"]) <= 1
    fails = [bool(ds[(0, d)]["failure"]) for d in range(40)]
    assert 5 < sum(fails) < 35  # about failure_rate of 40


def test_mask_tasks_draw_only_masked_slices():
    task = next(get_task(n) for n in task_names() if get_task(n).needs_mask)
    ds = TaskPairs(slices(), [task], draws=8)
    assert {ds.slices[i].mask is not None for i in ds.eligible[0]} == {True}
    with pytest.raises(TaskError, match=f"task '{task.name}'.*needs a mask.*set0, set1"):
        TaskPairs(slices(masks=False), [task])


def test_too_small_and_bad_options_are_named():
    with pytest.raises(TaskError, match="at least 64"):
        TaskPairs(slices(), [get_task("rotate")], crop=64)
    with pytest.raises(TaskError, match="data.strength"):
        TaskPairs(slices(), [get_task("rotate")], strength=(0.8, 0.2))
    with pytest.raises(TaskError, match="data.failure_rate"):
        TaskPairs(slices(), [get_task("rotate")], failure_rate=1.0)


def test_batch_sampler_gives_p_tasks_by_k_draws_and_batches_collate():
    tasks = [get_task(n) for n in task_names()]
    ds = TaskPairs(slices(), tasks, draws=24, tasks_per_batch=3, crop=32)
    sampler = TaskBatchSampler(RandomSampler(ds, generator=torch.Generator().manual_seed(0)), batch_size=6, drop_last=True)
    batches = list(sampler)
    assert len(batches) == 4
    for b in batches:
        ts = [t for t, _ in b]
        assert len(set(ts)) == 3 and all(ts.count(t) == 2 for t in set(ts))
    batch = next(iter(DataLoader(ds, batch_sampler=sampler, collate_fn=collate)))
    assert batch["image"].shape == (6, PAIR_CHANNELS, 32, 32) and batch["task"].shape == (6,)
    with pytest.raises(TaskError, match="multiple of data.tasks_per_batch"):
        TaskBatchSampler(SequentialSampler(ds), batch_size=7, drop_last=True)


def test_under_a_distributed_sampler_ranks_draw_apart():
    ds = TaskPairs(slices(), [get_task(n) for n in task_names()], draws=16, tasks_per_batch=2)
    ids = [{d for b in TaskBatchSampler(DistributedSampler(ds, num_replicas=2, rank=r, seed=0), 4, True) for _, d in b}
           for r in (0, 1)]
    assert ids[0] and ids[1] and not ids[0] & ids[1]


def test_lightning_rebuilds_the_batch_sampler_over_its_distributed_sampler():
    """What Lightning does to a loader under DDP (``_update_dataloader``): our class survives, over a DistributedSampler."""
    from lightning.pytorch.utilities.data import _update_dataloader

    ds = TaskPairs(slices(), [get_task(n) for n in task_names()], draws=16, tasks_per_batch=2)
    loader = DataLoader(ds, batch_sampler=TaskBatchSampler(RandomSampler(ds), 4, True), collate_fn=collate)
    moved = _update_dataloader(loader, DistributedSampler(ds, num_replicas=2, rank=1, seed=0))
    assert type(moved.batch_sampler) is TaskBatchSampler and isinstance(moved.batch_sampler.sampler, DistributedSampler)
    assert moved.batch_sampler.k == 2 and len(list(moved.batch_sampler)) == 2
