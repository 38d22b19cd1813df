"""``medrep evaluate regions`` and ``medrep evaluate distance``: crop-level evaluations on one volume, the atlas-region
probe and the ISImed distance diagnostic."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from medrep.cli import options

EPILOG_REGIONS = """examples:
  medrep evaluate regions --encoder runs/a                   # Colin27 + AAL from $MEDREP_DATA/volumes
  medrep evaluate regions --encoder runs/a --random-init --stride 8 --out regions_random.json
  medrep evaluate regions --encoder runs/a --fine --min-count 3
Crops are labelled by the atlas label at their centre (background centres are skipped and counted);
train and test crops come from alternating slabs along --slab-axis and never share a voxel."""

EPILOG_DISTANCE = """examples:
  medrep evaluate distance --encoder runs/a --out dist/colin.json          # plot: dist/colin.png
  medrep evaluate distance --encoder runs/a --volume head_ct.nii.gz --window -100 200 --out dist/ct.json"""


def _data_volume(name: str) -> str | None:
    """A file under $MEDREP_DATA/volumes, when the variable is set."""
    root = os.environ.get("MEDREP_DATA")
    return str(Path(root) / "volumes" / name) if root else None


def _crops() -> argparse.ArgumentParser:
    """How crops are cut and prepared, the same for both evaluations."""
    p = options.parent()
    p.add_argument("--crop", type=int, default=32,
                   help="crop size in voxels per axis (default 32); a 2D encoder gets crop x crop slice patches")
    p.add_argument("--slice-axis", type=int, default=2,
                   help="2D encoder on a 3D volume: patches of slices across this axis (default 2)")
    p.add_argument("--window", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="CT window in HU instead of the encoder's intensity preprocessing")
    return p


def _add(tasks, name: str, help: str, epilog: str, description: str, own: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return options.command(tasks, name, help, epilog=epilog, description=description,
                           parents=[options.encoder(), own, _crops(), options.batch_size(64, "crops per batch (default 64)"),
                                    options.device(), options.output()])


def add_regions(tasks) -> argparse.ArgumentParser:
    t = options.parent()
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
    return _add(tasks, "regions", "probe which atlas region a crop comes from (Colin27 + AAL by default)", EPILOG_REGIONS,
                "Linear and kNN probes of crop-level anatomical region on a labelled volume. The 116 AAL labels are grouped "
                "into 7 regions (frontal, parietal, temporal, occipital, limbic, subcortical, cerebellum) unless --fine.", t)


def add_distance(tasks) -> argparse.ArgumentParser:
    t = options.parent()
    t.add_argument("--volume", default=_data_volume("colin27_t1.nii.gz"),
                   help="volume or 2D image (default: $MEDREP_DATA/volumes/colin27_t1.nii.gz)")
    t.add_argument("--crops", type=int, default=256, help="number of random crops (default 256)")
    t.add_argument("--seed", type=int, default=0, help="crop sampling seed")
    t.add_argument("--metric", choices=["euclidean", "cosine"], default="euclidean", help="embedding distance (default euclidean)")
    t.add_argument("--min-intensity", type=float, default=0.05,
                   help="crop centres need a preprocessed intensity above this (default 0.05)")
    t.add_argument("--plot", help="plot PNG (default: --out with .png)")
    return _add(tasks, "distance", "ISImed diagnostic: embedding vs physical distance of random crops (Spearman, Pearson)",
                EPILOG_DISTANCE, "Rank correlation between pairwise embedding distances and crop-centre distances in mm "
                                 "(from the file's affine or spacing) over N seeded random crops; a hexbin plot is written "
                                 "beside the JSON.", t)


def _common(args, required: tuple[str, ...]) -> dict:
    """The crop options both evaluations pass on, after checking that the files without a default were given."""
    from medrep.errors import MedrepError

    for opt in required:
        if getattr(args, opt) is None:
            raise MedrepError("not given and $MEDREP_DATA is not set", "--" + opt.replace("_", "-"))
    intensity = {"intensity": "ct_window", "window": list(args.window)} if args.window else None
    return dict(crop=args.crop, slice_axis=args.slice_axis, random_init=args.random_init, intensity=intensity,
                batch_size=args.batch_size, device=args.device, out=args.out)


def run_regions(args) -> int:
    from medrep.evaluate.regions import region_probe

    common = _common(args, ("volume", "labels", "label_names"))
    result = region_probe(args.encoder, args.volume, args.labels, args.label_names, stride=args.stride,
                          slab_axis=args.slab_axis, slab_width=args.slab_width, gap=args.gap, fine=args.fine,
                          min_count=args.min_count, fractions=args.fractions, seeds=args.seeds, k=args.k, **common)
    print(result["count_table"])
    c = result["counts"]
    print(f"crops: train {c['train']}, test {c['test']}; background centres skipped {c['background_skipped']}; "
          f"dropped classes {result['dropped_classes'] or 'none'}; majority-class accuracy {result['chance_accuracy']:.4f}")
    return _finish(result, args.out)


def run_distance(args) -> int:
    from medrep.evaluate.distance import distance_eval

    common = _common(args, ("volume",))
    result = distance_eval(args.encoder, args.volume, crops=args.crops, seed=args.seed, metric=args.metric,
                           min_intensity=args.min_intensity, plot=args.plot, **common)
    if result.get("plot"):
        print(f"plot:    {result['plot']}")
    return _finish(result, args.out)


def _finish(result: dict, out: str | None) -> int:
    print(result["table"])
    if out:
        print(f"written: {out}")
    return 0
