"""The ``medrep`` command: parse arguments, load a recipe, call the library. Nothing else lives here."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .cli_dense import add_registration_task, add_segment_task, cmd_registration, cmd_segment
from .cli_vlp import add_retrieval_task, add_zeroshot_task, cmd_retrieval, cmd_zeroshot

EPILOG_PRETRAIN = """examples:
  medrep pretrain --recipe configs/simclr_pneumoniamnist.yaml
  medrep pretrain --recipe simclr_pneumoniamnist trainer.max_steps=2000 optim.lr=3e-4 data.batch_size=128
  medrep pretrain --recipe simclr_pneumoniamnist trainer.output_dir=runs/a --resume
  torchrun --nproc_per_node 4 -m medrep pretrain --recipe R trainer.devices=4 trainer.strategy=ddp
Any recipe value is set with section.key=value (the value is read as YAML)."""


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="data path: a MedMNIST .npz, an image folder or a manifest (default: the encoder's "
                                  "recipe, else the packaged PneumoniaMNIST; $MEDREP_DATA is searched first)")
    p.add_argument("--source", help="kind of --data: an image source (medmnist, folder, manifest, or another one registered "
                                     "in medrep.data.sources; default: guessed from --data, else medmnist)")
    p.add_argument("--train-split", default="train", help="split the probe is fitted on (default: train)")
    p.add_argument("--test-split", default="test", help="split the probe is scored on (default: test)")
    p.add_argument("--batch-size", type=int, default=256, help="batch size for feature extraction")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable files, and count and list them")
    p.add_argument("--size", type=int, nargs="+", help="resize images to this size (one value per axis, or one for all); "
                                                       "default: the encoder's training size, if it had one")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medrep",
        description="Pretrain encoders of medical images (2D and 3D) and measure what they learned.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'medrep demo' for a first end-to-end run, 'medrep COMMAND --help' for details.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("pretrain", help="pretrain an encoder from a recipe", epilog=EPILOG_PRETRAIN,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Pretrain with a registered method. Writes checkpoints, CSV and TensorBoard logs, "
                                   "the resolved recipe and the exported encoder (encoder/encoder.safetensors + .json) "
                                   "into trainer.output_dir.")
    p.add_argument("--recipe", required=True, help="recipe YAML path, or the name of a bundled recipe (see 'medrep list')")
    p.add_argument("--resume", action="store_true", help="continue from trainer.output_dir/checkpoints/last.ckpt")
    p.add_argument("--data", help="shortcut for data.path=...")
    p.add_argument("--dry-run", action="store_true", help="print the resolved recipe and stop")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="recipe overrides")

    p = sub.add_parser("evaluate", help="evaluate an encoder: linear, knn, regions, distance, segment, registration, retrieval, zeroshot",
                       description="Extract frozen-encoder features on two splits and score a probe on the test split.")
    tasks = p.add_subparsers(dest="task", metavar="TASK", required=True)
    t = tasks.add_parser("linear", help="logistic-regression probe at several label fractions (AUROC, accuracy)")
    t.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0], help="label fractions of the training split")
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="subsampling seeds (mean and std are reported)")
    t = tasks.add_parser("knn", help="weighted k-nearest-neighbour probe on cosine similarity (AUROC, accuracy)")
    t.add_argument("--k", type=int, default=20, help="neighbours (default 20)")
    t.add_argument("--temperature", type=float, default=0.07, help="vote weight temperature (default 0.07)")
    for t in tasks.choices.values():
        t.add_argument("--encoder", required=True, help="exported encoder: a run folder, its encoder/ folder, or encoder.json")
        t.add_argument("--random-init", action="store_true", help="use the encoder's architecture with random weights (baseline)")
        t.add_argument("--out", help="write the result JSON here")
        _add_data_args(t)
    _add_spatial_tasks(tasks)
    add_segment_task(tasks)
    add_registration_task(tasks)
    add_retrieval_task(tasks)
    add_zeroshot_task(tasks)

    p = sub.add_parser("embed", help="write frozen-encoder features of a split to a .npz file",
                       description="Features (and labels, when known) of every sample of one split.")
    p.add_argument("--encoder", required=True, help="exported encoder (run folder, encoder/ folder or encoder.json)")
    p.add_argument("--split", default="test", help="split to embed (default: test)")
    p.add_argument("--out", required=True, help="output .npz (arrays: features, labels)")
    _add_data_args(p)

    p = sub.add_parser("demo", help="pretrain SimCLR on PneumoniaMNIST for a few minutes, probe it against random init",
                       description="End to end on CPU: SimCLR pretraining on PneumoniaMNIST (packaged), then linear "
                                   "(1/10/100%% labels) and kNN probes of the pretrained and of a random-init encoder "
                                   "of the same architecture, printed side by side.")
    p.add_argument("--data", help="a PneumoniaMNIST .npz (default: $MEDREP_DATA/medmnist/pneumoniamnist.npz or the packaged copy)")
    p.add_argument("--steps", type=int, default=None, help="pretraining steps (default: the demo recipe's)")
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="overrides of the demo recipe")

    sub.add_parser("list", help="list methods, backbones and bundled recipes")

    p = sub.add_parser("prepare", help="turn a public data set's own layout into a medrep manifest",
                       description="Write a manifest (path,label,split) that 'medrep evaluate linear|knn --data' reads.")
    kinds = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    t = kinds.add_parser("medpix2", help="MedPix 2.0: CT/MR images labelled by modality, plane or body region",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_MEDPIX,
                         description="Read Descriptions.json and the case-level splits/data_<split>.jsonl of MedPix 2.0 and "
                                     "write a manifest CSV (path,label,split,case; absolute paths unless --relative) plus a "
                                     "summary JSON beside it. A case in two splits is refused (a leak). Classes with fewer "
                                     "than --min-count training images are dropped from every split and reported.")
    t.add_argument("--root", help="MedPix 2.0 folder (default: $MEDREP_DATA/medpix2)")
    t.add_argument("--target", required=True, choices=["modality", "plane", "region", "location"],
                   help="label: modality (CT/MR), plane (Description.Plane), region (Location Category), location (Location)")
    t.add_argument("--out", required=True, help="manifest .csv to write (the summary goes to the same name with .json)")
    t.add_argument("--min-count", type=int, default=5, help="drop classes with fewer training images (default 5)")
    t.add_argument("--relative", action="store_true", help="write image paths relative to the manifest's folder")
    return parser


EPILOG_REGIONS = """examples:
  medrep evaluate regions --encoder runs/a                   # Colin27 + AAL from $MEDREP_DATA/volumes
  medrep evaluate regions --encoder runs/a --random-init --stride 8 --out regions_random.json
  medrep evaluate regions --encoder runs/a --fine --min-count 3
