"""``medrep prepare DATASET``: turn a public data set's own layout into a medrep manifest (MedPix 2.0),
or cut one into image-text pairs (Colin27 crops described from their atlas labels)."""

from __future__ import annotations

import argparse
from pathlib import Path

from medrep.cli import options

EPILOG_MEDPIX = """examples:
  medrep prepare medpix2 --target region --out medpix_region.csv
  medrep evaluate linear --encoder runs/a --data medpix_region.csv --test-split dev
The encoder must resize images (its recipe's data.size): MedPix images differ in size."""

EPILOG_COLIN = """examples:
  medrep prepare colin27-regions --out colin27_regions                 # $MEDREP_DATA/volumes, 64x64x32 crops at 2 mm
  medrep prepare colin27-regions --out small --crop 32 32 32 --stride 4 --threshold 0.1
Read with data.source: colin27-regions, data.path: DIR (or data.source: image_text, data.path: DIR/pairs.csv),
data.spatial_dims: 3 and data.intensity: none (crops are already scaled over the whole volume)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = options.command(subparsers, "prepare", "turn a public data set's own layout into a medrep manifest",
                        description="Write a manifest that 'medrep evaluate linear|knn --data' (medpix2) or an "
                                    "image-text recipe (colin27-regions) reads.")
    kinds = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    own = options.parent()
    own.add_argument("--root", help="MedPix 2.0 folder (default: $MEDREP_DATA/medpix2)")
    own.add_argument("--target", required=True, choices=["modality", "plane", "region", "location"],
                     help="label: modality (CT/MR), plane (Description.Plane), region (Location Category), location (Location)")
    own.add_argument("--min-count", type=int, default=5, help="drop classes with fewer training images (default 5)")
    own.add_argument("--relative", action="store_true", help="write image paths relative to the manifest's folder")
    options.command(kinds, "medpix2", "MedPix 2.0: CT/MR images labelled by modality, plane or body region", epilog=EPILOG_MEDPIX,
                    description="Read Descriptions.json and the case-level splits/data_<split>.jsonl of MedPix 2.0 and "
                                "write a manifest CSV (path,label,split,case; absolute paths unless --relative) plus a "
                                "summary JSON beside it. A case in two splits is refused (a leak). Classes with fewer "
                                "than --min-count training images are dropped from every split and reported.",
                    parents=[own, options.output("manifest .csv to write (the summary goes to the same name with .json)", required=True)])
    colin = options.parent()
    colin.add_argument("--out", required=True, help="folder to write (images/, labels/, pairs.csv, summary.json); must not hold a set")
    colin.add_argument("--volumes", help="folder of colin27_t1.nii.gz, colin27_aal.nii.gz, colin27_aal_labels.txt "
                                         "(default: $MEDREP_DATA/volumes)")
    colin.add_argument("--crop", type=int, nargs=3, default=[64, 64, 32], metavar=("X", "Y", "Z"),
                       help="crop size in voxels of the resampled grid; Z is the axial (slice) axis (default 64 64 32)")
    colin.add_argument("--spacing", type=float, nargs=3, default=[2.0, 2.0, 2.0], metavar=("X", "Y", "Z"),
                       help="voxel size in mm to resample to (default 2 2 2)")
    colin.add_argument("--stride", type=int, nargs="+", default=[3], help="grid step between crop centres in voxels, "
                       "one or 3 values (default 3: a few hundred crops)")
    colin.add_argument("--threshold", type=float, default=0.05, help="name a region when it fills more than this fraction "
                       "of the crop (default 0.05)")
    colin.add_argument("--slab-axis", type=int, default=2, choices=[0, 1, 2], help="axis of the alternating train/test "
                       "slabs (default 2, axial)")
    colin.add_argument("--seed", type=int, default=0, help="draws the wording template of each text (default 0)")
    options.command(kinds, "colin27-regions", "Colin27 T1 crops paired with text GENERATED from their AAL atlas regions",
                    epilog=EPILOG_COLIN,
                    description="Cut 3D crops from the Colin27 T1 (resampled to --spacing, RAS, scaled over the whole volume) "
                                "with the matching AAL label crops, and write an image-text manifest whose text is generated "
                                "from the atlas labels (the AAL regions above --threshold, largest first, in one of a few "
                                "wordings drawn with --seed), not written by a radiologist. Train and test crops come from "
                                "alternating slabs and share no voxel. Skipped crops are counted in summary.json.",
                    parents=[colin])
    return p


def run(args: argparse.Namespace) -> int:
    if args.dataset == "colin27-regions":
        return run_colin27_regions(args)
    from medrep.data.sources import source_path
    from medrep.data.sources.medpix2 import report_table, write_medpix_manifest
    from medrep.results import write_json

    root = source_path("medpix2", {"path": args.root}, "--root")  # --root, else $MEDREP_DATA/medpix2
    report = write_medpix_manifest(root, args.target, args.out, min_count=args.min_count, relative=args.relative)
    summary = write_json(Path(args.out).with_suffix(".json"), report)
    print(report_table(report))
    print(f"written: {args.out} (summary: {summary})")
    return 0


def run_colin27_regions(args: argparse.Namespace) -> int:
    from medrep.data.sources.colin27_regions import prepare_colin27_regions, summary_table

    summary = prepare_colin27_regions(args.out, args.volumes, crop=args.crop, spacing=args.spacing,
                                      stride=args.stride[0] if len(args.stride) == 1 else args.stride,
                                      threshold=args.threshold, seed=args.seed, slab_axis=args.slab_axis, progress=True)
    print(summary_table(summary))
    print(f"written: {Path(args.out) / 'pairs.csv'} (summary: {Path(args.out) / 'summary.json'}; {summary['seconds']} s)")
    return 0
