"""The encoder an evaluation reads, and the device it runs on.

Every evaluation takes either a module (from a notebook or a benchmark) or the path of an exported
encoder, with ``random_init`` asking for the same architecture freshly initialised: the baseline
that shows what pretraining adds. Loading goes through :mod:`medrep.checkpoint`, never the trainer.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import MedrepError


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU; otherwise any torch device string."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise MedrepError(f"not a torch device: {exc}", "--device") from exc


def resolve_encoder(encoder: torch.nn.Module | str | Path, random_init: bool = False) -> tuple[torch.nn.Module, str]:
    """The module and the name results are reported under. A module is used as it is
    (``random_init`` then does not apply: the caller built it); a path is loaded with
    :func:`medrep.checkpoint.load_encoder`, its weights left out when ``random_init``."""
    if isinstance(encoder, torch.nn.Module):
        return encoder, getattr(encoder, "name", type(encoder).__name__)
    from ..checkpoint import load_encoder

    return load_encoder(encoder, weights=not random_init), str(encoder)