Crops are labelled by the atlas label at their centre (background centres are skipped and counted);
train and test crops come from alternating slabs along --slab-axis and never share a voxel."""

EPILOG_DISTANCE = """examples:
  medrep evaluate distance --encoder runs/a --out dist/colin.json          # plot: dist/colin.png
  medrep evaluate distance --encoder runs/a --volume head_ct.nii.gz --window -100 200 --out dist/ct.json"""

EPILOG_MEDPIX = """examples:
  medrep prepare medpix2 --target region --out medpix_region.csv
  medrep evaluate linear --encoder runs/a --data medpix_region.csv --test-split dev
The encoder must resize images (its recipe's data.size): MedPix images differ in size."""





def _data_volume(name: str) -> str | None:
    """A file under $MEDREP_DATA/volumes, when the variable is set."""
    import os

    root = os.environ.get("MEDREP_DATA")
    return str(Path(root) / "volumes" / name) if root else None


def _add_spatial_tasks(tasks) -> None:
    """The crop-level tasks on one volume: regions (atlas probe) and distance (ISImed diagnostic)."""
    t = tasks.add_parser("regions", help="probe which atlas region a crop comes from (Colin27 + AAL by default)",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_REGIONS,
                         description="Linear and kNN probes of crop-level anatomical region on a labelled volume. The 116 "
                                     "AAL labels are grouped into 7 regions (frontal, parietal, temporal, occipital, limbic, "
                                     "subcortical, cerebellum) unless --fine.")
    t.add_argument("--volume", default=_data_volume("colin27_t1.nii.gz"),
                   help="image volume (default: $MEDREP_DATA/volumes/colin27_t1.nii.gz)")
    t.add_argument("--labels", default=_data_volume("colin27_aal.nii.gz"),
                   help="label map on the volume's grid (default: $MEDREP_DATA/volumes/colin27_aal.nii.gz)")
    t.add_argument("--label-names", default=_data_volume("colin27_aal_labels.txt"),
                   help="'<id> <name>' per line (default: $MEDREP_DATA/volumes/colin27_aal_labels.txt)")
    t.add_argument("--stride", type=int, default=16, help="grid step between crop centres in voxels (default 16)")
    t.add_argument("--slab-axis", type=int, default=2, help="axis along which train/test slabs alternate (default 2)")
    t.add_argument("--slab-width", type=int, help="slab width in voxels (default: crop + gap, one layer of crops per slab)")
    t.add_argument("--gap", type=int, help="least voxels between train and test crops along the slab axis (default 0 for 3D "
                                          "crops: no shared voxel; crop - 1 for 2D slice patches)")
    t.add_argument("--fine", action="store_true", help="raw atlas labels instead of the 7 regions")
    t.add_argument("--min-count", type=int, default=1, help="drop classes with fewer training crops (default 1)")
    t.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0], help="label fractions of the linear probe")
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="subsampling seeds")
    t.add_argument("--k", type=int, default=20, help="kNN neighbours (default 20)")
    t = tasks.add_parser("distance", help="ISImed diagnostic: embedding vs physical distance of random crops (Spearman, Pearson)",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_DISTANCE,
                         description="Rank correlation between pairwise embedding distances and crop-centre distances in mm "
                                     "(from the file's affine or spacing) over N seeded random crops; a hexbin plot is written "
                                     "beside the JSON.")
    t.add_argument("--volume", default=_data_volume("colin27_t1.nii.gz"),
                   help="volume or 2D image (default: $MEDREP_DATA/volumes/colin27_t1.nii.gz)")
    t.add_argument("--crops", type=int, default=256, help="number of random crops (default 256)")
    t.add_argument("--seed", type=int, default=0, help="crop sampling seed")
    t.add_argument("--metric", choices=["euclidean", "cosine"], default="euclidean", help="embedding distance (default euclidean)")
    t.add_argument("--min-intensity", type=float, default=0.05,
                   help="crop centres need a preprocessed intensity above this (default 0.05)")
    t.add_argument("--plot", help="plot PNG (default: --out with .png)")
    for name in ("regions", "distance"):
        t = tasks.choices[name]
        t.add_argument("--encoder", required=True, help="exported encoder: a run folder, its encoder/ folder, or encoder.json")
        t.add_argument("--random-init", action="store_true", help="use the encoder's architecture with random weights (baseline)")
        t.add_argument("--crop", type=int, default=32,
                       help="crop size in voxels per axis (default 32); a 2D encoder gets crop x crop slice patches")
        t.add_argument("--slice-axis", type=int, default=2,
                       help="2D encoder on a 3D volume: patches of slices across this axis (default 2)")
        t.add_argument("--window", type=float, nargs=2, metavar=("LOW", "HIGH"),
                       help="CT window in HU instead of the encoder's intensity preprocessing")
        t.add_argument("--out", help="write the result JSON here")
        t.add_argument("--batch-size", type=int, default=64, help="crops per batch (default 64)")
        t.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")


