"""``medrep demo``: SimCLR on PneumoniaMNIST for a few CPU minutes, then probes of the pretrained
encoder beside a random-init encoder of the same architecture, on the official test split."""

from __future__ import annotations

import time
from pathlib import Path

from .checkpoint import load_encoder
from .engine import pretrain
from .evaluate.frozen import probe_encoder, table
from .recipe import load_recipe
from .results import write_json

DEMO_RECIPE = "demo_simclr_pneumoniamnist"


def run_demo(out: Path, data: str | None = None, steps: int | None = None, seed: int = 0, overrides=(), quiet: bool = False) -> dict:
    extra = [f"trainer.output_dir={out / 'simclr'}", f"trainer.seed={seed}"]
    extra += [f"data.path={data}"] if data else []
    extra += [f"trainer.max_steps={steps}"] if steps else []
    recipe = load_recipe(DEMO_RECIPE, extra + list(overrides))
    start = time.perf_counter()
    run_dir = pretrain(recipe)
    minutes = (time.perf_counter() - start) / 60
    data_cfg = dict(recipe["data"], split="train")
    results = {
        "simclr": probe_encoder(load_encoder(run_dir), data_cfg),
        "random-init": probe_encoder(load_encoder(run_dir, weights=False), data_cfg),
    }
    text = table(results)
    summary = {"recipe": recipe, "pretrain_minutes": minutes, "steps": recipe["trainer"]["max_steps"], "results": results}
    write_json(out / "demo_results.json", summary)
    if not quiet:
        print(f"\nSimCLR pretraining: {recipe['trainer']['max_steps']} steps in {minutes:.1f} min; "
              f"probes on the PneumoniaMNIST test split (mean +- std over 3 subsampling seeds):\n")
        print(text)
        print(f"\nresults: {out / 'demo_results.json'}   encoder: {run_dir / 'encoder'}")
    return summary
