"""Run a frozen encoder over a dataset once and keep (features, labels) as arrays, so the probes
(and repeated seeds/fractions) never touch the network or the images again."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..errors import MedrepError


def _label_of(sample: Any, position: int) -> int:
    """The sample's class id as an int; a missing or non-scalar label is a MedrepError."""
    label = sample.get("label") if isinstance(sample, dict) else None
    if label is None:
        raise MedrepError(f"sample {position} of the batch has no label", where="label")
    arr = np.asarray(label.detach().cpu() if isinstance(label, torch.Tensor) else label)
    ok = arr.size == 1 and (
        np.issubdtype(arr.dtype, np.integer)
        or (np.issubdtype(arr.dtype, np.floating) and float(arr.reshape(-1)[0]).is_integer())
    )
    if arr.ndim == 1 and arr.size > 1:
        raise MedrepError(f"sample {position} has a multi-label target of {arr.size} labels; the frozen probes take one "
                          "class per image: use 'medrep evaluate finetune' (multi-label AUROC)", where="label")
    if not ok:
        raise MedrepError(f"sample {position} has label {label!r}; expected one integer class id", where="label")
    return int(arr.reshape(-1)[0])


def stack_image_label(samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Minimal collate: stack ``image`` and ``label`` only (other keys, such as paths or reports
    of varying length, are dropped because feature extraction does not need them)."""
    images = []
    for i, s in enumerate(samples):
        if not isinstance(s, dict) or "image" not in s:
            raise MedrepError(f"sample {i} of the batch has no image", where="image")
        images.append(torch.as_tensor(s["image"]))
    labels = torch.tensor([_label_of(s, i) for i, s in enumerate(samples)], dtype=torch.int64)
    try:
        image = torch.stack(images)
    except RuntimeError as exc:
        raise MedrepError(f"images in one batch differ in shape ({exc})", where="image") from exc
    return {"image": image, "label": labels}


def extract_features(
    encoder: torch.nn.Module,
    dataset,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: bool = True,
    collate_fn: Callable[[list[Any]], dict[str, Any]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode every sample of ``dataset``; return features (N, F) float32 and labels (N,) int64.

    The encoder runs in eval mode (batch-norm statistics frozen, dropout off) under
    ``torch.inference_mode()``; each submodule's training flag is restored afterwards, even on
    error, so this can be called mid-training as a monitor. Order follows the dataset (no
    shuffling). Encoder outputs with extra trailing dims, e.g. (B, F, 1, 1), are flattened.
    ``collate_fn`` must return a dict with ``image`` and ``label``; default
    :func:`stack_image_label`.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise MedrepError(f"batch_size must be a positive integer, got {batch_size!r}", where="batch_size")
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_fn or stack_image_label,
        pin_memory=torch.device(device).type == "cuda",
    )
    modes = [(m, m.training) for m in encoder.modules()]
    feats: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    seen = 0
    encoder.eval()
    try:
        total = len(loader) if hasattr(dataset, "__len__") else None
        with torch.inference_mode():
            for batch in tqdm(loader, total=total, desc="features", unit="batch", disable=not progress):
                if not isinstance(batch, dict) or "image" not in batch or batch.get("label") is None:
                    raise MedrepError(f"batch starting at sample {seen} has no image or no label", where="label")
                image = batch["image"].to(device, non_blocking=True).float()
                out = encoder(image)
                if not isinstance(out, torch.Tensor) or out.ndim < 2 or out.shape[0] != image.shape[0]:
                    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                    raise MedrepError(f"encoder must return a (B, F) tensor, got {shape}", where="encoder")
                lab = torch.as_tensor(batch["label"]).reshape(-1)
                if lab.numel() != image.shape[0]:
                    raise MedrepError(f"{lab.numel()} labels for {image.shape[0]} images in a batch", where="label")
                feats.append(out.flatten(1).float().cpu().numpy())
                labels.append(lab.cpu().numpy().astype(np.int64))
                seen += image.shape[0]
    finally:
        for module, mode in modes:
            module.training = mode  # per module: train(mode) would overwrite children's flags
    if not feats:
        raise MedrepError("dataset is empty", where="dataset")
    return np.concatenate(feats).astype(np.float32, copy=False), np.concatenate(labels)


def save_features(path: str | Path, feats: np.ndarray, labels: np.ndarray) -> Path:
    """Save features and labels to an ``.npz`` file at exactly ``path`` (parent folders created)."""
    feats = np.asarray(feats)
    labels = np.asarray(labels)
    if feats.ndim != 2:
        raise MedrepError(f"features must be 2D, got shape {feats.shape}", where="feats")
    if labels.ndim != 1 or labels.shape[0] != feats.shape[0]:
        raise MedrepError(f"labels of shape {labels.shape} do not match {feats.shape[0]} feature rows", where="labels")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # a file handle stops numpy from appending a second ".npz"
        np.savez(fh, features=feats.astype(np.float32, copy=False), labels=labels.astype(np.int64, copy=False))
    return path


def load_features(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Load ``(features float32, labels int64)`` written by :func:`save_features`."""
    path = Path(path)
    if not path.is_file():
        raise MedrepError("no such features file", where=path)
    try:
        with np.load(path, allow_pickle=False) as data:
            feats, labels = data["features"], data["labels"]
    except KeyError as exc:
        raise MedrepError(f"not a features file: missing {exc}", where=path) from exc
    except (OSError, ValueError) as exc:
        raise MedrepError(f"cannot read features file ({exc})", where=path) from exc
    return feats.astype(np.float32, copy=False), labels.astype(np.int64, copy=False)
