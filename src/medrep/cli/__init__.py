"""The ``medrep`` command: parse arguments, call the library. Nothing else lives here.

One module per command, each with ``add_parser(subparsers)`` and ``run(args) -> int``; COMMANDS names them
and drives both the parser and the dispatch (``evaluate`` does the same one level down, with EVALUATIONS).
Library imports stay inside the run functions, so that ``medrep --help`` answers without importing torch."""

from __future__ import annotations

import argparse
import logging
import sys

from medrep.cli import demo, embed, evaluate, explain, listing, options, prepare, pretrain

COMMANDS = {"pretrain": pretrain, "evaluate": evaluate, "embed": embed, "explain": explain, "demo": demo, "list": listing,
            "prepare": prepare}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medrep",
        description="Pretrain encoders of medical images (2D and 3D) and measure what they learned.",
        formatter_class=options.HelpFormatter,
        epilog="Run 'medrep demo' for a first end-to-end run, 'medrep COMMAND --help' for details.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS.values():
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from medrep.errors import MedrepError

    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("medrep")  # ours only: Lightning keeps its own handler, so no line twice
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return COMMANDS[args.command].run(args)
    except MedrepError as exc:
        print(f"medrep: error: {exc}", file=sys.stderr)
        return 2
