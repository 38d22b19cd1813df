"""``medrep evaluate map``: a 2D map (UMAP or PCA) of a frozen encoder's features of one split, coloured by label,
written as a PNG, a CSV of coordinates and a JSON of settings and silhouettes."""

from __future__ import annotations

import argparse

from medrep.cli import options
from medrep.cli.evaluate.probe import FEATURE_BATCH

EPILOG = """examples:
  medrep evaluate map --encoder runs/simclr_pneumoniamnist --class-names normal pneumonia --out maps/simclr
  medrep evaluate map --encoder runs/simclr_pneumoniamnist --random-init --method pca --out maps/random_pca
  medrep evaluate map --encoder runs/a --data images/ --split train --max-points 5000 --out maps/   # maps/map.png"""


def add_map(tasks) -> argparse.ArgumentParser:
    own = options.parent()
    own.add_argument("--split", default="test", help="split to map (default: test)")
    own.add_argument("--method", choices=["umap", "pca"], default="umap",
                     help="projection (default umap; needs umap-learn: pip install umap-learn)")
    own.add_argument("--seed", type=int, default=0, help="seed of the projection and of --max-points (default 0)")
    own.add_argument("--n-neighbors", type=int, default=15, help="UMAP neighbours: larger keeps more global structure (default 15)")
    own.add_argument("--min-dist", type=float, default=0.1, help="UMAP minimum distance in the map, in [0, 1] (default 0.1)")
    own.add_argument("--max-points", type=int, help="map a stratified subsample of at most this many points (default: all)")
    own.add_argument("--class-names", nargs="+", metavar="NAME",
                     help="names of classes 0, 1, ... for data that carry none (MedMNIST), shown in the legend and the CSV")
    out = options.output("output prefix: writes PREFIX.png, PREFIX.csv and PREFIX.json; a folder gets map.png ... (default: map)",
                         default="map")
    return options.command(tasks, "map", "2D map (UMAP or PCA) of an encoder's features of a split, coloured by label",
                           description="Project a frozen encoder's features of one split to 2D (L2-normalised, then UMAP or "
                                       "PCA) and plot them coloured by label; also reports the labels' silhouette in feature "
                                       "space and in the map.",
                           epilog=EPILOG, parents=[options.encoder(), options.data(), own, options.batch_size(256, FEATURE_BATCH),
                                                   options.device(), out])


def run_map(args) -> int:
    from medrep.evaluate.frozen import data_config
    from medrep.evaluate.split_map import split_map

    data = data_config(args.encoder, args.data, args.source, args.skip_bad, args.size)
    result = split_map(args.encoder, data, split=args.split, method=args.method, seed=args.seed, n_neighbors=args.n_neighbors,
                       min_dist=args.min_dist, max_points=args.max_points, class_names=args.class_names,
                       random_init=args.random_init, batch_size=args.batch_size, device=args.device, out=args.out)
    print(result["table"])
    print("written: " + ", ".join(result["files"].values()))
    return 0
