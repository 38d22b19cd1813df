"""Every SSL method with the same backbone, batch, steps and augmentation budget, beside
random-init and fully supervised rows, on real data.

Tasks:
  colin27    3D: pretrain on crops of the Colin27 T1 (one real brain); evaluate the crop-level
             region probe (7 AAL lobe groups, train/test crops from disjoint left-right slabs)
             and the distance diagnostic (Spearman of embedding vs physical distance) on held-out
             crops of Colin27 and of the head CT. The supervised row trains the same encoder on the
             probe's own train crops and labels (16 a step, same steps and augmentation).
  pneumonia  2D: pretrain on PneumoniaMNIST train; linear probe at 1/10/100 % labels and kNN on
             the official test split; a supervised row trains the same encoder on the labels.
  medpix     2D: pretrain on the MedPix 2.0 train cases (CT/MR slices at 64 px); linear probe
             (all labels) and kNN on the dev cases for body region, modality (CT/MR) and plane.
             The supervised row trains the same encoder on body region (the hardest of the three
             targets); its modality and plane scores are then transfer, not supervision.

    python benchmarks/ssl_quality.py --task colin27 --seeds 0 1 2 --steps 150
    python benchmarks/ssl_quality.py --task pneumonia --seeds 0 1 2 --steps 250
    python benchmarks/ssl_quality.py --task medpix --seeds 0 1 2 --steps 100

Needs MEDREP_DATA (the data folder). Writes benchmarks/results/ssl_quality_<task>.json and the
README table between the ssl-quality markers, from all ssl_quality_*.json files present.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from readme_section import write_section

import medrep
from medrep.engine import pretrain
from medrep.evaluate.distance import distance_eval
from medrep.evaluate.frozen import data_config, probe_encoder, run_probes
from medrep.evaluate.regions import region_probe
from medrep.recipe import load_recipe
from medrep.results import format_table, write_json

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["simclr", "byol", "barlow_twins", "vicreg", "isimed"]
# Cited, not measured: printed beside our PneumoniaMNIST rows for orientation.
ANCHORS = ("Anchors (cited from MedMNIST v2, Yang et al. 2023, fully supervised on the PneumoniaMNIST test split, "
           "not measured here): ResNet-18 at 28 px AUC 0.944 / ACC 0.854; best listed ACC 0.946.")

# Shared budget per task: same backbone, images (or crops) per step, steps, augmentation.
COLIN27 = ["model.name=resnet10", "model.spatial_dims=3", "model.conv1_t_size=7", "model.conv1_t_stride=2",
           "data.source=folder", "data.batch_size=1",
           "data.intensity=percentile", "data.percentiles=[5.0, 95.0]", "data.size=null", "trainer.checkpoint_every_n_steps=100000",
           "data.crops={k: 16, size: 32, min_foreground: 0.25, threshold: 0.1}", "trainer.log_every_n_steps=10",
           "augment.crop_scale=[0.6, 1.0]", "augment.rotate_deg=10.0", "augment.blur_prob=0.3", "optim.lr=1.0e-3",
           "optim.warmup_steps=10"]
PNEUMONIA = ["model.name=resnet18", "model.conv1_t_size=7", "model.conv1_t_stride=2", "data.batch_size=256",
             "trainer.checkpoint_every_n_steps=100000"]
MEDPIX = ["model.name=resnet18", "model.conv1_t_size=7", "model.conv1_t_stride=2", "data.source=manifest", "data.split=train",
          "data.size=[64, 64]", "data.intensity=percentile", "data.percentiles=[5.0, 95.0]", "data.batch_size=128",
          "data.cache=true", "trainer.checkpoint_every_n_steps=100000"]
MEDPIX_TARGETS = ("region", "modality", "plane")
HEADS = {"simclr": ["method.proj_hidden_dim=512"], "byol": ["method.proj_hidden_dim=512", "method.pred_hidden_dim=512"],
         "barlow_twins": ["method.proj_hidden_dim=512", "method.proj_dim=512"],
         "vicreg": ["method.proj_hidden_dim=512", "method.proj_dim=512"], "isimed": [], "supervised": []}


def data_root() -> Path:
    root = os.environ.get("MEDREP_DATA")
    if not root or not Path(root).is_dir():
        raise SystemExit("set MEDREP_DATA to the data folder (volumes/, medmnist/ ...)")
    return Path(root)


def colin27_folder(out: Path) -> Path:
    """A folder holding only the T1 (the volumes folder also has the label map and a CT)."""
    folder = out / "colin27_t1_only"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "colin27_t1.nii.gz"
    if not link.exists():
        link.symlink_to(data_root() / "volumes" / "colin27_t1.nii.gz")
    return folder


COLIN27_REGIONS = dict(crop=32, stride=16, slab_axis=0)  # the probe's crops, shared by the supervised row
COLIN27_INTENSITY = {"intensity": "percentile", "percentiles": [5.0, 95.0]}


def colin27_labelled_crops(out: Path) -> Path:
    """The region probe's train crops (train slabs only), scaled as the probe scales the whole
    volume, as NIfTI files and a labelled manifest (written once): what the supervised row trains on."""
    from medrep.data.synthetic import write_nifti
    from medrep.evaluate.crops import scale_volume
    from medrep.evaluate.regions import region_split

    folder, manifest = out / "colin27_region_crops", out / "colin27_region_crops.csv"
    if manifest.is_file():
        return manifest
    vols = data_root() / "volumes"
    split = region_split(vols / "colin27_t1.nii.gz", vols / "colin27_aal.nii.gz", vols / "colin27_aal_labels.txt",
                         **COLIN27_REGIONS)
    scaled, _ = scale_volume(split.image, None, COLIN27_INTENSITY)
    crops = split.crops("train", scaled)
    folder.mkdir(parents=True, exist_ok=True)
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        for i in range(len(crops)):
            item = crops[i]
            path = write_nifti(folder / f"crop{i:03d}.nii.gz", item["image"][0].numpy(), (1.0, 1.0, 1.0))  # Colin27: 1 mm
            writer.writerow([path, split.class_names[int(item["label"])], "train"])
    return manifest


def medpix_manifests(out: Path) -> dict[str, Path]:
    """One manifest per target, written once under ``out`` (case-level train/dev splits)."""
    from medrep.data.sources.medpix2 import write_medpix_manifest

    paths = {t: out / "medpix" / f"{t}.csv" for t in MEDPIX_TARGETS}
    for target, path in paths.items():
        if not path.exists():
            write_medpix_manifest(data_root() / "medpix2", target, path)
    return paths


def train_classes(manifest: Path) -> list[str]:
    with manifest.open(newline="") as f:
        return sorted({row["label"] for row in csv.DictReader(f) if row["split"] == "train"})


def recipe_for(task: str, method: str, seed: int, steps: int, out: Path, extra: tuple[str, ...] = ()) -> dict:
    base = {"isimed": "isimed_3d_colin27" if task == "colin27" else "isimed_2d_medpix"}.get(method)
    base = base or ("supervised_pneumoniamnist" if method == "supervised" else f"{method}_pneumoniamnist")
    if task == "colin27":
        common = COLIN27 + [f"data.path={colin27_folder(out)}"]
    elif task == "medpix":
        # pretraining reads the train cases only; labels in the manifest are not used by SSL
        common = MEDPIX + [f"data.path={medpix_manifests(out)['region']}"]
    else:
        common = list(PNEUMONIA)
    if task == "colin27" and method == "supervised":
        manifest = colin27_labelled_crops(out)
        common += ["data.source=manifest", f"data.path={manifest}", "data.crops=null", "data.intensity=none",
                   "data.batch_size=16", "data.spatial_dims=3", f"method.num_classes={len(train_classes(manifest))}"]
    if task == "medpix" and method == "supervised":
        common += [f"method.num_classes={len(train_classes(medpix_manifests(out)['region']))}"]
    if task == "medpix" and method == "isimed":
        # 8 crops of 32 px from each of 16 images at the probes' 64 px scale (PNG: pixel distances)
        common += ["data.batch_size=16", "data.crops={k: 8, size: 32, min_foreground: 0.25, threshold: 0.1}"]
    if task == "pneumonia" and method == "isimed":
        # PneumoniaMNIST has no spacing: pixel distances; 8 crops of 16 px from each of 32 images
        common += ["data.source=medmnist", "data.path=null", "data.batch_size=32", "data.intensity=minmax",
                   "data.crops={k: 8, size: 16, min_foreground: null}", "data.size=null"]
    if method == "isimed":
        common += ["method.intensity_augment=false"]
    return load_recipe(base, common + HEADS[method] + [f"trainer.seed={seed}", f"trainer.max_steps={steps}",
                                                       f"trainer.output_dir={out / task / method / f'seed{seed}'}",
                                                       "trainer.progress_bar=false", *extra])


def evaluate(task: str, encoder: torch.nn.Module, out: Path) -> dict:
    root = data_root()
    if task == "pneumonia":
        data = load_recipe("demo_simclr_pneumoniamnist")["data"]
        return probe_encoder(encoder, data, seeds=(0,))
    if task == "medpix":
        return medpix_probes(encoder, medpix_manifests(out))
    vols = root / "volumes"
    regions = region_probe(encoder, vols / "colin27_t1.nii.gz", vols / "colin27_aal.nii.gz", vols / "colin27_aal_labels.txt",
                           **COLIN27_REGIONS, fractions=(1.0,), seeds=(0,), progress=False, intensity=COLIN27_INTENSITY)
    colin = distance_eval(encoder, vols / "colin27_t1.nii.gz", crops=256, crop=32, seed=123, progress=False,
                          intensity=COLIN27_INTENSITY)
    ct = distance_eval(encoder, vols / "head_ct.nii.gz", crops=256, crop=32, seed=123, progress=False,
                       intensity={"intensity": "ct_window", "window": [-100.0, 200.0]})
    return {"regions": {k: regions[k] for k in ("results", "counts", "class_counts", "chance_accuracy", "split")},
            "distance_colin27": {k: colin[k] for k in ("spearman_rho", "pearson_r", "n_pairs")},
            "distance_head_ct": {k: ct[k] for k in ("spearman_rho", "pearson_r", "n_pairs")}}


_IMAGES: dict[tuple, torch.Tensor] = {}


@torch.no_grad()
def embed_cached(encoder: torch.nn.Module, data: dict, split: str, batch_size: int = 256) -> np.ndarray:
    """Frozen features of a split whose prepared images are decoded once per process: every row of
    the table reads the same 1,850 PNGs, and decoding them dominated the probe's time."""
    from medrep.data import build_dataset

    key = (data["path"], split, str(data.get("size")))
    if key not in _IMAGES:
        dataset = build_dataset(data, split=split)
        _IMAGES[key] = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    images = _IMAGES[key]
    encoder = encoder.eval()
    return torch.cat([encoder(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]).flatten(1).numpy()


def medpix_probes(encoder: torch.nn.Module, manifests: dict[str, Path]) -> dict:
    """Features of every image once (the region manifest lists them all), then one probe per target
    on the rows its manifest keeps, labelled from that manifest."""
    data = data_config(None, str(manifests["region"]), "manifest", size=[64])
    data.update(intensity="percentile", percentiles=[5.0, 95.0], spatial_dims=2)
    feats, paths = {}, {}
    for split in ("train", "dev"):
        feats[split] = embed_cached(encoder, data, split)
        paths[split] = [r["path"] for r in csv.DictReader(open(manifests["region"])) if r["split"] == split]
        assert len(paths[split]) == len(feats[split])
    result = {}
    for target, path in manifests.items():
        rows = list(csv.DictReader(open(path)))
        classes = sorted({r["label"] for r in rows})
        xy = {}
        for split in ("train", "dev"):
            label = {r["path"]: classes.index(r["label"]) for r in rows if r["split"] == split}
            keep = [i for i, p in enumerate(paths[split]) if p in label]
            if len(label) != len(keep):
                raise SystemExit(f"{path}: {len(label) - len(keep)} {split} images are not in the region manifest")
            xy[split] = (feats[split][keep], np.array([label[paths[split][i]] for i in keep]))
        result[target] = run_probes(xy["train"], xy["dev"], {"linear": dict(fractions=(1.0,), seeds=(0,)), "knn": dict(k=20)})
    return result


def metrics(task: str, result: dict) -> dict[str, float]:
    if task == "pneumonia":
        lin = result["linear"]["fractions"]
        out = {f"linear {k} AUROC": v["auroc"]["mean"] for k, v in lin.items()}
        out |= {f"linear {k} ACC": v["accuracy"]["mean"] for k, v in lin.items()}
        return out | {"kNN AUROC": result["knn"]["auroc"], "kNN ACC": result["knn"]["accuracy"]}
    if task == "medpix":
        out = {}
        for target, res in result.items():
            lin = res["linear"]["fractions"]["1"]
            out |= {f"{target} linear ACC": lin["accuracy"]["mean"], f"{target} linear AUROC": lin["auroc"]["mean"],
                    f"{target} kNN ACC": res["knn"]["accuracy"]}
        return out
    reg = result["regions"]["results"]
    return {"region linear ACC": reg["linear"]["fractions"]["1"]["accuracy"]["mean"],
            "region linear AUROC": reg["linear"]["fractions"]["1"]["auroc"]["mean"],
            "region kNN ACC": reg["knn"]["accuracy"], "Spearman Colin27": result["distance_colin27"]["spearman_rho"],
            "Spearman head CT": result["distance_head_ct"]["spearman_rho"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["colin27", "pneumonia", "medpix"], required=True)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--out", default="runs/ssl_quality")
    parser.add_argument("--reuse", action="store_true", help="load runs finished earlier under --out (quality.json)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 when benchmarks share the CPU)")
    parser.add_argument("--collect", action="store_true", help="only gather the per-run records present under --out (no training)")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--readme-only", action="store_true")
    args = parser.parse_args()
    results_path = ROOT / "benchmarks" / "results" / f"ssl_quality_{args.task}.json"
    if args.readme_only:
        update_readme()
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    rows = ["random-init", *args.methods, "supervised"]
    runs: dict[str, list[dict]] = {name: [] for name in rows}
    for seed in args.seeds:
        for name in rows:
            record = out / args.task / name / f"seed{seed}" / "quality.json"
            if (args.reuse or args.collect) and record.is_file():  # finished before: a benchmark cut short resumes here
                runs[name].append(json.loads(record.read_text()))
                print(f"seed {seed} {name}: reused {record}", flush=True)
                continue
            if args.collect:
                print(f"seed {seed} {name}: no record, left out", flush=True)
                continue
            start = time.perf_counter()
            if name == "random-init":
                torch.manual_seed(seed)
                encoder = medrep.models.build_backbone(recipe_for(args.task, "simclr", seed, args.steps, out)["model"]).eval()
                minutes = 0.0
            else:
                encoder = medrep.load_encoder(pretrain(recipe_for(args.task, name, seed, args.steps, out)))
                minutes = (time.perf_counter() - start) / 60
            result = evaluate(args.task, encoder, out)
            runs[name].append({"seed": seed, "pretrain_minutes": minutes, "metrics": metrics(args.task, result), "result": result})
            write_json(record, runs[name][-1])
            print(f"seed {seed} {name}: {runs[name][-1]['metrics']} ({(time.perf_counter() - start) / 60:.1f} min)", flush=True)
    table = []
    for name, per_seed in runs.items():
        if not per_seed:
            continue
        keys = per_seed[0]["metrics"]
        table.append({"encoder": name, "seeds": len(per_seed), **{k: {"mean": float(np.mean([r["metrics"][k] for r in per_seed])),
                                              "std": float(np.std([r["metrics"][k] for r in per_seed]))} for k in keys}})
    columns = ["encoder", "seeds"] + sorted(c for c in table[0] if c not in ("encoder", "seeds"))
    print(format_table(table, columns))
    if args.task == "pneumonia":
        print(ANCHORS)
    budget = {"colin27": COLIN27, "pneumonia": PNEUMONIA, "medpix": MEDPIX}[args.task]
    seeds = sorted({r["seed"] for per_seed in runs.values() for r in per_seed})
    write_json(results_path, {"task": args.task, "seeds": seeds, "steps": args.steps, "methods": args.methods,
                              "budget": budget, "table": table, "columns": columns,
                              "runs": runs, "torch_threads": torch.get_num_threads()})
    if not args.no_readme:
        update_readme()


def update_readme() -> None:
    parts = []
    for path in sorted((ROOT / "benchmarks" / "results").glob("ssl_quality_*.json")):
        r = json.loads(path.read_text())
        parts.append(f"**{r['task']}**: {r['steps']} steps per method, seeds {r['seeds']} (mean ± std over the seeds of each row); "
                     "shared budget "
                     f"`{' '.join(r['budget'])}`. From `{path.relative_to(ROOT)}`.\n\n"
                     + format_table(r["table"], r["columns"], markdown=True)
                     + (f"\n\n{ANCHORS}" if r["task"] == "pneumonia" else ""))
    write_section("ssl-quality", "\n\n".join(parts))


if __name__ == "__main__":
    main()
