"""``medrep evaluate segment`` and ``medrep evaluate registration``: the dense evaluations (any exported encoder, COVER)."""

from __future__ import annotations

import argparse

from medrep.cli import options
from medrep.errors import MedrepError

EPILOG_SEGMENT = """examples:
  medrep evaluate segment --encoder runs/unet --data colin27-lobes --out seg/colin27.json
  medrep evaluate segment --encoder runs/unet --data colin27-lobes --random-init --steps 100 --out seg/scratch.json
  medrep evaluate segment --encoder runs/unet --data Task04_Hippocampus --num-classes 3 --fractions 0.1 0.5 1.0
  medrep evaluate segment --encoder runs/unet --data my_2d_set --num-classes 2 --frozen-encoder --patch 128
  medrep evaluate segment --encoder runs/convirt_medpix --data colin27-lobes --fractions 0.1 1.0   # ResNet-18 image tower
--encoder is any exported encoder: a U-Net keeps its own decoder; a ResNet or DenseNet-121 gets a U-Net
decoder (MONAI UpCat blocks) on its stage outputs, a ViT a UNETR decoder on its hidden states; both are
new and trained with the head. A ResNet's patch is a multiple of its coarsest reduction (32 with the
ImageNet stem); a ViT's patch is its img_size (the default; another --patch is an error).
--data is colin27-lobes (Colin27 T1, AAL grouped into 7 lobe regions + background; trains on the left
hemisphere, tests on the right; 2D sagittal slices or 3D halves, following the encoder) or a folder:
imagesTr/ + labelsTr/ (MSD, NIfTI), images/ + masks/ (2D, PNG or NIfTI), or train/ and test/ holding one
of them (without them a fixed 20% of the cases is the test set). A label fraction keeps that share of
the training items (2D slices or images; 3D volumes when there are 10 or more), else of a seeded pool of
patch positions (3D with fewer volumes). Dice per class skips classes absent from both prediction and
truth; the mean is over foreground classes."""

EPILOG_REGISTRATION = """examples:
  medrep evaluate registration --run runs/cover_2d_medpix --split dev --n 64 --plot reg/fields.png --out reg/medpix.json
  medrep evaluate registration --run runs/cover_3d_colin27 --data runs/headct --n 8
Pairs are held-out images (or crops) prepared as in the run's recipe, warped by random affine fields drawn as in
training (fixed --seed). End-point error: mean over valid positions of |predicted - true| (voxels); beside it the
error of predicting no motion."""


def add_segment(tasks) -> argparse.ArgumentParser:
    t = options.parent()
    t.add_argument("--data", required=True, help="colin27-lobes, or a folder of image/mask pairs (see below)")
    t.add_argument("--volumes", help="colin27-lobes: folder with the Colin27 files (default: $MEDREP_DATA/volumes)")
    t.add_argument("--spatial-dims", type=int, choices=[2, 3],
                   help="2D slices or 3D volumes; must match the encoder (default: the encoder's)")
    t.add_argument("--num-classes", type=int, help="folders: classes including background (mask values 0..N-1)")
    t.add_argument("--slice-axis", type=int, default=2, help="folders of 3D volumes with a 2D encoder: slice across this axis")
    t.add_argument("--test-fraction", type=float, default=0.2, help="folders without train/ and test/: share of test cases")
    t.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0], help="label fractions (default 0.1 1.0)")
    t.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (mean and std over them are reported)")
    t.add_argument("--steps", type=int, default=200, help="optimiser steps per run (default 200)")
    t.add_argument("--patch", type=int, help="patch size, a multiple of 16 for a U-Net, of the coarsest reduction for a "
                                             "ResNet/DenseNet (default: 256 in 2D, 64 in 3D, capped at the largest image so "
                                             "small slices are taken whole); a ViT's is its img_size")
    t.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    t.add_argument("--frozen-encoder", action="store_true", help="freeze the encoder; train decoder and head only")
    encoder = options.encoder("exported encoder (unet, resnet*, densenet121, vit): a run folder, its encoder/ folder, or "
                              "encoder.json (with --random-init: only its architecture)",
                              random_init="the encoder's architecture with fresh weights (scratch baseline)")
    return options.command(tasks, "segment", "fine-tune an encoder + decoder + segmentation head on few labels, score Dice",
                           epilog=EPILOG_SEGMENT,
                           description="Dense evaluation: the exported encoder, a decoder to full resolution (the U-Net's "
                                       "own, else a new one) and a 1x1 convolution on its full-resolution features, "
                                       "fine-tuned (Dice + CE, AdamW, random patches) at each label fraction "
                                       "and seed, then scored by sliding-window inference on the test items (Dice per class).",
                           parents=[encoder, t, options.batch_size(4, "patches per step (default 4)"), options.device(),
                                    options.output()])


