"""``medrep evaluate TASK``: one table, EVALUATIONS, names each evaluation's parser builder and run function; it
builds the TASK subparsers and dispatches to the chosen one. An evaluation owns its options; the ones it shares
with others come from :mod:`medrep.cli.options`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NamedTuple

from medrep.cli import options
from medrep.cli.evaluate import dense, finetune, maps, probe, slices, spatial, taskmap, vlp


class Evaluation(NamedTuple):
    add: Callable[[argparse._SubParsersAction], argparse.ArgumentParser]  # adds the task's subparser, named as in the table
    run: Callable[[argparse.Namespace], int]  # exit status; library imports happen here, not at parser building


EVALUATIONS: dict[str, Evaluation] = {
    "linear": Evaluation(probe.add_linear, probe.run_linear),
    "knn": Evaluation(probe.add_knn, probe.run_knn),
    "finetune": Evaluation(finetune.add_finetune, finetune.run_finetune),
    "map": Evaluation(maps.add_map, maps.run_map),
    "regions": Evaluation(spatial.add_regions, spatial.run_regions),
    "distance": Evaluation(spatial.add_distance, spatial.run_distance),
    "segment": Evaluation(dense.add_segment, dense.run_segment),
    "registration": Evaluation(dense.add_registration, dense.run_registration),
    "retrieval": Evaluation(vlp.add_retrieval, vlp.run_retrieval),
    "zeroshot": Evaluation(vlp.add_zeroshot, vlp.run_zeroshot),
    "taskmap": Evaluation(taskmap.add_taskmap, taskmap.run_taskmap),
    "slices": Evaluation(slices.add_slices, slices.run_slices),
    "consistency": Evaluation(slices.add_consistency, slices.run_consistency),
}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = options.command(subparsers, "evaluate", "evaluate an encoder: " + ", ".join(EVALUATIONS),
                        description="Score a pretrained encoder (or run) on one task; 'medrep evaluate TASK --help' "
                                    "describes the task and its options.")
    tasks = p.add_subparsers(dest="task", metavar="TASK", required=True)
    for evaluation in EVALUATIONS.values():
        evaluation.add(tasks)
    return p


def run(args: argparse.Namespace) -> int:
    return EVALUATIONS[args.task].run(args)
