"""medrep: learn visual representations of medical images, 2D and 3D, and measure them.

``medrep.load_encoder`` (an exported encoder) and ``medrep.load_method`` (a run's whole method)
come from :mod:`medrep.checkpoint` on first use, so ``import medrep`` stays light (no torch
until they are asked for) and neither ever imports the Lightning trainer.
"""

__version__ = "0.1.0"

#: Public names resolved on first access, and the submodule that holds each.
_LAZY = {"load_encoder": "checkpoint", "load_method": "checkpoint"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["__version__", "load_encoder", "load_method"]
