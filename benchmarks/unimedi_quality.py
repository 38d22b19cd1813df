"""UniMedI against CLIP/ConVIRT on the same ViT, its ablations, and the check of its slice selection.

Every run trains ``unimedi_mixed``'s ViT (vit2d3d, 192 wide, 6 layers) at one budget (``--steps``,
batch 14) on real data: MedPix 2.0 captions (2D), Colin27 crops with text generated from their AAL
atlas labels (3D; prepared here with ``medrep prepare colin27-regions``' function) and head-CT crops
without text. Rows:

  unimedi        the full method: CLIP + DINO on [CLS] and patches, teacher-selected slices, 2D + 3D (+ head CT)
  convirt-vit    ConVIRT/CLIP with the same ViT and data with text: the CLIP loss alone, no masking, no slices
  2d-only        UniMedI on MedPix alone          3d-only   UniMedI on Colin27 + head CT alone
  random-slices  UniMedI with k random slices     no-distill  UniMedI without the DINO losses
  random-init    the untrained network

Scores: MedPix dev retrieval (image and case level), zero-shot and linear probe on modality, plane
and region (``vlp_quality.evaluate``); the Colin27 region probe (3D crops of 32 voxels at 2 mm,
alternating axial slabs; :func:`medrep.evaluate.regions.region_probe`) and end-to-end fine-tuning on
the same crops at 10 % and 100 % (``--part finetune``); 2D-3D consistency on the
test crops (:mod:`medrep.evaluate.consistency`); and, for runs that select slices, the selection
hit rate on the train crops at every saved step (:mod:`medrep.evaluate.slice_selection`).

    python benchmarks/unimedi_quality.py --runs unimedi convirt-vit --seeds 0 1 2 --threads 1
    python benchmarks/unimedi_quality.py --part selection --runs unimedi random-slices --threads 1
    python benchmarks/unimedi_quality.py --part finetune --runs random-init unimedi convirt-vit --threads 1
    python benchmarks/unimedi_quality.py --collect
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import vlp_quality as vq
from place_quality import mean_std
from readme_section import write_section

from medrep.recipe import load_recipe, read_yaml
from medrep.results import format_table, write_json

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "src" / "medrep" / "configs" / "unimedi_mixed.yaml"
PART_NAMES = ("medpix", "colin27", "head_ct")
#: row -> (parts kept, method overrides, model overrides)
RUNS = {
    "unimedi": (PART_NAMES, {}, {}),
    "convirt-vit": (("medpix", "colin27"), {"cls_weight": 0.0, "patch_weight": 0.0, "mask_ratio": 0.0}, {"select_k": 0}),
    "2d-only": (("medpix",), {}, {}),
    "3d-only": (("colin27", "head_ct"), {}, {}),
    "random-slices": (PART_NAMES, {"selection": "random"}, {}),
    "no-distill": (PART_NAMES, {"cls_weight": 0.0, "patch_weight": 0.0}, {}),
}
BATCH, EVERY = 14, 50
SELECTION_KEYS = ("k", "crops", "pairs", "partial_pairs", "all", "partial", "brain_spearman", "same_choice", "picked_slabs",
                  "score_spread")


def prepared(out: Path) -> Path:
    """The Colin27 crops with atlas-made text (written once) and Colin27 resampled to 2 mm for the region probe."""
    from medrep.data.sources.colin27_regions import prepare_colin27_regions

    folder = out / "colin27_regions"
    if not (folder / "summary.json").is_file():
        prepare_colin27_regions(folder, Path(vq.data_root()).parent / "volumes")
    return folder


def colin27_2mm(out: Path) -> tuple[Path, Path, Path]:
    """Colin27 scaled and resampled as the prepared crops are (2 mm, RAS), for the region probe."""
    from medrep.data.sources.colin27_regions import load_grid
    from medrep.data.synthetic import write_nifti

    folder = out / "colin27_2mm"
    files = (folder / "t1.nii.gz", folder / "aal.nii.gz", prepared(out) / "label_names.txt")
    if not files[1].is_file():
        _, image, labels, grid, _ = load_grid(Path(vq.data_root()).parent / "volumes", (2.0, 2.0, 2.0))
        write_nifti(files[0], image.astype(np.float32), affine=grid)
        write_nifti(files[1], labels.astype(np.int16), affine=grid)
    return files


def region_manifest(out: Path) -> Path:
    """The region probe's crops (same split) as NIfTI files and a manifest, for 3D fine-tuning."""
    import csv

    from medrep.data.synthetic import write_nifti
    from medrep.evaluate.regions import region_split

    path = out / "colin27_region_crops" / "crops.csv"
    if path.is_file():
        return path
    t1, aal, names = colin27_2mm(out)
    split = region_split(t1, aal, names, spatial_dims=3, crop=32, stride=8)
    rows = []
    for part in ("train", "test"):
        crops = split.crops(part)
        for i in range(len(crops)):
            item = crops[i]
            file = path.parent / part / f"{i}.nii.gz"
            write_nifti(file, item["image"][0].numpy(), spacing=(2.0, 2.0, 2.0))
            rows.append({"path": str(file), "label": split.class_names[int(item["label"])], "split": part})
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def finetune_3d(run: str, seed: int, steps: int, out: Path) -> dict:
    """End-to-end fine-tuning on the region crops at 10 % and 100 % of the train crops (10 % of them held out)."""
    from medrep.evaluate.finetune import FinetuneOptions, evaluate_finetune

    folder = out / ("unimedi" if run == "random-init" else run) / f"seed{seed}"
    data = {"source": "manifest", "path": str(region_manifest(out)), "spatial_dims": 3, "intensity": "none", "size": None,
            "skip_bad": False}
    opts = FinetuneOptions(fractions=(0.1, 1.0), seeds=(seed,), epochs=8, patience=3, progress=False)
    tuned = evaluate_finetune(folder / "encoder", data, opts, random_init=run == "random-init", val_split=None)
    return {k: {m: v[m] for m in ("auroc", "accuracy", "n_train")} for k, v in tuned["fractions"].items()}


