"""``medrep list``: the registered methods and backbones and the bundled recipes.

Named listing, not list: a submodule ``list`` would rebind the builtin ``list`` inside the package's namespace."""

from __future__ import annotations

import argparse

from medrep.cli import options


def add_parser(subparsers) -> argparse.ArgumentParser:
    return options.command(subparsers, "list", "list methods, backbones and bundled recipes")


def run(args: argparse.Namespace) -> int:
    from medrep.methods import available_methods
    from medrep.models import BACKBONES
    from medrep.recipe import bundled_recipes

    print("methods:   " + ", ".join(available_methods()))
    print("backbones: " + ", ".join(sorted(BACKBONES)))
    print("recipes:   " + ", ".join(bundled_recipes()))
    return 0
