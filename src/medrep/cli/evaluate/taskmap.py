"""``medrep evaluate taskmap``: the analysis of a task embedding (TaCo): task similarity, the map by family,
task and data set, k-means agreement, kNN task accuracy on held-out images and a held-out data set, and
strength sweeps; a JSON, PNGs, a CSV and a printed table."""

from __future__ import annotations

import argparse

from medrep.cli import options

EPILOG = """examples:
  medrep evaluate taskmap --encoder runs/taco_medical --out maps/taco         # every slice set, held-out images
  medrep evaluate taskmap --encoder runs/taco_loo --heldout-set head-ct --out maps/taco_loo
  medrep evaluate taskmap --encoder runs/taco --data pneumoniamnist.npz organamnist.npz --out maps/taco
  medrep evaluate taskmap --encoder runs/taco --data a.npz b.npz --heldout-set b --random-init --out maps/taco_random
  medrep evaluate taskmap --encoder runs/simclr --read diff --data a.npz --families generative transformation --method pca"""


def add_taskmap(tasks) -> argparse.ArgumentParser:
    own = options.parent()
    own.add_argument("--sets", nargs="+", metavar="NAME",
                     help="registered slice sets (`medrep list`; `all`: every one available), split into train and held-out "
                          "test images as TaCo's data does (data.holdout 0.2); the default when --data is not given")
    own.add_argument("--data", nargs="+", metavar="PATH",
                     help="image sources, one data set each: MedMNIST .npz files or image folders (train/ and test/ subfolders, "
                          "else every 4th image is held out)")
    own.add_argument("--max-images", type=int, default=64, help="images per split per data set (--data), or slices per set "
                                                                "(--sets), a seeded choice (default 64)")
    own.add_argument("--size", type=int, default=64, help="images are resized to SIZE x SIZE (default 64)")
    own.add_argument("--read", choices=["pair", "concat", "diff"],
                     help="how the encoder reads a pair (x, y): pair e([x, y]) for a 6-channel (TaCo) encoder, else the baselines "
                          "concat [e(x), e(y)] or diff e(y) - e(x) (default: pair for 6 channels, else concat)")
    own.add_argument("--tasks", nargs="+", metavar="NAME", help="tasks to map (default: all; `medrep list --tasks` shows them)")
    own.add_argument("--families", nargs="+", metavar="FAMILY", help="map every task of these families (semantic, generative, "
                                                                      "transformation)")
    own.add_argument("--samples-per-task", type=int, default=24, help="pairs per task of held-out images, and of train images "
                                                                       "for the kNN probe (default 24)")
    own.add_argument("--heldout-set", help="also score kNN task accuracy on this data set, fitted on the others' pairs "
                                           "(an encoder trained without it)")
    own.add_argument("--sweep", nargs="+", metavar="NAME", help="tasks swept over strength 0..1 (default: rotate, denoise_gaussian "
                                                                 "and a brightness task, of those registered)")
    own.add_argument("--sweep-images", type=int, default=8, help="images per swept task (default 8)")
    own.add_argument("--method", choices=["umap", "pca"], default="umap", help="map projection (default umap)")
    own.add_argument("--seed", type=int, default=0, help="seed of the pairs, the map, k-means and --random-init weights (default 0)")
    out = options.output("output folder: taskmap.json, similarity.png, map_{family,task,dataset}.png, map.csv, trajectories.png "
                         "(default: taskmap)", default="taskmap")
    return options.command(tasks, "taskmap", "analysis of a task embedding (TaCo): similarity, map, clustering, kNN, sweeps",
                           description="Embed true (input, target) pairs of each task on held-out images and analyse the "
                                       "task embedding: task x task similarity and nearest tasks, a map coloured by family, "
                                       "task and data set, k-means NMI/ARI and silhouettes, kNN task accuracy on held-out "
                                       "images and a held-out data set, and trajectories along strength sweeps.",
                           epilog=EPILOG, parents=[options.encoder(), own, options.batch_size(128, "pairs per forward pass (default 128)"),
                                                   options.device(), out])


def set_slices(names: list[str], size: int, per_set: int) -> list:
    """Registered slice sets with the train / held-out split of TaCo's own data (``data.holdout``)."""
    from medrep.data.sources.task_pairs import OPTIONS, load_pool, split_pool
    from medrep.evaluate.task_slices import TaskSlice

    data = {"sets": None if names == ["all"] else names, "size": size, "slices_per_set": per_set}
    pool = load_pool(data)
    return [TaskSlice(s.image, s.mask, s.source, s.id, split) for split in ("train", "test")
            for s in split_pool(pool, split, OPTIONS["holdout"])]


def run_taskmap(args) -> int:
    from medrep.checkpoint import read_encoder_info
    from medrep.evaluate.task_features import check_read
    from medrep.evaluate.task_slices import load_task_slices
    from medrep.evaluate.taskmap import taskmap
    from medrep.tasks import get_task, select_tasks

    # every name and the reading mode are checked before any image is read
    select_tasks(args.tasks, args.families)
    for name in args.sweep or []:
        get_task(name)
    info, _ = read_encoder_info(args.encoder)
    check_read(args.read, info["backbone"].get("in_channels", 1))
    slices = (load_task_slices(args.data, size=args.size, max_images=args.max_images, seed=args.seed) if args.data
              else set_slices(args.sets or ["all"], args.size, args.max_images))
    result = taskmap(args.encoder, slices, tasks=args.tasks, families=args.families, read=args.read, random_init=args.random_init,
                     samples_per_task=args.samples_per_task, heldout_set=args.heldout_set, sweep=args.sweep,
                     sweep_images=args.sweep_images, method=args.method, seed=args.seed, batch_size=args.batch_size,
                     device=args.device, out=args.out)
    print(result["table"])
    print("written: " + ", ".join(result["files"].values()))
    return 0
