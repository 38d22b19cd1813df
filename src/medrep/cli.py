"""The ``medrep`` command: parse arguments, load a recipe, call the library. Nothing else lives here."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

EPILOG_PRETRAIN = """examples:
  medrep pretrain --recipe configs/simclr_pneumoniamnist.yaml
  medrep pretrain --recipe simclr_pneumoniamnist trainer.max_steps=2000 optim.lr=3e-4 data.batch_size=128
  medrep pretrain --recipe simclr_pneumoniamnist trainer.output_dir=runs/a --resume
  torchrun --nproc_per_node 4 -m medrep pretrain --recipe R trainer.devices=4 trainer.strategy=ddp
Any recipe value is set with section.key=value (the value is read as YAML)."""


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="data path: a MedMNIST .npz, an image folder or a manifest (default: the encoder's "
                                  "recipe, else the packaged PneumoniaMNIST; $MEDREP_DATA is searched first)")
    p.add_argument("--source", choices=["medmnist", "folder", "manifest"], help="kind of --data (default: medmnist)")
    p.add_argument("--train-split", default="train", help="split the probe is fitted on (default: train)")
    p.add_argument("--test-split", default="test", help="split the probe is scored on (default: test)")
    p.add_argument("--batch-size", type=int, default=256, help="batch size for feature extraction")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable files, and count and list them")


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

    p = sub.add_parser("evaluate", help="evaluate a frozen encoder (linear probe, kNN)",
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
    return parser


def _cmd_pretrain(args) -> int:
    from .engine import pretrain
    import yaml

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
    from .evaluate.frozen import data_config, evaluate_frozen

    data = data_config(args.encoder, args.data, args.source, args.skip_bad)
    opts = dict(fractions=args.fractions, seeds=args.seeds) if args.task == "linear" else dict(k=args.k, temperature=args.temperature)
    result = evaluate_frozen(args.task, args.encoder, data, random_init=args.random_init, train_split=args.train_split,
                             test_split=args.test_split, batch_size=args.batch_size, device=args.device, out=args.out, **opts)
    print(result["table"])
    if args.out:
        print(f"written: {args.out}")
    return 0


def _cmd_embed(args) -> int:
    from .evaluate.frozen import data_config, embed

    data = data_config(args.encoder, args.data, args.source, args.skip_bad)
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


COMMANDS = {"pretrain": _cmd_pretrain, "evaluate": _cmd_evaluate, "embed": _cmd_embed, "demo": _cmd_demo, "list": _cmd_list}


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