def recipe_for(run: str, seed: int, steps: int, out: Path) -> dict:
    parts, method, model = RUNS["unimedi" if run == "random-init" else run]
    raw = read_yaml(RECIPE.read_text())
    raw["method"] |= method
    raw["model"] |= model
    raw["data"]["parts"] = [copy.deepcopy(p) for p in raw["data"]["parts"] if p["name"] in parts]
    for part in raw["data"]["parts"]:
        if part["name"] == "colin27":
            part["path"] = str(prepared(out))
    raw["data"]["batch_size"] = BATCH
    raw["optim"]["warmup_steps"] = max(1, steps // 10)
    raw["trainer"] |= {"seed": seed, "max_steps": steps, "checkpoint_every_n_steps": EVERY, "keep_checkpoints": None,
                       "output_dir": str(out / run / f"seed{seed}"), "progress_bar": False}
    return load_recipe(raw)


def pretrained(run: str, seed: int, steps: int, out: Path) -> Path:
    """The run's folder, pretrained first when its encoder is not there yet."""
    from medrep.engine import pretrain

    recipe = recipe_for(run, seed, steps, out)
    folder = Path(recipe["trainer"]["output_dir"])
    if not (folder / "encoder" / "encoder.json").is_file():
        start = time.perf_counter()
        pretrain(recipe)
        (folder / "minutes.txt").write_text(f"{(time.perf_counter() - start) / 60:.2f}\n")
    return folder


def trained(run: str, seed: int, steps: int, out: Path) -> torch.nn.Module:
    from medrep.checkpoint import load_method
    from medrep.methods import build_method

    if run == "random-init":
        torch.manual_seed(seed)
        return build_method(recipe_for(run, seed, steps, out)).eval()
    return load_method(pretrained(run, seed, steps, out))


def medpix_data(recipe: dict) -> dict:
    part = next(p for p in recipe["data"]["parts"] if p["name"] == "medpix") if any(
        p["name"] == "medpix" for p in recipe["data"]["parts"]) else read_yaml(RECIPE.read_text())["data"]["parts"][0]
    return {"source": "medpix2", "text_field": "caption", "skip_bad": True, "spatial_dims": 2, "size": part["size"],
            "intensity": recipe["data"]["intensity"], "percentiles": recipe["data"]["percentiles"]}


def score(run: str, seed: int, steps: int, out: Path) -> dict:
    from medrep.evaluate.consistency import slice_consistency
    from medrep.evaluate.regions import region_probe
    from medrep.evaluate.slice_selection import prepared_crops

    method = trained(run, seed, steps, out)
    recipe = recipe_for(run, seed, steps, out)
    result = {"medpix": vq.evaluate(method, medpix_data(recipe), vq.data_root())}
    t1, aal, names = colin27_2mm(out)
    result["region_probe"] = region_probe(method.encoder, t1, aal, names, fractions=(1.0,), seeds=(0,), crop=32, stride=8, progress=False,
                                          intensity={"intensity": "none"})
    crops, _, _ = prepared_crops(prepared(out), "test")
    volumes = torch.cat([crops[i]["images"] for i in range(len(crops))])
    result["consistency"] = slice_consistency(method.encoder, volumes, stride=2)
    return result


def finetune(run: str, seed: int, steps: int, out: Path) -> dict:
    if run != "random-init":
        pretrained(run, seed, steps, out)
    elif not (out / "unimedi" / f"seed{seed}" / "encoder" / "encoder.json").is_file():
        raise SystemExit("random-init fine-tunes unimedi's architecture: run --part score --runs unimedi first")
    return {"region_3d": finetune_3d(run, seed, steps, out)}


def selection(run: str, seed: int, steps: int, out: Path) -> dict:
    """Hit rates of the teacher's selection at step 0 (the initial network) and at every saved step."""
    from medrep.checkpoint import load_method
    from medrep.evaluate.slice_selection import selection_figure, selection_hits
    from medrep.methods import build_method

    folder = pretrained(run, seed, steps, out)  # here when the score part has not (its record kept from another machine)
    recipe = recipe_for(run, seed, steps, out)
    torch.manual_seed(seed)
    models = {0: build_method(recipe).eval()}
    for ckpt in sorted(folder.glob("checkpoints/step*.ckpt"), key=lambda p: int(p.stem.removeprefix("step"))):
        models[int(ckpt.stem.removeprefix("step"))] = load_method(folder, checkpoint=ckpt)
    by_step = {}
    for step, model in models.items():
        hits = selection_hits(model, prepared(out), "train")
        by_step[step] = {k: hits[k] for k in SELECTION_KEYS}
    last = max(models)
    study = "colin27_train_x0_y0_z9"
    figure = selection_figure(models[last], prepared(out), study, folder / "selection.png")
    return {"by_step": by_step, "figure": str(figure.relative_to(out))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["score", "selection", "finetune"], default="score")
    p.add_argument("--runs", nargs="+", default=["random-init", *RUNS])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--out", type=Path, default=Path("runs/unimedi_quality"))
    p.add_argument("--threads", type=int)
    p.add_argument("--collect", action="store_true")
    p.add_argument("--no-readme", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.collect:
        return collect(args)
    for run in args.runs:
        if args.part == "selection" and run in ("convirt-vit", "2d-only"):
            continue  # no slices selected
        for seed in args.seeds:
            path = args.out / run / f"seed{seed}" / f"{args.part}.json"
            if path.is_file():
                continue
            start = time.perf_counter()
            record = {"score": score, "selection": selection, "finetune": finetune}[args.part](run, seed, args.steps, args.out)
            record |= {"run": run, "seed": seed, "steps": args.steps, "minutes": (time.perf_counter() - start) / 60}
            minutes = args.out / run / f"seed{seed}" / "minutes.txt"
            if minutes.is_file():
                record["pretrain_minutes"] = float(minutes.read_text())
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record))
            print(f"{run} seed {seed} {args.part}: {record['minutes']:.1f} min", flush=True)


