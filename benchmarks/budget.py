"""How long must I pretrain? SimCLR and VICReg on PneumoniaMNIST, scored at increasing pretraining
steps by the linear probe and by fine-tuning at 1 % and 100 % labels, against random init.

One run per method to the largest budget; the encoder is exported at every budget on the way (a
callback), so the 250-step point is the 250th step of the longer run: its learning rate had not
yet annealed (cosine schedule over the whole run). Separate runs per budget would cost the sum of
the budgets; this curve costs the largest one. The random-init row is the same architecture with
the evaluation's seed as initialisation.

CPU budget (2 cores): ResNet-10 with the 7x7 stride-2 stem, batch 32, 28 px (the ssl_quality
PneumoniaMNIST settings use ResNet-18 at batch 256, about 10x the cost per step, which would put
3000 steps out of reach). Fine-tuning at 1 %: 3 seeds, at most 30 epochs (patience 10); at 100 %:
one seed, at most 5 epochs (patience 2): 98 steps an epoch. The linear probe: 3 seeds at both.

    python benchmarks/budget.py --steps 250 1000 3000 --seeds 0 1 2

Writes benchmarks/results/budget.json, benchmarks/results/budget.png (steps on a log axis) and the
README table between the budget markers.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from readme_section import write_section
from ssl_quality import HEADS, recipe_for

import medrep
from medrep.checkpoint import export_encoder
from medrep.engine import pretrain
from medrep.evaluate.finetune import FinetuneOptions, evaluate_finetune
from medrep.evaluate.frozen import data_config, run_probes, split_features
from medrep.results import format_table, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


class ExportAt(pl.Callback):
    """Export the encoder (as a run's ``encoder/`` folder) when the run reaches each of ``steps``."""

    def __init__(self, steps: list[int], out: Path, recipe: dict):
        self.steps, self.out, self.recipe = set(steps), out, recipe

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step in self.steps and trainer.is_global_zero:
            export_encoder(pl_module.method.encoder, self.out / f"step{trainer.global_step}" / "encoder", self.recipe)


def encoders(methods: list[str], steps: list[int], work: Path) -> dict[tuple[str, int], Path]:
    """Pretrain each method once to max(steps), exporting on the way (reused when already there)."""
    out = {}
    for method in methods:
        folder = work / method
        if not all((folder / f"step{s}" / "encoder" / "encoder.json").is_file() for s in steps):
            recipe = recipe_for("pneumonia", method, 0, max(steps), work, extra=tuple(BUDGET))
            recipe["trainer"]["output_dir"] = str(folder / "run")
            start = time.perf_counter()
            pretrain(recipe, extra_callbacks=[ExportAt(steps, folder, recipe)])
            print(f"{method}: {max(steps)} steps in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
        out.update({(method, s): folder / f"step{s}" for s in steps})
    return out


BUDGET = ["model.name=resnet10", "data.batch_size=32", "trainer.log_every_n_steps=50"]


def finetune_options(seeds: list[int], full_epochs: int) -> list[FinetuneOptions]:
    """1 %: every seed, epochs cheap (one step each); 100 %: one seed, few epochs (the CPU budget)."""
    return [FinetuneOptions(fractions=(0.01,), seeds=tuple(seeds), epochs=30, patience=10, progress=False),
            FinetuneOptions(fractions=(1.0,), seeds=(seeds[0],), epochs=full_epochs, patience=2, progress=False)]


def score(encoder: Path, random_init: bool, seeds: list[int], options: list[FinetuneOptions], data: dict | None = None) -> dict:
    """Linear probe (frozen features, logistic regression) at 1 % and 100 %, and fine-tuning per ``options``."""
    data = data or data_config(encoder)
    torch.manual_seed(seeds[0])
    net = medrep.load_encoder(encoder, weights=not random_init)
    train, test = (split_features(net, data, s) for s in ("train", "test"))
    linear = run_probes(train, test, {"linear": dict(fractions=(0.01, 1.0), seeds=seeds)})["linear"]
    tuned = {"fractions": {}}
    for opts in options:
        tuned["fractions"].update(evaluate_finetune(encoder, data, opts, random_init=random_init)["fractions"])
    rows = {}
    for kind, result in (("linear", linear), ("finetune", tuned)):
        for key, r in result["fractions"].items():
            rows[f"{kind} {key}"] = {"auroc": r["auroc"], "accuracy": r["accuracy"], "n_train": r["n_train"],
                                     "per_seed": [{k: v for k, v in run.items() if k != "history"} for run in r["per_seed"]]}
    return rows


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    evals = list(record["random_init"])
    fig, axes = plt.subplots(1, len(evals), figsize=(4 * len(evals), 3.4), sharey=False)
    for ax, ev in zip(np.atleast_1d(axes), evals):
        for method in record["methods"]:
            pts = [(s, record["runs"][method][str(s)][ev]["auroc"]) for s in record["steps"]]
            ax.errorbar([p[0] for p in pts], [p[1]["mean"] for p in pts], yerr=[p[1]["std"] for p in pts], marker="o",
                        capsize=3, label=method)
        base = record["random_init"][ev]["auroc"]
        ax.axhline(base["mean"], color="grey", ls="--", label="random init")
        ax.axhspan(base["mean"] - base["std"], base["mean"] + base["std"], color="grey", alpha=0.15)
        ax.set_xscale("log")
        # label only the measured budgets: log-axis minor labels (3x10^2 ...) overlap at this width
        ax.set_xticks(record["steps"], [str(s) for s in record["steps"]])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        kind, fraction = ev.rsplit(" ", 1)
        ax.set_title(f"{kind}, {float(fraction):.0%} labels")
        ax.set_xlabel("pretraining steps")
        ax.set_ylabel("test AUROC")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(record: dict, markdown: bool = False) -> str:
    evals = list(record["random_init"])
    rows = [{"encoder": "random init", "steps": 0, **{f"{e} AUROC": record["random_init"][e]["auroc"] for e in evals}}]
    for method in record["methods"]:
        for s in record["steps"]:
            rows.append({"encoder": method, "steps": s, **{f"{e} AUROC": record["runs"][method][str(s)][e]["auroc"] for e in evals}})
    return format_table(rows, ["encoder", "steps", *[f"{e} AUROC" for e in evals]], markdown=markdown)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["simclr", "vicreg"])
    p.add_argument("--steps", type=int, nargs="+", default=[250, 1000, 3000])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--full-epochs", type=int, default=5, help="fine-tuning epochs at most at 100 %% labels (protocol default 50)")
    p.add_argument("--work", type=Path, default=Path("runs/bench_budget"), help="pretraining runs (reused when present)")
    p.add_argument("--pretrain-only", action="store_true", help="pretrain (export at every budget) and stop: run one process "
                   "per method with --threads 1 side by side, then score in one process")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--no-readme", action="store_true")
    p.add_argument("--plot-only", action="store_true", help="redraw budget.png from budget.json and stop")
    args = p.parse_args()
    if args.plot_only:
        plot(json.loads((RESULTS / "budget.json").read_text()), RESULTS / "budget.png")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = sorted(args.steps)
    options = finetune_options(args.seeds, args.full_epochs)
    start = time.perf_counter()
    paths = encoders(args.methods, steps, args.work)
    # wall time to each export, from the files' times (pretraining may have run in other processes)
    elapsed = {m: {s: (paths[(m, s)] / "encoder" / "encoder.json").stat().st_mtime
                   - (args.work / m / "run" / "recipe.yaml").stat().st_mtime for s in steps} for m in args.methods}
    pretrain_minutes = sum(max(v.values()) for v in elapsed.values()) / 60
    if args.pretrain_only:
        return
    record = {"dataset": "PneumoniaMNIST", "methods": args.methods, "steps": steps, "seeds": args.seeds,
              "budget": BUDGET, "heads": {m: HEADS[m] for m in args.methods},
              "finetune_options": [{k: v for k, v in vars(o).items() if k != "progress"} for o in options],
              "pretrain_minutes": pretrain_minutes,
              "minutes_to_step": {m: {str(k): v / 60 for k, v in e.items()} for m, e in elapsed.items()},
              "torch_threads": torch.get_num_threads(), "runs": {}}
    t = time.perf_counter()
    record["random_init"] = score(paths[(args.methods[0], steps[0])], True, args.seeds, options)
    print(f"random init scored in {(time.perf_counter() - t) / 60:.1f} min", flush=True)
    for method in args.methods:
        record["runs"][method] = {}
        for s in steps:
            t = time.perf_counter()
            record["runs"][method][str(s)] = score(paths[(method, s)], False, args.seeds, options)
            print(f"{method} @ {s} scored in {(time.perf_counter() - t) / 60:.1f} min", flush=True)
            write_json(RESULTS / "budget.json", copy.deepcopy(record))
    record["total_minutes"] = (time.perf_counter() - start) / 60
    write_json(RESULTS / "budget.json", record)
    plot(record, RESULTS / "budget.png")
    print(table(record))
    if not args.no_readme:
        write_section("budget", f"From `benchmarks/results/budget.json`: test AUROC, mean ± std over seeds {args.seeds} "
                                f"(fine-tuning at 100 %: seed {args.seeds[0]} only, at most {args.full_epochs} epochs); pretraining "
                                f"`{' '.join(BUDGET)}`, {pretrain_minutes:.0f} min in all on one thread per method.\n\n"
                      + table(record, markdown=True)
                      + "\n\n![AUROC against pretraining steps](benchmarks/results/budget.png)")


if __name__ == "__main__":
    main()
