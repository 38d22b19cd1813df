"""Does an encoder pretrained on one collection help on another? Encoders pretrained on
PneumoniaMNIST are scored on MedPix 2.0 (modality, body region), encoders pretrained on MedPix on
PneumoniaMNIST, beside random init and a supervised reference, by the linear probe and by
fine-tuning.

Encoders, one shared pretraining budget (``--steps``, ResNet-10 with the 7x7 stride-2 stem, batch
32, images at 28 px for PneumoniaMNIST and 32 px for MedPix, so both sides see the same scale):
SimCLR, VICReg, Barlow Twins (the other instance-SSL method; BYOL was below it on both data sets
in ssl_quality), a supervised reference trained on the source's own labels (pneumonia; MedPix
body region) and, from MedPix only since PneumoniaMNIST has no reports, ConVIRT (the best
image-report method in vlp_quality; ``--vlp-steps``, its text tower makes a step ~10x dearer).
ISImed is left out: it was below random init on both 2D sets in ssl_quality.

Targets: PneumoniaMNIST (official train/val/test); MedPix modality and body region (train cases
less 10 % of them held out by case as the validation split; the dev cases are the test split).
Each target uses its own preprocessing for every row. Scores, 3 seeds: the linear probe at a small
label fraction and at 100 %; fine-tuning at the small fraction (1 % of PneumoniaMNIST, 10 % of
MedPix: the label-scarce case transfer is for), at most 15 epochs, patience 5.

    python benchmarks/transfer.py --steps 600 --vlp-steps 100 --seeds 0 1 2

Writes benchmarks/results/transfer.json and the README table between the transfer markers.
"""

from __future__ import annotations

import argparse
import copy
import csv
import random
import time
from pathlib import Path

import torch
from readme_section import write_section
from ssl_quality import data_root, medpix_manifests, recipe_for, train_classes

import medrep
from medrep.engine import pretrain
from medrep.evaluate.finetune import FinetuneOptions, evaluate_finetune
from medrep.evaluate.frozen import run_probes, split_features
from medrep.recipe import DEFAULTS, load_recipe
from medrep.results import format_table, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BUDGET = ["model.name=resnet10", "model.conv1_t_size=7", "model.conv1_t_stride=2", "data.batch_size=32",
          "trainer.log_every_n_steps=50", "trainer.checkpoint_every_n_steps=100000"]
MEDPIX_SIZE = ["data.size=[32, 32]"]
SSL = ["simclr", "vicreg", "barlow_twins", "supervised"]
SMALL = {"pneumonia": 0.01, "medpix modality": 0.1, "medpix region": 0.1}


