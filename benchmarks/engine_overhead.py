"""Training-step throughput of a medrep run vs a hand-written PyTorch loop, side by side.

Same method (model, loss, views), same batches from one DataLoader, same AdamW and LR schedule.
The two loops alternate step by step in one process: the end of each medrep step (the method's
``on_train_batch_end``) runs one step of the bare loop and times it apart, so each medrep step
(the interval between two bare steps: Lightning's hooks, loggers, progress bar and checkpoint
check included) is paired with a bare step taken milliseconds later, on the same machine state. Load swings on shared cores, which
moved whole rounds by 20-30 % when the loops took turns a round at a time, hit both alike. Each
round builds both loops afresh (a new model, optimiser and Trainer: where tensors land in memory
moves a round's speed too) and gives one ratio, the bare loop's time over medrep's across its
timed steps, after the warm-up steps, data loading included; the result is the median of the
rounds' ratios with its spread (interquartile range, min-max) and a bootstrap 95 % interval of the
median, and the verdict on the goal is "met" or "not met" only when that interval lies wholly on
one side of it.

medrep runs as a user runs it: the engine's own Trainer with CSV + TensorBoard loggers, the
progress bar and the checkpoint callback at the recipe's interval (no round is that long, so no
checkpoint is written inside a timed window; the callback's per-step check is timed).

Torch runs on ``--threads`` threads (default 1): on a few shared cores two OpenMP threads stall
each other whenever another process wants a core (a 12 ms step measured 150 ms under load).

    python benchmarks/engine_overhead.py [--config demo|small|tiny] [--steps N] [--rounds R]

Goal: medrep >= 0.95 of the bare loop. Writes benchmarks/results/engine_overhead_<config>.json
and the README's engine-overhead table from every such file.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
from readme_section import write_section

from medrep.engine import MethodModule, build_loader, build_trainer
from medrep.engine.module import param_groups, warmup_cosine
from medrep.methods import build_method
from medrep.recipe import load_recipe
from medrep.results import write_json

RECIPE = "demo_simclr_pneumoniamnist"
GOAL = 0.95


@dataclass(frozen=True)
class Config:
    overrides: list[str]
    steps: int  # timed steps per loop and round, after the warm-up
    warmup: int
    rounds: int
    about: str


# Sized so that each config runs in a few minutes on 2 cores.
CONFIGS = {
    "demo": Config([], steps=6, warmup=2, rounds=12,
                   about="the demo recipe as it is: ResNet-18 (ImageNet stem) on 28 px PneumoniaMNIST, batch 256"),
    "small": Config(["model.name=resnet10", "data.batch_size=32", "method.proj_hidden_dim=128"], steps=12, warmup=3,
                    rounds=14, about="a small step"),
    "tiny": Config(["model.name=resnet10", "model.widen_factor=0.25", "data.batch_size=8", "method.proj_hidden_dim=64"],
                   steps=60, warmup=10, rounds=40,
                   about="about the smallest step this CPU allows (the views and the data loading are most of it), "
                         "where the framework's per-step cost weighs most"),
}


class BareLoop:
    """The hand-written loop, one step at a time: the method, AdamW and the LR schedule, nothing else."""

    def __init__(self, recipe: dict, loader, steps: int):
        self.method = build_method(recipe)
        cfg = recipe["optim"]
        self.opt = torch.optim.AdamW(param_groups(self.method, cfg["weight_decay"]), lr=cfg["lr"])
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: warmup_cosine(s, cfg["warmup_steps"], steps))
        self.method.train()
        self.loader, self.it, self.done, self.steps = loader, iter(loader), 0, steps

    def step(self) -> None:
        try:
            batch = next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            batch = next(self.it)
        loss = self.method.training_step(batch)["loss"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        self.method.on_train_batch_end(self.done, self.steps)
        self.done += 1


class PairedSteps:
    """One bare step after each medrep step, timed apart: ``marks`` holds its (wall, CPU) start and end.

    It runs from the medrep method's own ``on_train_batch_end`` (which MethodModule calls at the end
    of each step), not from a callback: Lightning dispatches every callback on six hooks a step, and
    that cost would be charged to medrep though no user run has it."""

    def __init__(self, bare: BareLoop):
        self.bare = bare
        self.marks: list[tuple[float, float, float, float]] = []

    def step(self) -> None:
        w0, c0 = time.perf_counter(), time.process_time()
        self.bare.step()
        self.marks.append((w0, c0, time.perf_counter(), time.process_time()))


def per_step(marks: list[tuple[float, float, float, float]], warmup: int) -> dict[str, tuple[float, float]]:
    """Wall-clock and process CPU seconds per step of each loop over the steps after ``warmup``.

    Bare step k runs from its start mark to its end mark; medrep step k from the end of bare step
    k - 1 to the start of bare step k (the first medrep step has no start mark, so it is never timed)."""
    timed = range(max(1, warmup), len(marks))
    n = len(timed)
    bare = (sum(marks[k][2] - marks[k][0] for k in timed) / n, sum(marks[k][3] - marks[k][1] for k in timed) / n)
    ours = (sum(marks[k][0] - marks[k - 1][2] for k in timed) / n, sum(marks[k][1] - marks[k - 1][3] for k in timed) / n)
    return {"bare": bare, "medrep": ours}


def paired_round(recipe: dict, loader, steps: int, out: Path) -> list[tuple[float, float, float, float]]:
    """One round: medrep as a user runs it (the engine's own Trainer and MethodModule, with the
    recipe's trainer section), a fresh bare loop stepping after each of its steps."""
    recipe = copy.deepcopy(recipe)
    recipe["trainer"].update(max_steps=steps, progress_bar=True)
    pairs = PairedSteps(BareLoop(recipe, loader, steps))
    method = build_method(recipe)
    own_hook = method.on_train_batch_end

    def on_train_batch_end(step: int, total: int) -> None:
        own_hook(step, total)
        pairs.step()

    method.on_train_batch_end = on_train_batch_end
    trainer = build_trainer(recipe, out)
    trainer.fit(MethodModule(method, recipe["optim"]), train_dataloaders=loader)
    return pairs.marks


def spread(ratios: list[float], resamples: int = 2000, seed: int = 0) -> dict:
    """Median of the per-round ratios, its quartiles, range and a bootstrap 95 % interval."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return {"median": statistics.median(ratios), "q1": q1, "q3": q3, "min": min(ratios), "max": max(ratios),
            "ci95": [medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]]}


def verdict(s: dict) -> str:
    low, high = s["ci95"]
    return "met" if low >= GOAL else "not met" if high < GOAL else "undecided"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="demo")
    parser.add_argument("--steps", type=int, help="timed steps per loop and round (default: the config's)")
    parser.add_argument("--warmup", type=int, help="untimed steps at the start of each loop (default: the config's)")
    parser.add_argument("--rounds", type=int, help="default: the config's")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    config = CONFIGS[args.config]
    steps, warmup, rounds = args.steps or config.steps, args.warmup or config.warmup, args.rounds or config.rounds
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no "GPU available" lines every round

    recipe = load_recipe(RECIPE, config.overrides + ["trainer.accelerator=cpu"])
    pl.seed_everything(0, verbose=False)
    loader = build_loader(recipe)
    load_before = load_average()
    start = time.perf_counter()
    bare, ours = [], []  # (wall, cpu) seconds per step, one per round
    for r in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            got = per_step(paired_round(recipe, loader, warmup + steps, Path(tmp)), warmup)
        bare.append(got["bare"])
        ours.append(got["medrep"])
        print(f"round {r:2d}: bare {1000 * bare[-1][0]:7.1f} ms/step, medrep {1000 * ours[-1][0]:7.1f} ms/step, "
              f"ratio {bare[-1][0] / ours[-1][0]:.3f}", flush=True)
    minutes = (time.perf_counter() - start) / 60
    wall = spread([b[0] / o[0] for b, o in zip(bare, ours)])
    cpu = spread([b[1] / o[1] for b, o in zip(bare, ours)])
    result = {
        "config": args.config, "about": config.about, "recipe": RECIPE, "overrides": config.overrides, "model": recipe["model"],
        "batch_size": recipe["data"]["batch_size"], "steps": steps, "warmup": warmup, "rounds": rounds,
        "log_every_n_steps": recipe["trainer"]["log_every_n_steps"],
        "checkpoint_every_n_steps": recipe["trainer"]["checkpoint_every_n_steps"],
        "bare_ms_per_step": [1000 * b[0] for b in bare], "medrep_ms_per_step": [1000 * o[0] for o in ours],
        "bare_cpu_ms_per_step": [1000 * b[1] for b in bare], "medrep_cpu_ms_per_step": [1000 * o[1] for o in ours],
        "ratio": wall, "cpu_ratio": cpu, "goal": GOAL, "verdict": verdict(wall),
        "machine": {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_average_before": load_before,
                    "load_average_after": load_average(), "minutes": round(minutes, 1), "python": platform.python_version(),
                    "torch": torch.__version__, "lightning": pl.__version__, "device": "cpu"},
    }
    print(f"\nconfig {args.config}: {recipe['model']['name']}, batch {result['batch_size']} (x2 views), {steps} timed steps "
          f"({warmup} warm-up) x {rounds} rounds, torch threads {args.threads}, load {load_before} -> {load_average()}, "
          f"{minutes:.1f} min")
    print(f"{'loop':<28}{'ms/step (median)':>18}{'CPU ms/step':>14}")
    for name, rows in (("bare PyTorch loop", bare), ("medrep (Lightning engine)", ours)):
        print(f"{name:<28}{1000 * statistics.median(w for w, _ in rows):>18.2f}{1000 * statistics.median(c for _, c in rows):>14.2f}")
    for name, s in (("wall-clock", wall), ("CPU time", cpu)):
        print(f"medrep / bare, {name}: median {s['median']:.3f}, IQR {s['q1']:.3f}-{s['q3']:.3f}, "
              f"range {s['min']:.3f}-{s['max']:.3f}, 95% CI of the median {s['ci95'][0]:.3f}-{s['ci95'][1]:.3f}")
    print(f"goal >= {GOAL}: {result['verdict']}")
    path = write_json(Path(args.out) / f"engine_overhead_{args.config}.json", result)
    print(f"written: {path}")
    write_section("engine-overhead", readme_table(Path(args.out)))


def readme_table(results_dir: Path) -> str:
    lines = ["| config | model | batch | bare ms/step | medrep ms/step | medrep / bare: median (IQR) | 95 % CI | CPU-time ratio "
             "| rounds | goal 0.95 |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for path in sorted(results_dir.glob("engine_overhead_*.json")):
        r = json.loads(path.read_text())
        w, c = r["ratio"], r["cpu_ratio"]
        width = r["model"].get("widen_factor", 1.0)
        model = r["model"]["name"] + (f" x{width:g} wide" if width != 1.0 else "")
        lines.append(f"| {r['config']} | {model} | {r['batch_size']} x 2 views | {statistics.median(r['bare_ms_per_step']):.1f} | "
                     f"{statistics.median(r['medrep_ms_per_step']):.1f} | {w['median']:.3f} ({w['q1']:.3f}-{w['q3']:.3f}) | "
                     f"{w['ci95'][0]:.3f}-{w['ci95'][1]:.3f} | {c['median']:.3f} | {r['rounds']} x {r['steps']} steps | "
                     f"{r['verdict']} |")
    return ("Training-step throughput, medrep's Lightning engine vs a hand-written loop with the same method, batches and "
            "optimiser, alternating step by step in one process on CPU, 1 torch thread (`benchmarks/engine_overhead.py`). "
            "The ratio is the bare loop's time per step over medrep's, one per round (each round builds both loops "
            "afresh); the verdict is \"met\" only when the bootstrap 95 % interval of its median lies above 0.95. The "
            "CPU-time ratio (process CPU time per step) is less sensitive to other processes on the shared cores.\n\n"
            + "\n".join(lines))


if __name__ == "__main__":
    main()
