"""Frozen-encoder evaluation end to end: encoder + data description in, probe results out.

Features of each split are computed once and shared by every probe run on them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.sources import get_source, guess_source
from ..errors import MedrepError
from ..recipe import DEFAULTS
from .encoder import resolve_device
from .features import extract_features, save_features
from .knn import knn_probe
from .linear import linear_probe
from .report import format_table, probe_rows, write_json

PROBES = ("linear", "knn")


def data_config(
    encoder: str | Path | None, path: str | None = None, source: str | None = None, skip_bad: bool = False,
    size: list[int] | None = None,
) -> dict:
    """The recipe ``data`` section for evaluation: the encoder's own preprocessing (size,
    intensity) so that images are prepared as in pretraining, plus where the data are. ``size``
    overrides the resize (one value is repeated over the spatial axes), for data sets whose
    images differ in size when the encoder was trained without one."""
    from ..checkpoint import read_encoder_info

    data = copy.deepcopy(DEFAULTS["data"])
    if encoder is not None:
        info, _ = read_encoder_info(encoder)
        data.update(info.get("preprocess", {}))
        data["spatial_dims"] = info["backbone"]["spatial_dims"]
    if path is not None:
        data["path"] = str(path)
        data["source"] = source or guess_source(path)
    elif source is not None:
        data["source"] = source
    get_source(data["source"], "image", where="--source")  # probes read labelled images
    data["skip_bad"] = skip_bad
    if size is not None:
        dims = data["spatial_dims"] or 2
        if len(size) not in (1, dims) or min(size) < 1:
            raise MedrepError(f"give one positive size or {dims} (one per axis), got {size}", "--size")
        data["size"] = list(size) * dims if len(size) == 1 else list(size)
    data["class_folders"] = data["source"] == "folder"  # probes need labels: from class subfolders
    return data


def split_features(
    encoder: torch.nn.Module, data: dict, split: str, batch_size: int = 256, device: str = "auto", dataset=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of ``split``. ``dataset``: that split already built (or a subset of it), for a
    caller that also reads the dataset's class names or paths and so builds it once."""
    if dataset is None:
        from ..data import build_dataset

        dataset = build_dataset(data, split=split)
    dev = resolve_device(device)
    encoder = encoder.to(dev)
    return extract_features(encoder, dataset, batch_size=batch_size, device=dev, collate_fn=get_source(data["source"]).collate)


def run_probes(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], probes: dict[str, dict]) -> dict[str, Any]:
    """``probes`` maps a probe name (linear | knn) to its keyword options."""
    out: dict[str, Any] = {}
    for name, opts in probes.items():
        if name not in PROBES:
            raise MedrepError(f"unknown probe {name!r}; available: {', '.join(PROBES)}", "probe")
        fn = linear_probe if name == "linear" else knn_probe
        out[name] = fn(train[0], train[1], test[0], test[1], **opts)
    return out


def probe_encoder(
    encoder: torch.nn.Module, data: dict, seeds=(0, 1, 2), fractions=(0.01, 0.1, 1.0), device: str = "auto"
) -> dict[str, Any]:
    """The linear probe (at each label fraction, over ``seeds``) and the kNN probe (k=20) of a frozen
    ``encoder``, trained on ``data``'s train split and scored on its test split: the comparison the
    demo and the SSL benchmark print, pretrained beside random-init."""
    train = split_features(encoder, data, "train", device=device)
    test = split_features(encoder, data, "test", device=device)
    return run_probes(train, test, {"linear": dict(fractions=fractions, seeds=seeds), "knn": dict(k=20)})


def table(results: dict[str, dict[str, Any]], markdown: bool = False) -> str:
    """One row per (encoder, probe, fraction); ``results`` maps an encoder label to run_probes output."""
    rows = []
    for label, probes in results.items():
        for result in probes.values():
            rows += [{"encoder": label, **row} for row in probe_rows(result)]
    return format_table(rows, ["encoder", "probe", "fraction", "n_train", "auroc", "accuracy"], markdown=markdown)


def evaluate_frozen(
    task: str,
    encoder_path: str | Path,
    data: dict,
    random_init: bool = False,
    train_split: str = "train",
    test_split: str = "test",
    batch_size: int = 256,
    device: str = "auto",
    out: str | Path | None = None,
    **options,
) -> dict[str, Any]:
    from ..checkpoint import load_encoder

    encoder = load_encoder(encoder_path, weights=not random_init)
    train = split_features(encoder, data, train_split, batch_size, device)
    test = split_features(encoder, data, test_split, batch_size, device)
    probes = run_probes(train, test, {task: options})
    label = "random-init" if random_init else "pretrained"
    result = {
        "task": task, "encoder": str(encoder_path), "random_init": random_init, "data": data,
        "train_split": train_split, "test_split": test_split, "results": probes[task],
        "table": table({label: probes}),
    }
    if out:
        write_json(out, result)
    return result


def embed(encoder_path: str | Path, data: dict, split: str, out: str | Path, batch_size: int = 256, device: str = "auto") -> int:
    from ..checkpoint import load_encoder

    feats, labels = split_features(load_encoder(encoder_path), data, split, batch_size, device)
    save_features(out, feats, labels)
    return len(feats)
