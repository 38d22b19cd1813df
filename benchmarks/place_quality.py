"""PLACE against ConVIRT, GLoRIA and MGCA on MedPix 2.0 at one budget, and PLACE's ablation.

Every run trains on the MedPix 2.0 train cases with the text ``caption+findings`` (the image's own
caption, then its case's findings: ~6 sentences a report, so that sentence-level observations have
something to align; images of cases without findings are left out, counted) and the budget of
``vlp_quality.py`` (the ``convirt_medpix`` model, image size, batch, optimiser, augmentation and text
tower; ``--steps`` each). PLACE's ablation runs the same recipe with terms switched off: global only
(ConVIRT's loss on the same text, through PLACE's code), + alignment, + correlation, full.

Scores, on the dev cases:
  quality    retrieval R@1/5/10 at image and case level (dev texts are caption+findings), zero-shot
             and linear probe on modality, plane and body region: ``vlp_quality.evaluate``, every run.
  finetune   ``evaluate finetune`` on body region (5 classes) at 1/10/100 % of the train labels
             (10 % of the train cases as validation, dev as test), each pretraining seed's encoder (and
             random init) fine-tuned with that seed (label subsets and head drawn with it; random init
             is drawn with it too, so its rows are not one network scored thrice), or with
             ``--finetune-seeds`` when given.
  dense      ``evaluate segment`` on the Colin27 lobe task (2D, left hemisphere -> right), each
             pretraining seed's encoder (and random init) fine-tuned with that seed through the U-Net
             decoder of :mod:`medrep.models.dense`.

Parts run in separate processes so that they can share the CPU (``--runs``, ``--part``); each writes
``<out>/<run>/seed<N>/<part>.json`` and ``--collect`` gathers what is there into
benchmarks/results/place_quality.json and the README section.

    python benchmarks/place_quality.py --part quality --runs convirt gloria --seeds 0 1 2 --threads 1
    python benchmarks/place_quality.py --part finetune --runs random-init convirt place --threads 1
    python benchmarks/place_quality.py --collect
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import vlp_quality as vq
from readme_section import write_section

from medrep.recipe import load_recipe, read_yaml
from medrep.results import format_table, write_json

ROOT = Path(__file__).resolve().parents[1]
TEXT = "caption+findings"
BUDGET = [b for b in vq.BUDGET if not b.startswith("data.text_field=")] + [f"data.text_field={TEXT}", "data.skip_bad=true"]
#: row -> (method, overrides)
RUNS = {
    "convirt": ("convirt", []), "gloria": ("gloria", []), "mgca": ("mgca", []), "place": ("place", []),
    "place-global": ("place", ["method.alignment=false", "method.correlation=false"]),
    "place-align": ("place", ["method.correlation=false"]),
    "place-corr": ("place", ["method.alignment=false"]),
}
ABLATION = {"place-global": "global only", "place-align": "+ alignment", "place-corr": "+ correlation", "place": "full"}
FRACTIONS = (0.01, 0.1, 1.0)


def recipe_for(run: str, seed: int, steps: int, out: Path) -> dict:
    method, overrides = RUNS[run]
    shared = read_yaml((vq.CONFIGS / f"{vq.SHARED_RECIPE}.yaml").read_text())
    section, _ = vq.method_section(method)
    recipe = {k: v for k, v in shared.items() if k != "method"} | {"method": section}
    return load_recipe(recipe, BUDGET + overrides + [f"trainer.seed={seed}", f"trainer.max_steps={steps}",
                                                     f"trainer.output_dir={out / run / f'seed{seed}'}"])


def encoder_dir(run: str, seed: int, steps: int, out: Path, train: bool = True) -> Path:
    """The run's folder, pretrained first when its encoder is not there yet (``train``; the scoring
    parts wait for the quality part instead, which may be pretraining it in another process)."""
    from medrep.engine import pretrain

    folder = out / run / f"seed{seed}"
    while not train and not (folder / "quality.json").is_file():
        print(f"waiting for {folder}/quality.json (the quality part pretrains it)", flush=True)
        time.sleep(60)
    if not (folder / "encoder" / "encoder.json").is_file():
        start = time.perf_counter()
        pretrain(recipe_for(run, seed, steps, out))
        (folder / "minutes.txt").write_text(f"{(time.perf_counter() - start) / 60:.2f}\n")
    return folder


def quality(run: str, seed: int, steps: int, out: Path) -> dict:
    from medrep.checkpoint import load_method
    from medrep.evaluate.retrieval import run_data_config
    from medrep.methods import build_method

    root = vq.data_root()
    if run == "random-init":
        recipe = recipe_for("convirt", seed, steps, out)
        torch.manual_seed(seed)
        return {"result": vq.evaluate(build_method(recipe).eval(), vq.eval_data(recipe), root)}
    folder = encoder_dir(run, seed, steps, out)
    return {"pretrain_minutes": float((folder / "minutes.txt").read_text()), "final_train": vq.final_train_log(folder),
            "result": vq.evaluate(load_method(folder), run_data_config(folder), root)}


def finetune(run: str, seed: int, steps: int, out: Path, finetune_seeds: list[int] | None, epochs: int) -> dict:
    from transfer import medpix_target

    from medrep.evaluate.finetune import FinetuneOptions, evaluate_finetune

    data = medpix_target("region", out) | {"size": [128, 128], "percentiles": [1.0, 99.0]}
    random_init = run == "random-init"
    folder = encoder_dir("convirt" if random_init else run, seed, steps, out, train=False)
    finetune_seeds = finetune_seeds or [seed]
    opts = FinetuneOptions(fractions=FRACTIONS, seeds=tuple(finetune_seeds), epochs=epochs, patience=3, progress=False)
    tuned = evaluate_finetune(folder / "encoder", data, opts, random_init=random_init)
    # the encoder's last training losses: when an out folder is rebuilt, a seed is pretrained again and
    # CPU runs are not bit-identical, so this says which encoder the quality and fine-tuning rows saw
    return {"fractions": {k: {m: v[m] for m in ("auroc", "accuracy", "n_train")} for k, v in tuned["fractions"].items()},
            "epochs": epochs, "seeds": finetune_seeds, "encoder_final_train": None if random_init else vq.final_train_log(folder)}


def dense(run: str, seed: int, steps: int, out: Path, dense_steps: int) -> dict:
    from medrep.data.sources.colin27_lobes import colin27_lobes
    from medrep.evaluate.segment import segment_eval

    random_init = run == "random-init"
    folder = encoder_dir("convirt" if random_init else run, seed, steps, out, train=False)
    task = colin27_lobes(spatial_dims=2)
    result = segment_eval(folder / "encoder", task.train, task.test, task.num_classes, fractions=(1.0,), seeds=(seed,),
                          steps=dense_steps, random_init=random_init, device="cpu", progress=False, class_names=task.class_names)
    fraction = result["results"]["1"]
    return {"dice": fraction["mean_dice"]["mean"], "per_class": {k: v["mean"] for k, v in fraction["per_class"].items()},
            "steps": dense_steps, "decoder": result["options"]["decoder"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["quality", "finetune", "dense"], default="quality")
    p.add_argument("--runs", nargs="+", default=["random-init", *RUNS])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--finetune-seeds", type=int, nargs="+", help="fine-tuning seeds (default: the pretraining seed)")
    p.add_argument("--finetune-epochs", type=int, default=6)
    p.add_argument("--dense-steps", type=int, default=60)
    p.add_argument("--out", type=Path, default=Path("runs/place_quality"))
    p.add_argument("--threads", type=int)
    p.add_argument("--collect", action="store_true", help="gather the per-run records under --out; no training")
    p.add_argument("--no-readme", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.collect:
        return collect(args)
    for run in args.runs:
        for seed in args.seeds:
            path = args.out / run / f"seed{seed}" / f"{args.part}.json"
            if path.is_file():
                continue
            start = time.perf_counter()
            if args.part == "quality":
                record = quality(run, seed, args.steps, args.out)
            elif args.part == "finetune":
                record = finetune(run, seed, args.steps, args.out, args.finetune_seeds, args.finetune_epochs)
            else:
                record = dense(run, seed, args.steps, args.out, args.dense_steps)
            record |= {"run": run, "seed": seed, "steps": args.steps, "minutes": (time.perf_counter() - start) / 60}
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record))
            print(f"{run} seed {seed} {args.part}: {record['minutes']:.1f} min", flush=True)


QUALITY = ["image i2t R@5", "image t2i R@5", "case i2t R@5", "modality ZS AUROC", "region ZS AUROC", "modality probe AUROC",
           "region probe AUROC", "plane probe AUROC"]


def mean_std(values: list[float]) -> str:
    """``mean ± std`` over seeds of the values given (None left out), the mean alone for one, ``-`` for none."""
    v = np.asarray([x for x in values if x is not None], float)
    if not len(v):
        return "-"
    return f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v.mean():.3f}"


def collect(args) -> None:
    runs = {}
    for run in ["random-init", *RUNS]:
        records = {part: [json.loads(f.read_text()) for f in sorted((args.out / run).glob(f"seed*/{part}.json"))]
                   for part in ("quality", "finetune", "dense")}
        if any(records.values()):
            runs[run] = records
    rows = []
    for run, rec in runs.items():
        q = [vq.metrics(r["result"]) for r in rec["quality"]]
        row = {"encoder": run, "seeds": len(q)}
        row |= {c: mean_std([m[c] for m in q]) for c in QUALITY}
        for f in FRACTIONS:
            key = f"{f:g}"
            row[f"finetune {f:.0%} AUROC"] = mean_std([r["fractions"][key]["auroc"]["mean"] for r in rec["finetune"]
                                                       if key in r["fractions"]])
        row["finetune seeds"] = len(rec["finetune"])
        row["Colin27 lobes Dice"] = mean_std([r["dice"] for r in rec["dense"]])
        row["pretrain min"] = mean_std([r.get("pretrain_minutes") for r in rec["quality"]])
        rows.append(row)
    columns = ["encoder", "seeds", *QUALITY, "finetune seeds", *[f"finetune {f:.0%} AUROC" for f in FRACTIONS], "Colin27 lobes Dice",
               "pretrain min"]
    record = {"text_field": TEXT, "budget": BUDGET, "runs": runs, "rows": rows}
    write_json(ROOT / "benchmarks" / "results" / "place_quality.json", record)
    print(format_table(rows, columns))
    if not args.no_readme:
        steps = sorted({r["steps"] for rec in runs.values() for r in rec["quality"]})
        write_section("place-quality", f"From `benchmarks/results/place_quality.json`: MedPix 2.0 train -> dev, text `{TEXT}`, "
                      f"{'/'.join(map(str, steps))} pretraining steps of the `convirt_medpix` budget per run; mean ± std over "
                      "pretraining seeds (Dice and fine-tuning: each seed's encoder, fine-tuned with that seed; AUROC macro over "
                      "classes).\n\n"
                      + format_table(rows, columns, markdown=True))


if __name__ == "__main__":
    main()
