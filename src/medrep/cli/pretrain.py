"""``medrep pretrain``: train a registered method from a recipe, with section.key=value overrides."""

from __future__ import annotations

import argparse

from medrep.cli import options

EPILOG = """examples:
  medrep pretrain --recipe configs/simclr_pneumoniamnist.yaml
  medrep pretrain --recipe simclr_pneumoniamnist trainer.max_steps=2000 optim.lr=3e-4 data.batch_size=128
  medrep pretrain --recipe simclr_pneumoniamnist trainer.output_dir=runs/a --resume
  torchrun --nproc_per_node 4 -m medrep pretrain --recipe R trainer.devices=4 trainer.strategy=ddp
Any recipe value is set with section.key=value (the value is read as YAML)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = options.command(subparsers, "pretrain", "pretrain an encoder from a recipe", epilog=EPILOG,
                        description="Pretrain with a registered method. Writes checkpoints, CSV and TensorBoard logs, "
                                    "the resolved recipe and the exported encoder (encoder/encoder.safetensors + .json) "
                                    "into trainer.output_dir.")
    p.add_argument("--recipe", required=True, help="recipe YAML path, or the name of a bundled recipe (see 'medrep list')")
    p.add_argument("--resume", action="store_true", help="continue from trainer.output_dir/checkpoints/last.ckpt")
    p.add_argument("--data", help="shortcut for data.path=...")
    p.add_argument("--dry-run", action="store_true", help="print the resolved recipe and stop")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="recipe overrides")
    return p


def run(args: argparse.Namespace) -> int:
    import yaml

    from medrep.engine import pretrain
    from medrep.recipe import load_recipe

    overrides = list(args.overrides) + ([f"data.path={args.data}"] if args.data else [])
    recipe = load_recipe(args.recipe, overrides)
    if args.dry_run:
        print(yaml.safe_dump(recipe, sort_keys=False), end="")
        return 0
    run_dir = pretrain(recipe, resume=args.resume)
    print(f"run folder: {run_dir}\nencoder:    {run_dir / 'encoder'}")
    return 0