def _cmd_pretrain(args) -> int:
    import yaml

    from .engine import pretrain
    from .recipe import load_recipe

    overrides = list(args.overrides) + ([f"data.path={args.data}"] if args.data else [])
    recipe = load_recipe(args.recipe, overrides)
    if args.dry_run:
        print(yaml.safe_dump(recipe, sort_keys=False), end="")
        return 0
    run_dir = pretrain(recipe, resume=args.resume)
    print(f"run folder: {run_dir}\nencoder:    {run_dir / 'encoder'}")
    return 0


def _cmd_evaluate(args) -> int:
    if args.task in ("regions", "distance"):
        return _cmd_evaluate_spatial(args)
    if args.task == "segment":
        return cmd_segment(args)
    if args.task == "registration":
        return cmd_registration(args)
    if args.task in ("retrieval", "zeroshot"):
        return cmd_retrieval(args) if args.task == "retrieval" else cmd_zeroshot(args)
    from .evaluate.frozen import data_config, evaluate_frozen

    data = data_config(args.encoder, args.data, args.source, args.skip_bad, args.size)
    opts = dict(fractions=args.fractions, seeds=args.seeds) if args.task == "linear" else dict(k=args.k, temperature=args.temperature)
    result = evaluate_frozen(args.task, args.encoder, data, random_init=args.random_init, train_split=args.train_split,
                             test_split=args.test_split, batch_size=args.batch_size, device=args.device, out=args.out, **opts)
    print(result["table"])
    if args.out:
        print(f"written: {args.out}")
    return 0


