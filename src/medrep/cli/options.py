"""Options that several commands share, declared once as argparse parents.

Each factory returns a fresh ``add_help=False`` parser to pass in ``parents=[...]``; where the same flag means
a different thing to different commands (the batch of ``--batch-size``, the file of ``--out``), the factory
takes the default and help, so every command keeps its own. A command's own options go in a parent too, so that
its usage and help read in one order everywhere: what is evaluated (--encoder or --run), the command's own
options, then --batch-size, --device and --out."""

from __future__ import annotations

import argparse

ENCODER_HELP = "exported encoder: a run folder, its encoder/ folder, or encoder.json"
RANDOM_INIT_HELP = "use the encoder's architecture with random weights (baseline)"


class HelpFormatter(argparse.HelpFormatter):
    """Wraps one-paragraph descriptions to the terminal, prints multi-line texts (the examples epilogs) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def command(subparsers, name: str, help: str, description: str | None = None, epilog: str | None = None,
            parents: list[argparse.ArgumentParser] | tuple = ()) -> argparse.ArgumentParser:
    """A subcommand whose --help opens with what it does (its one-line help when there is no longer description)."""
    return subparsers.add_parser(name, help=help, description=description or help, epilog=epilog, parents=list(parents),
                                 formatter_class=HelpFormatter)


def parent() -> argparse.ArgumentParser:
    """An empty parent, for a command's own options."""
    return argparse.ArgumentParser(add_help=False)


def encoder(help: str = ENCODER_HELP, random_init: str | None = RANDOM_INIT_HELP) -> argparse.ArgumentParser:
    """--encoder (required), and --random-init unless ``random_init`` is None (embed has no baseline)."""
    p = parent()
    p.add_argument("--encoder", required=True, help=help)
    if random_init is not None:
        p.add_argument("--random-init", action="store_true", help=random_init)
    return p


def run(help: str) -> argparse.ArgumentParser:
    """--run (required): a run folder, for evaluations that need the whole method, not only its encoder."""
    p = parent()
    p.add_argument("--run", required=True, help=help)
    return p


def output(help: str = "write the result JSON here", required: bool = False, default: str | None = None) -> argparse.ArgumentParser:
    p = parent()
    p.add_argument("--out", required=required, default=default, help=help)
    return p


def device() -> argparse.ArgumentParser:
    p = parent()
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    return p


def batch_size(default: int, help: str) -> argparse.ArgumentParser:
    """--batch-size: what a batch holds (images, crops, patches, studies) and its default differ by command."""
    p = parent()
    p.add_argument("--batch-size", type=int, default=default, help=help)
    return p


def size(help: str) -> argparse.ArgumentParser:
    p = parent()
    p.add_argument("--size", type=int, nargs="+", help=help)
    return p


def data() -> argparse.ArgumentParser:
    """The images of a frozen-feature command (linear, knn, embed): --data, --source, --skip-bad, --size."""
    p = parent()
    p.add_argument("--data", help="data path: a MedMNIST .npz, an image folder or a manifest (default: the encoder's "
                                  "recipe, else the packaged PneumoniaMNIST; $MEDREP_DATA is searched first)")
    p.add_argument("--source", help="kind of --data: an image source (medmnist, folder, manifest, or another one registered "
                                     "in medrep.data.sources; default: guessed from --data, else medmnist)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable files, and count and list them")
    resize = size("resize images to this size (one value per axis, or one for all); default: the encoder's training size, "
                  "if it had one")
    return argparse.ArgumentParser(add_help=False, parents=[p, resize])
