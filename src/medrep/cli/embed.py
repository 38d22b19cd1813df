"""``medrep embed``: frozen-encoder features (and labels, when known) of one split, written to a .npz file."""

from __future__ import annotations

import argparse

from medrep.cli import options
from medrep.cli.evaluate.probe import FEATURE_BATCH


def add_parser(subparsers) -> argparse.ArgumentParser:
    own = options.parent()
    own.add_argument("--split", default="test", help="split to embed (default: test)")
    return options.command(subparsers, "embed", "write frozen-encoder features of a split to a .npz file",
                           description="Features (and labels, when known) of every sample of one split.",
                           parents=[options.encoder(random_init=None), options.data(), own, options.batch_size(256, FEATURE_BATCH),
                                    options.device(), options.output("output .npz (arrays: features, labels)", required=True)])


def run(args: argparse.Namespace) -> int:
    from medrep.evaluate.frozen import data_config, embed

    data = data_config(args.encoder, args.data, args.source, args.skip_bad, args.size)
    n = embed(args.encoder, data, args.split, args.out, batch_size=args.batch_size, device=args.device)
    print(f"{n} feature vectors written to {args.out}")
    return 0
