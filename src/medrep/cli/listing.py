"""``medrep list``: the registered methods, backbones and data sources, and the bundled recipes.

Named listing, not list: a submodule ``list`` would rebind the builtin ``list`` inside the package's namespace."""

from __future__ import annotations

import argparse

from medrep.cli import options


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = options.command(subparsers, "list", "list methods, backbones, data sources, TaCo's tasks and bundled recipes")
    parser.add_argument("--tasks", action="store_true", help="one line per task: family, whether it needs a mask, what strength does")
    return parser


def run(args: argparse.Namespace) -> int:
    from medrep.data.sources import source_names
    from medrep.methods import available_methods
    from medrep.models import BACKBONES
    from medrep.recipe import bundled_recipes
    from medrep.tasks import FAMILIES, task_names

    print("methods:   " + ", ".join(available_methods()))
    print("backbones: " + ", ".join(sorted(BACKBONES)))
    for kind, label in (("image", "images"), ("image_text", "image-report pairs"), ("segmentation", "segmentation tasks"),
                        ("tasks", "task samples (TaCo)")):
        print(f"sources:   {label}: " + ", ".join(source_names(kind)))
    print("recipes:   " + ", ".join(bundled_recipes()))
    from medrep.data.slices import format_slice_sets

    print("slice sets (TaCo's images; data.sets):")
    print(format_slice_sets())
    if args.tasks:
        _task_lines()
    else:
        for family in FAMILIES:
            names = task_names(family)
            print(f"tasks:     {family} ({len(names)}): " + ", ".join(names))
    return 0


def _task_lines() -> None:
    from medrep.tasks import get_task, task_names

    print("tasks (family, needs a mask, what strength does):")
    for name in task_names():
        task = get_task(name)
        print(f"  {name:<22} {task.family:<15} {'mask' if task.needs_mask else '-':<5} {task.summary}")
