"""``medrep evaluate slices`` (is UniMedI's slice selection right?) and ``medrep evaluate consistency``
(does a volume's embedding retrieve its own slices?), both on prepared Colin27 crops."""

from __future__ import annotations

import argparse
from pathlib import Path

from medrep.cli import options

EPILOG_SLICES = """examples:
  medrep prepare colin27-regions --out runs/colin27_regions
  medrep evaluate slices --run runs/unimedi_mixed --data runs/colin27_regions --out sel/unimedi.json
  medrep evaluate slices --run runs/unimedi_mixed --data runs/colin27_regions --every-checkpoint --figure colin27_train_x0_y0_z9
The text of these crops is generated from the AAL atlas labels they contain, not written by a radiologist."""

EPILOG_CONSISTENCY = """examples:
  medrep evaluate consistency --encoder runs/unimedi_mixed --data runs/colin27_regions --split test --stride 2"""


def _prepared() -> argparse.ArgumentParser:
    p = options.parent()
    p.add_argument("--data", required=True, help="a folder written by 'medrep prepare colin27-regions'")
    p.add_argument("--split", default="train", help="crops of this split (default train; 'all' for both)")
    p.add_argument("--limit", type=int, help="score only the first N crops")
    return p


def add_slices(tasks) -> argparse.ArgumentParser:
    t = options.parent()
    t.add_argument("--k", type=int, help="slices to select (default: the encoder's model.select_k)")
    t.add_argument("--min-voxels", type=int, default=20, help="voxels of a region that make a slice hold it (default 20)")
    t.add_argument("--every-checkpoint", action="store_true", help="also score each step checkpoint of the run, and step 0")
    t.add_argument("--figure", metavar="STUDY", help="draw this crop's slices with their scores (PNG beside --out)")
    return options.command(tasks, "slices", "UniMedI: do the teacher's selected slices hold the regions a crop's text names?",
                           epilog=EPILOG_SLICES,
                           description="For each prepared Colin27 crop and each region its text names: the fraction of the k "
                                       "slices the EMA teacher selects that hold the region (AAL), against k random slices "
                                       "(the expectation), the k central ones and the best any k can do.",
                           parents=[options.run("a UniMedI run folder (its teacher selects)"), _prepared(), t,
                                    options.batch_size(8, "crops per batch (default 8)"), options.output()])


def add_consistency(tasks) -> argparse.ArgumentParser:
    t = options.parent()
    t.add_argument("--stride", type=int, default=1, help="embed every N-th axial slice (default 1)")
    return options.command(tasks, "consistency", "2D-3D consistency: does a volume's embedding retrieve its own slices?",
                           epilog=EPILOG_CONSISTENCY,
                           description="Each prepared crop is embedded as a volume and each of its axial slices as a 2D "
                                       "image by the same encoder (vit2d3d); R@K, mean AUROC and mean rank of a volume's own "
                                       "slices among all.",
                           parents=[options.encoder(), _prepared(), t, options.batch_size(64, "images per batch (default 64)"),
                                    options.output()])


def _split(args) -> str | None:
    return None if args.split == "all" else args.split


def run_slices(args) -> int:
    from medrep.checkpoint import load_method
    from medrep.evaluate.slice_selection import RULES, selection_figure, selection_hits
    from medrep.methods import build_method
    from medrep.recipe import load_recipe
    from medrep.results import format_table, write_json

    run = Path(args.run)
    models = {"last": load_method(run)}
    if args.every_checkpoint:
        models = {"0": build_method(load_recipe(run / "recipe.yaml")).eval()}  # the initial teacher (the run's seed)
        for ckpt in sorted(run.glob("checkpoints/step*.ckpt"), key=lambda p: int(p.stem.removeprefix("step"))):
            models[ckpt.stem.removeprefix("step")] = load_method(run, checkpoint=ckpt)
        models["last"] = load_method(run)
    result, rows = {"run": str(run), "data": str(args.data), "steps": {}}, []
    for step, model in models.items():
        hits = selection_hits(model, args.data, _split(args), args.k, args.min_voxels, args.batch_size, args.limit)
        result["steps"][step] = hits
        for subset in ("all", "partial"):
            rows.append({"step": step, "pairs": subset, "n": hits["pairs" if subset == "all" else "partial_pairs"],
                         **{rule: f"{hits[subset][rule]:.3f}" if hits[subset][rule] is not None else "-" for rule in RULES}})
    print(format_table(rows, list(rows[0])))
    if args.figure:
        png = Path(args.out).with_suffix(".png") if args.out else Path(f"selection_{args.figure}.png")
        print(f"figure:  {selection_figure(models['last'], args.data, args.figure, png, args.k, args.min_voxels)}")
    if args.out:
        write_json(args.out, result)
        print(f"written: {args.out}")
    return 0


def run_consistency(args) -> int:
    import torch

    from medrep.checkpoint import load_encoder
    from medrep.evaluate.consistency import slice_consistency
    from medrep.evaluate.slice_selection import prepared_crops
    from medrep.results import format_table, write_json

    crops, _, _ = prepared_crops(args.data, _split(args))
    count = min(len(crops), args.limit or len(crops))
    volumes = torch.cat([crops[i]["images"] for i in range(count)])
    encoder = load_encoder(args.encoder, weights=not args.random_init)
    result = slice_consistency(encoder, volumes, stride=args.stride, batch_size=args.batch_size)
    print(format_table([{k: f"{v:.3f}" if isinstance(v, float) else v for k, v in result.items()}], list(result)))
    if args.out:
        write_json(args.out, result | {"encoder": str(args.encoder), "random_init": args.random_init})
        print(f"written: {args.out}")
    return 0
