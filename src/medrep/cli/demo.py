"""``medrep demo``: SimCLR on PneumoniaMNIST for a few minutes, then probes of it beside a random-init encoder."""

from __future__ import annotations

import argparse
from pathlib import Path

from medrep.cli import options


def add_parser(subparsers) -> argparse.ArgumentParser:
    own = options.parent()
    own.add_argument("--data", help="a PneumoniaMNIST .npz (default: $MEDREP_DATA/medmnist/pneumoniamnist.npz or the packaged copy)")
    own.add_argument("--steps", type=int, default=None, help="pretraining steps (default: the demo recipe's)")
    own.add_argument("--seed", type=int, default=0, help="pretraining seed, trainer.seed (default 0)")
    own.add_argument("overrides", nargs="*", metavar="section.key=value", help="overrides of the demo recipe")
    return options.command(subparsers, "demo", "pretrain SimCLR on PneumoniaMNIST for a few minutes, probe it against random init",
                           description="End to end on CPU: SimCLR pretraining on PneumoniaMNIST (packaged), then linear "
                                       "(1/10/100% labels) and kNN probes of the pretrained and of a random-init encoder "
                                       "of the same architecture, printed side by side.",
                           parents=[own, options.output("run folder (default runs/demo)", default="runs/demo")])


def run(args: argparse.Namespace) -> int:
    from medrep.demo import run_demo

    run_demo(out=Path(args.out), data=args.data, steps=args.steps, seed=args.seed, overrides=args.overrides)
    return 0
