"""``medrep evaluate linear`` and ``medrep evaluate knn``: probes of frozen-encoder features, fitted on one split
and scored on another."""

from __future__ import annotations

import argparse

from medrep.cli import options

FEATURE_BATCH = "images per batch for feature extraction (default 256)"


def _splits() -> argparse.ArgumentParser:
    p = options.parent()
    p.add_argument("--train-split", default="train", help="split the probe is fitted on (default: train)")
    p.add_argument("--test-split", default="test", help="split the probe is scored on (default: test)")
    return p


def _add(tasks, name: str, help: str, own: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return options.command(tasks, name, help, parents=[options.encoder(), options.data(), _splits(), own,
                                                       options.batch_size(256, FEATURE_BATCH), options.device(), options.output()])


def add_linear(tasks) -> argparse.ArgumentParser:
    own = options.parent()
    own.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0], help="label fractions of the training split")
    own.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="subsampling seeds (mean and std are reported)")
    return _add(tasks, "linear", "logistic-regression probe at several label fractions (AUROC, accuracy)", own)


def add_knn(tasks) -> argparse.ArgumentParser:
    own = options.parent()
    own.add_argument("--k", type=int, default=20, help="neighbours (default 20)")
    own.add_argument("--temperature", type=float, default=0.07, help="vote weight temperature (default 0.07)")
    return _add(tasks, "knn", "weighted k-nearest-neighbour probe on cosine similarity (AUROC, accuracy)", own)


def run_linear(args) -> int:
    return _frozen("linear", args, fractions=args.fractions, seeds=args.seeds)


def run_knn(args) -> int:
    return _frozen("knn", args, k=args.k, temperature=args.temperature)


def _frozen(task: str, args, **opts) -> int:
    from medrep.evaluate.frozen import data_config, evaluate_frozen

    data = data_config(args.encoder, args.data, args.source, args.skip_bad, args.size)
    result = evaluate_frozen(task, args.encoder, data, random_init=args.random_init, train_split=args.train_split,
                             test_split=args.test_split, batch_size=args.batch_size, device=args.device, out=args.out, **opts)
    print(result["table"])
    if args.out:
        print(f"written: {args.out}")
    return 0
