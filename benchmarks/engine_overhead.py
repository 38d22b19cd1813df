"""Training-step throughput of a medrep run vs a hand-written PyTorch loop, side by side.

Same method (model, loss, views), same batches from one DataLoader, same AdamW and LR schedule.
The two loops alternate in rounds within one process, so drift in machine load hits both; the
timed window of each round starts after its warm-up steps and includes data loading.

    python benchmarks/engine_overhead.py [--config demo|small] [--steps 30] [--rounds 3]

Goal: medrep >= 0.95 of the bare loop. Writes benchmarks/results/engine_overhead_<config>.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from medrep.engine import MethodModule, build_loader, build_trainer
from medrep.engine.module import param_groups, warmup_cosine
from medrep.methods import build_method
from medrep.recipe import load_recipe

CONFIGS = {
    # the demo recipe as it is: ResNet-18 (ImageNet stem) on 28 px PneumoniaMNIST, batch 256
    "demo": [],
    # a small step, where per-step framework overhead weighs most
    "small": ["model.name=resnet10", "data.batch_size=32", "method.proj_hidden_dim=128"],
}
RECIPE = "demo_simclr_pneumoniamnist"


class StepTimer(pl.Callback):
    def __init__(self):
        self.times: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.times.append(time.perf_counter())


def rate(times: list[float], warmup: int) -> float:
    window = times[warmup:]
    return (len(window) - 1) / (window[-1] - window[0])


def bare_loop(recipe: dict, loader, steps: int) -> list[float]:
    method = build_method(recipe)
    cfg = recipe["optim"]
    opt = torch.optim.AdamW(param_groups(method, cfg["weight_decay"]), lr=cfg["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, cfg["warmup_steps"], steps))
    method.train()
    times = []
    it = iter(loader)
    for _ in range(steps):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        loss = method.training_step(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        method.on_train_batch_end(0, steps)
        times.append(time.perf_counter())
    return times


def medrep_loop(recipe: dict, loader, steps: int, out: Path) -> list[float]:
    """The production path: the engine's own Trainer (CSV + TensorBoard loggers, checkpoint
    callback, progress bar) and MethodModule; checkpoints fall outside the timed window."""
    recipe = copy.deepcopy(recipe)
    recipe["trainer"].update(max_steps=steps, checkpoint_every_n_steps=10**9, progress_bar=True)
    method = build_method(recipe)
    timer = StepTimer()
    trainer = build_trainer(recipe, out, extra_callbacks=[timer])
    trainer.fit(MethodModule(method, recipe["optim"]), train_dataloaders=loader)
    return timer.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="demo")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()

    recipe = load_recipe(RECIPE, CONFIGS[args.config] + ["trainer.accelerator=cpu"])
    pl.seed_everything(0, verbose=False)
    loader = build_loader(recipe)
    bare, ours = [], []
    for r in range(args.rounds):
        bare.append(rate(bare_loop(recipe, loader, args.steps), args.warmup))
        with tempfile.TemporaryDirectory() as tmp:
            ours.append(rate(medrep_loop(recipe, loader, args.steps, Path(tmp)), args.warmup))
        print(f"round {r}: bare {bare[-1]:.3f} steps/s, medrep {ours[-1]:.3f} steps/s")
    ratio = statistics.median(o / b for o, b in zip(ours, bare))
    batch = recipe["data"]["batch_size"]
    rows = [("bare PyTorch loop", statistics.median(bare)), ("medrep (Lightning engine)", statistics.median(ours))]
    print(f"\nconfig {args.config}: {recipe['model']['name']}, batch {batch} (x2 views), {args.steps} steps "
          f"({args.warmup} warm-up) x {args.rounds} rounds, torch threads {torch.get_num_threads()}")
    print(f"{'loop':<28}{'steps/s':>10}{'images/s':>12}")
    for name, r in rows:
        print(f"{name:<28}{r:>10.3f}{r * batch:>12.1f}")
    print(f"medrep / bare (median of per-round ratios): {ratio:.3f}  (goal >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'})")
    result = {
        "config": args.config, "recipe": RECIPE, "overrides": CONFIGS[args.config], "model": recipe["model"], "batch_size": batch,
        "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds, "bare_steps_per_s": bare,
        "medrep_steps_per_s": ours, "ratio_median": ratio, "goal": 0.95, "met": ratio >= 0.95,
        "machine": {"cpu_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
                    "device": "cpu"},
    }
    path = Path(args.out) / f"engine_overhead_{args.config}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"written: {path}")
    update_readme(Path(args.out))


def update_readme(results_dir: Path) -> None:
    """Rewrite the README's engine-overhead table from every engine_overhead_*.json present."""
    readme = Path(__file__).resolve().parents[1] / "README.md"
    start, end = "<!-- engine-overhead:start -->", "<!-- engine-overhead:end -->"
    body = readme.read_text()
    if start not in body or end not in body:
        return
    lines = ["| config | model | batch | bare loop steps/s | medrep steps/s | medrep / bare | goal 0.95 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for path in sorted(results_dir.glob("engine_overhead_*.json")):
        r = json.loads(path.read_text())
        lines.append(f"| {r['config']} | {r['model']['name']} | {r['batch_size']} x 2 views | "
                     f"{statistics.median(r['bare_steps_per_s']):.3f} | {statistics.median(r['medrep_steps_per_s']):.3f} | "
                     f"{r['ratio_median']:.3f} | {'met' if r['met'] else 'not met'} |")
    text = ("Training-step throughput, medrep's Lightning engine vs a hand-written loop with the same method, "
            "batches and optimiser, alternating in rounds in one process on CPU (`benchmarks/engine_overhead.py`, "
            "median over rounds).\n\n" + "\n".join(lines))
    head, rest = body.split(start, 1)
    readme.write_text(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}")


if __name__ == "__main__":
    main()
