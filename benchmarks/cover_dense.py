"""COVER vs SimCLR vs scratch on dense segmentation, and what COVER costs in 3D.

Dice (``--part dice``): the Colin27 lobe task of ``medrep evaluate segment`` in 2D (sagittal
slices; train on the left hemisphere, test on the right). COVER and SimCLR pretrain the same
U-Net on the unlabelled training slices only (never the test hemisphere); each encoder, and a
scratch U-Net, is then fine-tuned at each label fraction and seed, and scored by Dice over the 7
lobe groups. Pretraining runs once per method (seed 0); the seeds are the fine-tuning seeds.

Cost (``--part cost``): one COVER training step of the 3D recipe (``cover_3d_colin27``: U-Net
16-256 channels, neighbourhood 5, 2 patches a step) at 64^3 and 96^3 patches: steps/s and peak
memory (process RSS on CPU, ``max_memory_allocated`` on a GPU), each size in its own process.

    python benchmarks/cover_dense.py --part dice --seeds 0 1 2 --pretrain-steps 300 --steps 200
    python benchmarks/cover_dense.py --part cost --sizes 64 96

Needs MEDREP_DATA. Writes benchmarks/results/cover_dense_<part>.json and the README table between
the cover-dense markers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from readme_section import write_section

from medrep.engine import pretrain
from medrep.recipe import load_recipe, read_yaml
from medrep.results import format_table, write_json

ROOT = Path(__file__).resolve().parents[1]
CHANNELS = [16, 32, 64, 128, 256]
CONFIGS = ROOT / "src" / "medrep" / "configs"


def hemisphere_slices(out: Path, part: str = "train") -> Path:
    """One hemisphere's sagittal slices as 8-bit PNGs: ``train`` (left) is the unlabelled
    pretraining pool; ``test`` (right, mirrored) feeds the registration diagnostic."""
    from PIL import Image

    from medrep.data.sources.colin27_lobes import colin27_lobes

    folder = out / f"colin27_{ {'train': 'left', 'test': 'right'}[part]}_slices"
    if not folder.is_dir() or not any(folder.iterdir()):
        folder.mkdir(parents=True, exist_ok=True)
        for i, item in enumerate(getattr(colin27_lobes(spatial_dims=2), part)):
            Image.fromarray(np.round(np.clip(item.image.squeeze(), 0, 1) * 255).astype(np.uint8)).save(folder / f"slice{i:03d}.png")
    return folder


def registration_part(run: Path, out: Path, n: int, seed: int = 0) -> dict:
    """COVER's predicted field against the true one on test-hemisphere slices it never saw."""
    from medrep.checkpoint import load_method
    from medrep.evaluate.registration import held_out_images, registration_eval

    images = held_out_images(run, path=str(hemisphere_slices(out, "test")), source="folder", n=10**6)
    # n slices evenly across the hemisphere, the middle one first so that the plot shows brain, not scalp
    pick = np.linspace(0, len(images) - 1, min(n, len(images))).round().astype(int)
    images = images[np.roll(pick, -(len(pick) // 2))]
    plot = ROOT / "benchmarks" / "results" / "cover_dense_registration.png"
    result = registration_eval(load_method(run).eval(), images, pairs_per_image=2, seed=seed, plot=plot)
    result["plot"] = str(plot.relative_to(ROOT))
    print(f"registration EPE {result['epe_mean']:.3f} px (no motion: {result['zero_flow_epe_mean']:.3f})", flush=True)
    return result


def pretrain_recipe(method: str, folder: Path, steps: int, out: Path) -> dict:
    """The same U-Net, slices, batch and optimiser for both methods; each method's own views."""
    cover = read_yaml((CONFIGS / "cover_2d_medpix.yaml").read_text())
    recipe = {**cover, "model": {"name": "unet", "spatial_dims": 2, "in_channels": 1, "channels": CHANNELS},
              "data": {"source": "folder", "path": str(folder), "size": None, "intensity": "minmax", "batch_size": 8, "cache": True}}
    if method == "simclr":
        simclr = read_yaml((CONFIGS / "simclr_pneumoniamnist.yaml").read_text())
        recipe |= {"method": {**simclr["method"], "proj_hidden_dim": 512}, "augment": simclr["augment"]}
    recipe["trainer"] = {**recipe["trainer"], "max_steps": steps, "seed": 0, "output_dir": str(out / method),
                         "checkpoint_every_n_steps": 100000, "progress_bar": False}
    recipe["optim"] = {**recipe["optim"], "warmup_steps": min(20, steps // 10)}
    return load_recipe(recipe)


def dice_part(args, out: Path) -> dict:
    from medrep.data.sources.colin27_lobes import colin27_lobes
    from medrep.evaluate.segment import segment_eval

    folder = hemisphere_slices(out, "train")
    task = colin27_lobes(spatial_dims=2)
    encoders = {}
    # scratch borrows the COVER run's encoder files for its architecture only (random_init=True)
    needed = {"cover"} | ({"simclr"} if "simclr" in args.encoders else set())
    for method in sorted(needed):
        run = out / method
        if not (args.reuse and (run / "encoder" / "encoder.json").is_file()):
            start = time.perf_counter()
            pretrain(pretrain_recipe(method, folder, args.pretrain_steps, out))
            print(f"pretrained {method}: {(time.perf_counter() - start) / 60:.1f} min", flush=True)
        encoders[method] = run
    rows, full = [], {}
    for name, path, random_init in (("scratch", encoders["cover"], True), ("simclr", encoders.get("simclr"), False),
                                    ("cover", encoders["cover"], False)):
        if name not in args.encoders:
            continue
        record = out / f"finetune_{name}.json"
        if args.reuse and record.is_file():
            result = json.loads(record.read_text())
        else:
            result = segment_eval(path, task.train, task.test, task.num_classes, fractions=args.fractions, seeds=args.seeds,
                                  steps=args.steps, batch_size=args.batch_size, lr=args.lr, random_init=random_init,
                                  progress=False, class_names=task.class_names)
            write_json(record, result)
        full[name] = result
        for key, r in result["results"].items():
            rows.append({"encoder": name, "fraction": float(key), "n_train": r["n_train"], "mean Dice": r["mean_dice"]})
        print(result["table"], flush=True)
    columns = ["encoder", "fraction", "n_train", "mean Dice"]
    print(format_table(rows, columns))
    registration = registration_part(encoders["cover"], out, n=args.registration_n) if "cover" in args.encoders else None
    return {"part": "dice", "rows": rows, "columns": columns, "registration": registration, "seeds": args.seeds,
            "fractions": args.fractions, "pretrain_steps": args.pretrain_steps, "finetune_steps": args.steps,
            "channels": CHANNELS, "task": task.info, "results": full}


def cost_one(size: int, steps: int) -> dict:
    """One process per size, so the peak memory of one size is not hidden by another's."""
    import resource

    from medrep.methods import build_method

    recipe = load_recipe("cover_3d_colin27")
    method = build_method(recipe)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    method.to(dev).train()
    opt = torch.optim.Adam(method.parameters(), lr=1e-4)
    x = torch.rand(recipe["data"]["crops"]["k"], 1, size, size, size, device=dev)
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        loss = method.training_step({"image": x})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step pays for allocation and kernel selection
            times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"size": size, "patches_per_step": int(x.shape[0]), "device": str(dev), "steps_timed": steps,
            "seconds_per_step": float(np.median(times)), "steps_per_second": float(1 / np.median(times)),
            "peak_memory_mib": float(peak), "memory_kind": "max_memory_allocated" if dev.type == "cuda" else "process peak RSS",
            "torch_threads": torch.get_num_threads(), "neighbourhood": recipe["method"]["neighbourhood"],
            "channels": recipe["model"]["channels"]}


def cost_part(args) -> dict:
    rows = []
    for size in args.sizes:
        proc = subprocess.run([sys.executable, __file__, "--cost-one", str(size), "--cost-steps", str(args.cost_steps),
                               "--threads", str(torch.get_num_threads())],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    columns = ["size", "device", "patches_per_step", "seconds_per_step", "steps_per_second", "peak_memory_mib", "memory_kind"]
    print(format_table(rows, columns))
    return {"part": "cost", "rows": rows, "columns": columns}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["dice", "cost"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=200, help="fine-tuning steps")
    parser.add_argument("--registration-n", type=int, default=64, help="test-hemisphere slices for COVER's end-point error")
    parser.add_argument("--encoders", nargs="+", choices=["scratch", "simclr", "cover"], default=["scratch", "simclr", "cover"],
                        help="a subset lets several processes share the work (with --reuse); the table needs all three")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96])
    parser.add_argument("--cost-steps", type=int, default=3)
    parser.add_argument("--cost-one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="runs/cover_dense")
    parser.add_argument("--reuse", action="store_true", help="reuse pretrained encoders and fine-tune records under --out")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--readme-only", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cost_one:
        print(json.dumps(cost_one(args.cost_one, args.cost_steps)))
        return
    if not args.readme_only:
        if not args.part:
            parser.error("--part is required")
        if args.part == "dice" and not os.environ.get("MEDREP_DATA"):
            raise SystemExit("set MEDREP_DATA to the data folder (volumes/)")
        result = dice_part(args, Path(args.out).resolve()) if args.part == "dice" else cost_part(args)
        if args.part == "dice" and len(args.encoders) < 3:
            print("a subset of encoders: records kept under --out; rerun with --reuse and all encoders for the table")
            return
        write_json(ROOT / "benchmarks" / "results" / f"cover_dense_{args.part}.json", result)
    update_readme()


def update_readme() -> None:
    parts = []
    for path in sorted((ROOT / "benchmarks" / "results").glob("cover_dense_*.json")):
        r = json.loads(path.read_text())
        head = (f"Colin27 lobes, 2D, seeds {r['seeds']} (fine-tuning), {r['pretrain_steps']} pretraining / {r['finetune_steps']} "
                f"fine-tuning steps, U-Net {r['channels']}" if r["part"] == "dice" else "COVER 3D training step (cover_3d_colin27)")
        parts.append(f"**{head}**, from `{path.relative_to(ROOT)}`:\n\n" + format_table(r["rows"], r["columns"], markdown=True))
        if r.get("registration"):
            g = r["registration"]
            parts.append(f"COVER's predicted displacement on {g['pairs']} pairs of test-hemisphere slices (never seen in "
                         f"pretraining): end-point error {g['epe_mean']:.2f} ± {g['epe_std']:.2f} px against "
                         f"{g['zero_flow_epe_mean']:.2f} px for predicting no motion (arrows: `{g['plot']}`).")
    write_section("cover-dense", "\n\n".join(parts))


if __name__ == "__main__":
    main()