def run_segment(args) -> int:
    from medrep.checkpoint import read_encoder_info
    from medrep.evaluate.segment import segment_eval
    from medrep.models import BACKBONES
    from medrep.results import write_json

    info, _ = read_encoder_info(args.encoder)
    name = info["backbone"].get("name")
    if name not in BACKBONES:  # before loading: the error names the option and the encoder, not a recipe key
        raise MedrepError(f"{args.encoder} is an encoder of backbone {name!r}, which is not registered; segmentation takes "
                          f"an exported encoder of one of: {', '.join(sorted(BACKBONES))}", "--encoder")
    dims = int(info["backbone"].get("spatial_dims", 2))
    if args.spatial_dims is not None and args.spatial_dims != dims:
        raise MedrepError(f"the encoder is {dims}D, --spatial-dims asks for {args.spatial_dims}D", "--spatial-dims")
    from medrep.data.sources import get_source, source_names

    if args.data in source_names("segmentation"):  # a named task (colin27-lobes); otherwise a folder of image/mask pairs
        task = get_source(args.data).task({"path": args.volumes, "spatial_dims": dims})
    else:
        from medrep.data.datasets.segmentation import load_segmentation_folder

        if args.num_classes is None:
            raise MedrepError("a folder of masks needs the number of classes, background included", "--num-classes")
        task = load_segmentation_folder(args.data, args.num_classes, dims, args.slice_axis, args.test_fraction)
    result = segment_eval(args.encoder, task.train, task.test, task.num_classes, fractions=args.fractions, seeds=args.seeds,
                          steps=args.steps, patch=args.patch, batch_size=args.batch_size, lr=args.lr,
                          frozen_encoder=args.frozen_encoder, random_init=args.random_init, device=args.device,
                          class_names=task.class_names)
    result["data"] = task.info
    print(f"data: {args.data}: {len(task.train)} train / {len(task.test)} test items ({task.spatial_dims}D), "
          f"{task.num_classes} classes")
    print(result["class_table"])
    print(result["table"])
    if args.out:
        write_json(args.out, result)
        print(f"written: {args.out}")
    return 0


def add_registration(tasks) -> argparse.ArgumentParser:
    t = options.parent()
    t.add_argument("--data", help="held-out images (default: the run's own data, see --split)")
    t.add_argument("--source", help="kind of --data: an image source of medrep.data.sources, e.g. folder (default: guessed)")
    t.add_argument("--split", help="split to draw images from (e.g. test, dev; default: the recipe's)")
    t.add_argument("--n", type=int, default=32, help="images (or crops) to warp (default 32)")
    t.add_argument("--pairs", type=int, default=1, help="random fields per image (default 1)")
    t.add_argument("--seed", type=int, default=0, help="seed of the random fields (default 0)")
    t.add_argument("--plot", help="PNG with true and predicted arrows on one pair")
    return options.command(tasks, "registration", "COVER diagnostic: end-point error of the predicted displacement field",
                           epilog=EPILOG_REGISTRATION,
                           parents=[options.run("a COVER run folder (recipe.yaml + checkpoints/last.ckpt)"), t,
                                    options.batch_size(8, "images per batch (default 8)"), options.output()])


def run_registration(args) -> int:
    from medrep.checkpoint import load_method
    from medrep.evaluate.registration import held_out_images, registration_eval
    from medrep.results import format_table, write_json

    if args.n < 1 or args.pairs < 1:
        raise MedrepError("must be at least 1", "--n" if args.n < 1 else "--pairs")
    method = load_method(args.run)
    images = held_out_images(args.run, args.data, args.split, args.n, args.source)
    result = registration_eval(method, images, pairs_per_image=args.pairs, seed=args.seed, batch_size=args.batch_size, plot=args.plot)
    result |= {"run": str(args.run), "data": args.data, "split": args.split}
    rows = [{"field": "COVER prediction", "EPE (voxels)": f"{result['epe_mean']:.3f} +- {result['epe_std']:.3f}"},
            {"field": "no motion", "EPE (voxels)": f"{result['zero_flow_epe_mean']:.3f}"}]
    print(format_table(rows, ["field", "EPE (voxels)"]))
    print(f"pairs: {result['pairs']}, valid positions: {result['valid_fraction']:.1%}" + (f", plot: {result['plot']}" if args.plot else ""))
    if args.out:
        write_json(args.out, result)
        print(f"written: {args.out}")
    return 0