QUALITY = ["image i2t R@5", "image t2i R@5", "case i2t R@5", "modality ZS AUROC", "region ZS AUROC", "modality probe AUROC",
           "region probe AUROC"]


def collect(args) -> None:
    runs = {}
    for run in ["random-init", *RUNS]:
        records = {part: [json.loads(f.read_text()) for f in sorted((args.out / run).glob(f"seed*/{part}.json"))]
                   for part in ("score", "selection", "finetune")}
        if any(records.values()):
            runs[run] = records
    rows, selection_rows = [], []
    for run, rec in runs.items():
        q = [vq.metrics(r["medpix"]) for r in rec["score"]]
        row = {"encoder": run, "seeds": len(q)} | {c: mean_std([m[c] for m in q]) for c in QUALITY}
        row["Colin27 region probe AUROC"] = mean_std([r["region_probe"]["results"]["linear"]["fractions"]["1"]["auroc"]["mean"]
                                                       for r in rec["score"]])
        for key in ("R@1", "R@10", "auroc"):
            row[f"2D-3D {key}"] = mean_std([r["consistency"][key] for r in rec["score"]])
        for fraction in ("0.1", "1"):
            row[f"3D finetune {float(fraction):.0%} AUROC"] = mean_std([r["region_3d"][fraction]["auroc"]["mean"]
                                                                       for r in rec["finetune"] if fraction in r["region_3d"]])
        row["pretrain min"] = mean_std([r.get("pretrain_minutes") for r in rec["score"]])
        rows.append(row)
        for r in rec["selection"]:
            for step, hits in sorted(r["by_step"].items(), key=lambda kv: int(kv[0])):
                selection_rows.append({"run": run, "seed": r["seed"], "step": int(step), "pairs": hits["partial_pairs"],
                                       **{rule: f"{hits['partial'][rule]:.3f}" for rule in ("attentive", "random", "central", "best")},
                                       "score ~ brain (Spearman)": f"{hits['brain_spearman']:.2f}" if hits.get("brain_spearman") is not None
                                       else "-", "same set": f"{hits['same_choice']:.2f}" if "same_choice" in hits else "-",
                                       "score spread": f"{hits['score_spread']:.3f}" if "score_spread" in hits else "-"})
    columns = ["encoder", "seeds", *QUALITY, "Colin27 region probe AUROC", "3D finetune 10% AUROC", "3D finetune 100% AUROC",
               "2D-3D R@1", "2D-3D R@10", "2D-3D auroc", "pretrain min"]
    write_json(ROOT / "benchmarks" / "results" / "unimedi_quality.json", {"runs": runs, "rows": rows, "selection": selection_rows})
    print(format_table(rows, columns))
    if selection_rows:
        print(format_table(selection_rows, list(selection_rows[0])))
    if not args.no_readme:
        steps = sorted({r["steps"] for rec in runs.values() for r in rec["score"]})
        write_section("unimedi-quality", f"From `benchmarks/results/unimedi_quality.json`: {'/'.join(map(str, steps))} steps, batch "
                      f"{BATCH}, mean ± std over pretraining seeds.\n\n" + format_table(rows, columns, markdown=True)
                      + ("\n\nSlice selection on the train crops (pairs where the choice matters: the named region in some "
                         "slab centres but not all), fraction of the k = 4 selected slices holding the region:\n\n"
                         + format_table(selection_rows, list(selection_rows[0]), markdown=True) if selection_rows else ""))


if __name__ == "__main__":
    main()