def _cmd_evaluate_spatial(args) -> int:
    from .errors import MedrepError

    for opt in ("volume", "labels", "label_names") if args.task == "regions" else ("volume",):
        if getattr(args, opt) is None:
            raise MedrepError("not given and $MEDREP_DATA is not set", "--" + opt.replace("_", "-"))
    intensity = {"intensity": "ct_window", "window": list(args.window)} if args.window else None
    common = dict(crop=args.crop, slice_axis=args.slice_axis, random_init=args.random_init, intensity=intensity,
                  batch_size=args.batch_size, device=args.device, out=args.out)
    if args.task == "regions":
        from .evaluate.regions import region_probe

        result = region_probe(args.encoder, args.volume, args.labels, args.label_names, stride=args.stride,
                              slab_axis=args.slab_axis, slab_width=args.slab_width, gap=args.gap, fine=args.fine,
                              min_count=args.min_count, fractions=args.fractions, seeds=args.seeds, k=args.k, **common)
        print(result["count_table"])
        c = result["counts"]
        print(f"crops: train {c['train']}, test {c['test']}; background centres skipped {c['background_skipped']}; "
              f"dropped classes {result['dropped_classes'] or 'none'}; majority-class accuracy {result['chance_accuracy']:.4f}")
    else:
        from .evaluate.distance import distance_eval

        result = distance_eval(args.encoder, args.volume, crops=args.crops, seed=args.seed, metric=args.metric,
                               min_intensity=args.min_intensity, plot=args.plot, **common)
        if result.get("plot"):
            print(f"plot:    {result['plot']}")
    print(result["table"])
    if args.out:
        print(f"written: {args.out}")
    return 0



def _cmd_prepare(args) -> int:
    import os

    from .data.sources.medpix2 import report_table, write_medpix_manifest
    from .errors import MedrepError
    from .results import write_json

    root = args.root or (str(Path(os.environ["MEDREP_DATA"]) / "medpix2") if os.environ.get("MEDREP_DATA") else None)
    if root is None:
        raise MedrepError("not given and $MEDREP_DATA is not set", "--root")
    report = write_medpix_manifest(root, args.target, args.out, min_count=args.min_count, relative=args.relative)
    summary = write_json(Path(args.out).with_suffix(".json"), report)
    print(report_table(report))
    print(f"written: {args.out} (summary: {summary})")
    return 0


def _cmd_embed(args) -> int:
    from .evaluate.frozen import data_config, embed

    data = data_config(args.encoder, args.data, args.source, args.skip_bad, args.size)
    n = embed(args.encoder, data, args.split, args.out, batch_size=args.batch_size, device=args.device)
    print(f"{n} feature vectors written to {args.out}")
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(out=Path(args.out), data=args.data, steps=args.steps, seed=args.seed, overrides=args.overrides)
    return 0


def _cmd_list(args) -> int:
    from .methods import available_methods
    from .models import BACKBONES
    from .recipe import bundled_recipes

    print("methods:   " + ", ".join(available_methods()))
    print("backbones: " + ", ".join(sorted(BACKBONES)))
    print("recipes:   " + ", ".join(bundled_recipes()))
    return 0


COMMANDS = {"pretrain": _cmd_pretrain, "evaluate": _cmd_evaluate, "embed": _cmd_embed, "demo": _cmd_demo, "list": _cmd_list,
            "prepare": _cmd_prepare}


def main(argv: list[str] | None = None) -> int:
    from .errors import MedrepError

    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("medrep")  # ours only: Lightning keeps its own handler, so no line twice
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return COMMANDS[args.command](args)
    except MedrepError as exc:
        print(f"medrep: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
