"""Does closeness in the task map predict transfer between tasks? (TaCo names transfer as untested.)

For every ordered pair (A, B) of the chosen tasks: a small image-to-image network trained on task A
is fine-tuned on B with few samples, and compared with the same network trained on B's few samples
from scratch, for the same number of steps. The *transfer gain* is the relative drop of B's test
error: ``(err_scratch - err_finetuned) / err_scratch`` (> 0: A helped). Its Spearman correlation
with the task map's similarity of A and B, over all ordered pairs, answers the question; its
confidence interval resamples *tasks* (pairs that share a task are not independent).

Choices, all options: the network is MONAI's 2D UNet (3 channels in and out: a gray half is
repeated, as in :func:`medrep.tasks.pairs.stack_pair`), the error is the mean squared error on the
target, every transfer starts from the same pretrained weights per A and seed, and the scratch run
of B is shared by all A for that seed.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from ..tasks.base import Task
from ..tasks.pairs import TaskPairs


@dataclass(frozen=True)
class TransferOptions:
    source_samples: int = 256  # task A's training pool
    source_steps: int = 300
    few_samples: int = 16  # task B's few labelled samples
    few_steps: int = 100
    test_samples: int = 64
    batch_size: int = 16
    lr: float = 1e-3
    channels: tuple[int, ...] = (8, 16, 32)
    seeds: tuple[int, ...] = (0, 1, 2)


def small_unet(channels: tuple[int, ...]) -> nn.Module:
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=3, out_channels=3, channels=channels, strides=(2,) * (len(channels) - 1), num_res_units=1)


def task_tensors(slices, task_index: int, tasks: list[Task], n: int, seed: int, strength=(0.25, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` true (input, target) pairs of one task on ``slices``, as (n, 3, H, W) tensors."""
    pairs = TaskPairs(slices, tasks, draws=n, failure_rate=0.0, strength=strength, seed=seed)
    x = torch.stack([pairs[(task_index, d)]["image"] for d in range(n)])
    return x[:, :3], x[:, 3:]


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int, lr: float, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (min(batch_size, x.shape[0]),), generator=g)
        loss = nn.functional.mse_loss(net(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net


@torch.no_grad()
def test_error(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    return float(nn.functional.mse_loss(net(x), y))


def transfer_matrix(train_slices, test_slices, tasks: list[Task], opts: TransferOptions = TransferOptions(),
                    progress=None) -> dict:
    """``gain[seed][a][b]`` for a != b, and the errors behind it."""
    n = len(tasks)
    runs = []
    for seed in opts.seeds:
        torch.manual_seed(seed)
        init = small_unet(opts.channels)
        pools = {t: task_tensors(train_slices, t, tasks, opts.source_samples, seed) for t in range(n)}
        few = {t: (pools[t][0][: opts.few_samples], pools[t][1][: opts.few_samples]) for t in range(n)}
        tests = {t: task_tensors(test_slices, t, tasks, opts.test_samples, 10_000 + seed) for t in range(n)}
        scratch = {b: test_error(train(copy.deepcopy(init), *few[b], opts.few_steps, opts.batch_size, opts.lr, seed), *tests[b])
                   for b in range(n)}
        gain = np.full((n, n), np.nan)
        finetuned = np.full((n, n), np.nan)
        for a in range(n):
            source = train(copy.deepcopy(init), *pools[a], opts.source_steps, opts.batch_size, opts.lr, seed)
            for b in range(n):
                if a == b:
                    continue
                err = test_error(train(copy.deepcopy(source), *few[b], opts.few_steps, opts.batch_size, opts.lr, seed), *tests[b])
                finetuned[a, b] = err
                gain[a, b] = (scratch[b] - err) / scratch[b]
            if progress is not None:
                progress(seed, a)
        runs.append({"seed": seed, "scratch_error": [scratch[b] for b in range(n)], "finetuned_error": finetuned.tolist(),
                     "gain": gain.tolist()})
    gains = np.array([r["gain"] for r in runs])
    mean_gain = np.full((n, n), np.nan)
    off = ~np.eye(n, dtype=bool)  # the diagonal (A -> A) is never run
    mean_gain[off] = gains[:, off].mean(0)
    return {"tasks": [t.name for t in tasks], "options": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(opts).items()},
            "runs": runs, "mean_gain": mean_gain.tolist()}


def off_diagonal(m: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    idx = np.arange(m.shape[0]) if keep is None else keep
    return np.array([m[a, b] for a, b in itertools.product(idx, idx) if a != b])


def _pairs_stat(similarity: np.ndarray, gain: np.ndarray, pick: np.ndarray, within_target: bool) -> float | None:
    """Spearman over the ordered pairs of the drawn tasks ``pick`` (pairs of a task with its own copy
    left out); ``within_target`` first subtracts from each gain the mean gain of its target task over
    the drawn sources, so that only *which source* helps a target more is compared, not which targets
    are easier to help."""
    pairs = [(a, b) for i, a in enumerate(pick) for j, b in enumerate(pick) if i != j and a != b]
    if len(pairs) < 3:
        return None
    g = np.array([gain[a, b] for a, b in pairs])
    if within_target:
        targets = np.array([b for _, b in pairs])
        for b in np.unique(targets):
            g[targets == b] -= g[targets == b].mean()
    s = np.array([similarity[a, b] for a, b in pairs])
    if np.ptp(s) == 0 or np.ptp(g) == 0:
        return None
    return float(spearmanr(s, g).statistic)


def similarity_vs_transfer(similarity: np.ndarray, gain: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict:
    """Spearman of similarity(A, B) against gain(A -> B) over ordered pairs, with a 95 % interval from
    resampling tasks with replacement (a task drawn twice contributes its pairs with the others once
    per draw; pairs of a task with its own copy are left out). ``within_target``: the same after
    centring each target task's gains (does the more similar *source* help a given target more?)."""
    similarity, gain = np.asarray(similarity, float), np.asarray(gain, float)
    n = similarity.shape[0]
    rng = np.random.default_rng(seed)
    picks = [rng.integers(0, n, n) for _ in range(resamples)]
    out: dict = {"pairs": int(n * (n - 1))}
    for key, within in (("all", False), ("within_target", True)):
        boot = [r for r in (_pairs_stat(similarity, gain, pick, within) for pick in picks) if r is not None]
        lo, hi = (np.percentile(boot, [2.5, 97.5]).tolist() if boot else [float("nan")] * 2)
        stat = {"spearman": _pairs_stat(similarity, gain, np.arange(n), within), "ci95": [lo, hi], "resamples": len(boot)}
        if key == "all":
            out.update(stat)
        else:
            out[key] = stat
    return out
