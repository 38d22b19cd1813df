"""Why does ISImed not help the probes? One knob at a time, on the ssl_quality.py budget, 1 seed.

Colin27 (3D): the distance scale, the number of crops per volume, the variance hinge, training
length, learning rate and intensity augmentation of the crops, each against the recipe ISImed row
(which repeats ssl_quality.py's seed-0 row); metrics as in ssl_quality.py (region probe on
disjoint slabs, Spearman of embedding vs physical distance).
PneumoniaMNIST (2D): crop size (16 or 24 of 28 px; the probe sees whole 28 px images) and the
distance scale (pixel distances are 0-17 px, i.e. 0-1.7 units at the default scale of 10).

    python benchmarks/isimed_ablation.py --task colin27 --steps 150
    python benchmarks/isimed_ablation.py --task pneumonia --steps 120

Writes benchmarks/results/isimed_ablation_<task>.json and the README table between the
isimed-ablation markers from all isimed_ablation_*.json files present.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ssl_quality as q
import torch
from readme_section import write_section

import medrep
from medrep.engine import pretrain
from medrep.results import format_table, write_json

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "colin27": {
        "recipe (scale 10, 16 crops, lr 1e-3)": [],
        "distance_scale 5": ["method.distance_scale=5.0"],
        "distance_scale 20": ["method.distance_scale=20.0"],
        "32 crops per step": ["data.crops.k=32"],
        "variance hinge (weight 1)": ["method.var_weight=1.0"],
        "3x steps": ["x3"],
        "lr 3e-4": ["optim.lr=3.0e-4"],
        "lr 3e-3": ["optim.lr=3.0e-3"],
        "intensity augmentation of crops": ["method.intensity_augment=true"],
    },
    "pneumonia": {
        "recipe (16 px crops, scale 10)": [],
        "24 px crops": ["data.crops.size=24"],
        "distance_scale 2": ["method.distance_scale=2.0"],
        "24 px crops, distance_scale 2": ["data.crops.size=24", "method.distance_scale=2.0"],
        "3x steps": ["x3"],
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=list(VARIANTS), required=True)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/isimed_ablation")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--reuse", action="store_true", help="load variants finished earlier under --out")
    parser.add_argument("--baseline-from", help="ssl_quality.py's --out: take the recipe row from its ISImed run (same budget and seed)")
    parser.add_argument("--readme-only", action="store_true")
    args = parser.parse_args()
    if args.readme_only:
        update_readme()
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    rows = []
    for i, (name, extra) in enumerate(VARIANTS[args.task].items()):
        record = out / args.task / f"variant{i}" / "ablation.json"
        if args.reuse and record.is_file():
            rows.append(json.loads(record.read_text()))
            continue
        main_record = Path(args.baseline_from or "") / args.task / "isimed" / f"seed{args.seed}" / "quality.json"
        if not extra and args.baseline_from and main_record.is_file():  # the recipe row is ssl_quality.py's own ISImed run
            rec = json.loads(main_record.read_text())
            row = {"variant": name, "overrides": [], "steps": args.steps, "pretrain_minutes": rec["pretrain_minutes"],
                   **rec["metrics"], "from": str(main_record)}
            write_json(record, row)
            rows.append(row)
            continue
        steps = args.steps * (3 if "x3" in extra else 1)
        overrides = tuple(e for e in extra if e != "x3")
        recipe = q.recipe_for(args.task, "isimed", args.seed, steps, out / args.task / f"variant{i}", overrides)
        start = time.perf_counter()
        encoder = medrep.load_encoder(pretrain(recipe))
        minutes = (time.perf_counter() - start) / 60
        row = {"variant": name, "overrides": list(extra), "steps": steps, "pretrain_minutes": minutes,
               **q.metrics(args.task, q.evaluate(args.task, encoder, out))}
        write_json(record, row)
        rows.append(row)
        print(row, flush=True)
    columns = ["variant", "steps"] + [k for k in rows[0] if k not in ("variant", "overrides", "steps", "pretrain_minutes", "from")]
    print(format_table(rows, columns))
    write_json(ROOT / "benchmarks" / "results" / f"isimed_ablation_{args.task}.json",
               {"task": args.task, "seed": args.seed, "steps": args.steps, "rows": rows, "columns": columns})
    update_readme()


def update_readme() -> None:
    parts = []
    for path in sorted((ROOT / "benchmarks" / "results").glob("isimed_ablation_*.json")):
        r = json.loads(path.read_text())
        parts.append(f"**{r['task']}**, seed {r['seed']}, from `{path.relative_to(ROOT)}`:\n\n"
                     + format_table(r["rows"], r["columns"], markdown=True))
    write_section("isimed-ablation", "\n\n".join(parts))


if __name__ == "__main__":
    main()
