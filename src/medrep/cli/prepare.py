"""``medrep prepare DATASET``: turn a public data set's own layout into a medrep manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

from medrep.cli import options

EPILOG_MEDPIX = """examples:
  medrep prepare medpix2 --target region --out medpix_region.csv
  medrep evaluate linear --encoder runs/a --data medpix_region.csv --test-split dev
The encoder must resize images (its recipe's data.size): MedPix images differ in size."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = options.command(subparsers, "prepare", "turn a public data set's own layout into a medrep manifest",
                        description="Write a manifest (path,label,split) that 'medrep evaluate linear|knn --data' reads.")
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
    return p


def run(args: argparse.Namespace) -> int:
    from medrep.data.sources import source_path
    from medrep.data.sources.medpix2 import report_table, write_medpix_manifest
    from medrep.results import write_json

    root = source_path("medpix2", {"path": args.root}, "--root")  # --root, else $MEDREP_DATA/medpix2
    report = write_medpix_manifest(root, args.target, args.out, min_count=args.min_count, relative=args.relative)
    summary = write_json(Path(args.out).with_suffix(".json"), report)
    print(report_table(report))
    print(f"written: {args.out} (summary: {summary})")
    return 0