def pretrained(source: str, method: str, steps: int, vlp_steps: int, work: Path) -> Path:
    out = work / source / method
    if (out / "encoder" / "encoder.json").is_file():
        return out
    if method == "convirt":
        recipe = load_recipe("convirt_medpix", [*BUDGET, *MEDPIX_SIZE, f"data.path={data_root() / 'medpix2'}",
                                                f"trainer.max_steps={vlp_steps}", "optim.warmup_steps=10", "trainer.progress_bar=false"])
    else:
        extra = BUDGET + (MEDPIX_SIZE if source == "medpix" else [])
        recipe = recipe_for("pneumonia" if source == "pneumonia" else "medpix", method, 0, steps, work, extra=tuple(extra))
    recipe["trainer"]["output_dir"] = str(out)
    start = time.perf_counter()
    pretrain(recipe)
    print(f"pretrained {source}/{method} in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return out


def medpix_target(target: str, work: Path) -> dict:
    """The data section of a MedPix target: its manifest with 10 % of the train cases as 'val', dev as 'test'."""
    src = medpix_manifests(work)[target]
    dst = work / "medpix" / f"{target}_tvt.csv"
    if not dst.is_file():
        rows = list(csv.DictReader(src.open(newline="")))
        cases = sorted({r["case"] for r in rows if r["split"] == "train"})
        val = set(random.Random(0).sample(cases, max(1, len(cases) // 10)))
        for r in rows:
            r["split"] = "test" if r["split"] == "dev" else ("val" if r["case"] in val else r["split"])
        with dst.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    data = copy.deepcopy(DEFAULTS["data"])
    data.update(source="manifest", path=str(dst), size=[32, 32], intensity="percentile", percentiles=[5.0, 95.0])
    return data


def pneumonia_target() -> dict:
    return load_recipe("demo_simclr_pneumoniamnist")["data"] | {"path": str(data_root() / "medmnist" / "pneumoniamnist.npz")}


def score(encoder: Path, random_init: bool, data: dict, small: float, seeds: list[int]) -> dict:
    torch.manual_seed(seeds[0])
    net = medrep.load_encoder(encoder, weights=not random_init)
    train, test = (split_features(net, data, s) for s in ("train", "test"))
    linear = run_probes(train, test, {"linear": dict(fractions=(small, 1.0), seeds=seeds)})["linear"]
    opts = FinetuneOptions(fractions=(small,), seeds=tuple(seeds), epochs=15, patience=5, progress=False)
    tuned = evaluate_finetune(encoder, data, opts, random_init=random_init)
    strip = lambda r: {k: r[k] for k in ("auroc", "accuracy", "n_train")} | {  # noqa: E731
        "per_seed": [{k: v for k, v in s.items() if k != "history"} for s in r["per_seed"]]}
    return {"linear": {k: strip(v) for k, v in linear["fractions"].items()},
            "finetune": {k: strip(v) for k, v in tuned["fractions"].items()}}


def table(record: dict, markdown: bool = False) -> str:
    rows = []
    for target, encoders in record["results"].items():
        small = f"{SMALL[target]:g}"
        for name, r in encoders.items():
            rows.append({"target": target, "encoder": name, "linear small AUROC": r["linear"][small]["auroc"],
                         "linear 100 % AUROC": r["linear"]["1"]["auroc"], "finetune small AUROC": r["finetune"][small]["auroc"],
                         "finetune small ACC": r["finetune"][small]["accuracy"], "small": small})
    return format_table(rows, ["target", "encoder", "small", "linear small AUROC", "linear 100 % AUROC", "finetune small AUROC",
                               "finetune small ACC"], markdown=markdown)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--vlp-steps", type=int, default=100)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--work", type=Path, default=Path("runs/bench_transfer"))
    p.add_argument("--sources", nargs="+", default=["pneumonia", "medpix"], help="pretraining data sets to run")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--no-readme", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    record = {"steps": args.steps, "vlp_steps": args.vlp_steps, "seeds": args.seeds, "budget": BUDGET, "medpix_size": 32,
              "small_fractions": SMALL, "torch_threads": torch.get_num_threads(), "minutes": {}, "results": {}}
    start = time.perf_counter()
    plan = [("pneumonia", SSL, ["medpix modality", "medpix region"]), ("medpix", [*SSL, "convirt"], ["pneumonia"])]
    for source, methods, targets in (step for step in plan if step[0] in args.sources):
        encoders = {f"{source}/{m}": pretrained(source, m, args.steps, args.vlp_steps, args.work) for m in methods}
        for target in targets:
            data = pneumonia_target() if target == "pneumonia" else medpix_target(target.split()[1], args.work)
            results = record["results"].setdefault(target, {})
            rows = {"random init": (next(iter(encoders.values())), True), **{k: (v, False) for k, v in encoders.items()}}
            for name, (path, random_init) in rows.items():
                t = time.perf_counter()
                results[name] = score(path, random_init, data, SMALL[target], args.seeds)
                record["minutes"][f"{target} <- {name}"] = (time.perf_counter() - t) / 60
                print(f"{target} <- {name}: {results[name]['finetune']} ({record['minutes'][f'{target} <- {name}']:.1f} min)", flush=True)
                write_json(RESULTS / "transfer.json", record)
    record["total_minutes"] = (time.perf_counter() - start) / 60
    record["medpix_region_classes"] = train_classes(medpix_manifests(args.work)["region"])
    write_json(RESULTS / "transfer.json", record)
    print(table(record))
    if not args.no_readme:
        write_section("transfer", f"From `benchmarks/results/transfer.json`: test AUROC (and fine-tuning accuracy), mean ± std "
                                  f"over seeds {args.seeds}; pretraining {args.steps} steps (ConVIRT {args.vlp_steps}) of "
                                  f"`{' '.join(BUDGET)}`; 'small' is the label fraction of the small-label columns.\n\n"
                      + table(record, markdown=True))


if __name__ == "__main__":
    main()
