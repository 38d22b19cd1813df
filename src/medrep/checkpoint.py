"""What a run leaves behind, and loading it back without the trainer.

Two artefacts: the exported encoder (weights as safetensors plus a JSON of how to rebuild it) and
the run's Lightning checkpoint, from which :func:`load_method` rebuilds the whole method (encoder
and heads, e.g. a text tower). This module is the library side of medrep, as open_clip keeps its
model loading apart from its training app: it imports neither Lightning nor :mod:`medrep.engine`,
so evaluating or embedding with a trained model never pulls in the trainer.

Loading never unpickles: the JSON names a registered backbone and its keyword arguments, the
weights are plain tensors, and checkpoints are read with ``torch.load(weights_only=True)``. The
JSON also records the preprocessing the encoder was trained with, so that evaluation prepares
images the same way unless told otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from . import __version__
from .errors import MedrepError
from .files import write_bytes_atomic
from .models import Backbone, build_backbone

FORMAT = "medrep-encoder"
PREPROCESS_KEYS = ("size", "intensity", "window", "percentiles", "spatial_dims")
#: The trainer's LightningModule holds the method as its ``method`` attribute, so the method's
#: weights are the checkpoint's ``state_dict`` entries under this prefix.
METHOD_PREFIX = "method."


def export_encoder(encoder: Backbone, directory: str | Path, recipe: dict | None = None) -> Path:
    """Write ``encoder.safetensors`` and ``encoder.json`` into ``directory``; return the JSON path.

    Each file is replaced atomically, the weights first: a kill midway leaves complete files (at
    worst the new weights beside the previous export's JSON, which for a resumed run names the same backbone).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    write_bytes_atomic(directory / "encoder.safetensors", safetensors_bytes(state, metadata={"format": FORMAT}))
    info: dict[str, Any] = {
        "format": FORMAT,
        "medrep_version": __version__,
        "backbone": encoder.config,
        "out_dim": encoder.out_dim,
        "weights": "encoder.safetensors",
    }
    if recipe is not None:
        info["method"] = recipe["method"]["name"]
        info["preprocess"] = {k: recipe["data"][k] for k in PREPROCESS_KEYS if k in recipe["data"]}
    write_bytes_atomic(directory / "encoder.json", json.dumps(info, indent=2).encode("utf-8"))
    return directory / "encoder.json"


def read_encoder_info(path: str | Path) -> tuple[dict, Path]:
    """The JSON description and weights path for a run folder, an encoder folder, ``.json`` or ``.safetensors``."""
    path = Path(path)
    if path.is_dir() and (path / "encoder" / "encoder.json").is_file():
        path = path / "encoder"  # a run folder
    if path.is_dir():
        path = path / "encoder.json"
    elif path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    if not path.is_file():
        raise MedrepError("no exported encoder here (expected encoder.json beside encoder.safetensors)", path)
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MedrepError(f"not valid JSON: {exc}", path) from exc
    if info.get("format") != FORMAT:
        raise MedrepError(f"not a medrep encoder description (format {info.get('format')!r})", path)
    return info, path.parent / info.get("weights", "encoder.safetensors")


def load_encoder(path: str | Path, weights: bool = True, map_location: str | torch.device = "cpu") -> Backbone:
    """Rebuild an exported encoder as an ``nn.Module`` in eval mode.

    ``weights=False`` gives the same architecture with random initialisation (a baseline).
    """
    info, weights_path = read_encoder_info(path)
    encoder = build_backbone(info["backbone"])
    if weights:
        try:
            state = load_file(str(weights_path), device=str(map_location))
        except (SafetensorError, FileNotFoundError, OSError) as exc:
            raise MedrepError(f"cannot read encoder weights: {exc}", weights_path) from exc
        missing, unexpected = encoder.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise MedrepError(f"weights do not match the backbone (missing {missing[:5]}, unexpected {unexpected[:5]})", weights_path)
    encoder.preprocess = info.get("preprocess", {})
    return encoder.eval()


def last_checkpoint(run_dir: str | Path) -> Path:
    """``checkpoints/last.ckpt`` of a run folder (what ``--resume`` and :func:`load_method` read)."""
    path = Path(run_dir) / "checkpoints" / "last.ckpt"
    if not path.exists():
        raise MedrepError("no checkpoint to resume from (expected checkpoints/last.ckpt)", run_dir)
    return path


def load_method(run_dir: str | Path, map_location: str | torch.device = "cpu", checkpoint: str | Path | None = None) -> torch.nn.Module:
    """The whole method of a run (encoder and heads) in eval mode, from ``recipe.yaml`` and
    ``checkpoints/last.ckpt`` (or ``checkpoint``, e.g. a step checkpoint of the run), loaded with
    ``weights_only=True`` (no pickled code)."""
    from .methods import build_method
    from .recipe import load_recipe

    run_dir = Path(run_dir)
    recipe_path = run_dir / "recipe.yaml"
    if not recipe_path.is_file():
        raise MedrepError("not a run folder (no recipe.yaml)", run_dir)
    method = build_method(load_recipe(recipe_path))
    ckpt = last_checkpoint(run_dir) if checkpoint is None else Path(checkpoint)
    try:
        state = torch.load(ckpt, map_location=map_location, weights_only=True)["state_dict"]
    except (RuntimeError, KeyError, OSError, EOFError) as exc:
        raise MedrepError(f"cannot read the checkpoint: {exc}", ckpt) from exc
    weights = {k.removeprefix(METHOD_PREFIX): v for k, v in state.items() if k.startswith(METHOD_PREFIX)}
    missing, unexpected = method.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise MedrepError(f"checkpoint does not match the recipe (missing {missing[:5]}, unexpected {unexpected[:5]})", ckpt)
    return method.eval()
