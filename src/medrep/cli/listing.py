"""``medrep list``: the registered methods, backbones and data sources, and the bundled recipes.

Named listing, not list: a submodule ``list`` would rebind the builtin ``list`` inside the package's namespace."""

from __future__ import annotations

import argparse

from medrep.cli import options


def add_parser(subparsers) -> argparse.ArgumentParser:
    return options.command(subparsers, "list", "list methods, backbones, data sources and bundled recipes")


def run(args: argparse.Namespace) -> int:
    from medrep.data.sources import source_names
    from medrep.methods import available_methods
    from medrep.models import BACKBONES
    from medrep.recipe import bundled_recipes

    print("methods:   " + ", ".join(available_methods()))
    print("backbones: " + ", ".join(sorted(BACKBONES)))
    for kind, label in (("image", "images"), ("image_text", "image-report pairs"), ("segmentation", "segmentation tasks")):
        print(f"sources:   {label}: " + ", ".join(source_names(kind)))
    print("recipes:   " + ", ".join(bundled_recipes()))
    return 0
