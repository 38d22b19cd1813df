"""Dense evaluation: fine-tune an exported encoder with a decoder and segmentation head on few labels, score Dice.

The model is the exported encoder (pretrained weights, or the same architecture freshly initialised
for a scratch row) with a decoder to full resolution, plus a 1x1(x1) convolution from the
full-resolution decoder features (``dense(x)[-1]``) to the classes. A U-Net brings its own decoder;
any other registered backbone (ResNets, DenseNet-121: a U-Net decoder on its stage outputs; ViT: a
UNETR decoder on its hidden states) gets a fresh one, see :mod:`medrep.models.dense`. Everything is
fine-tuned, or with ``frozen_encoder`` only the decoder and head (the encoder is also kept in eval
mode, so no statistic of it moves). The encoder's input rule sets the patch (see :mod:`.patches`):
a multiple of its coarsest reduction, or a ViT's ``img_size`` exactly.

Recipe, fixed so that rows compare: ``steps`` AdamW steps (weight decay 1e-4) on Dice + CE
(:class:`monai.losses.DiceCELoss`: softmax, one-hot targets, Dice over the whole batch so that
a class missing from one patch does not dominate), random patches (see :mod:`.patches` for the
patch size rule and what a label fraction means), no augmentation. Each (fraction, seed) run
starts from the same weights; ``torch.manual_seed(seed)`` fixes the decoder and head (and the
scratch backbone) and numpy generators seeded from ``seed`` fix the labelled subset and the patches.

Test: each test item is predicted whole by sliding-window inference (window = the training patch,
overlap 0.25, Gaussian blending; a 2D slice that fits the patch is one window), argmax, and Dice
per class per case (the slices of one volume form one case) under the rule of :mod:`.dice`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.datasets.segmentation import SegItem
from ..errors import MedrepError
from ..models.dense import DenseSpec, dense_model, dense_spec
from .dice import dice_counts, dice_from_counts, summarise_cases
from .patches import PatchSampler, label_unit, resolve_patch
from .report import format_table, summarise

WEIGHT_DECAY = 1e-4
OVERLAP = 0.25


class SegNet(nn.Module):
    """A dense backbone and a 1x1 convolution from its finest feature map to class logits."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        conv = nn.Conv2d if backbone.spatial_dims == 2 else nn.Conv3d
        self.head = conv(int(backbone.dense_channels[-1]), num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.dense(x)[-1])


def check_dense(encoder: nn.Module) -> DenseSpec:
    """Segmentation needs full-resolution features: a U-Net, or a registered backbone that a decoder
    can read (:func:`medrep.models.dense.dense_spec`); single-channel. Errors name ``--encoder``."""
    if int((getattr(encoder, "config", None) or {}).get("in_channels", 1)) != 1:
        raise MedrepError("segmentation reads single-channel images; the encoder takes several channels", "--encoder")
    return dense_spec(encoder, "--encoder")


def fresh_backbone(base: nn.Module, random_init: bool, seed: int, spec: DenseSpec | None = None) -> nn.Module:
    """A copy of ``base`` (its weights), or for ``random_init`` the same architecture built anew under
    ``seed``, with a decoder (also drawn under ``seed``) unless it is a U-Net."""
    from ..models import build_backbone

    torch.manual_seed(seed)
    model = build_backbone(base.config) if random_init else copy.deepcopy(base)
    return dense_model(model.float(), spec).float()


def fine_tune(model: SegNet, sampler: PatchSampler, steps: int, batch_size: int, lr: float, frozen_encoder: bool,
              device: torch.device, progress: bool = True, desc: str = "fine-tune") -> list[float]:
    """``steps`` optimiser steps on patches from ``sampler``; returns the loss per step."""
    from monai.losses import DiceCELoss

    if frozen_encoder:
        model.backbone.encoder.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=lr, weight_decay=WEIGHT_DECAY)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    model.train()
    if frozen_encoder:
        model.backbone.encoder.eval()
    losses = []
    for _ in tqdm(range(steps), desc=desc, unit="step", disable=not progress):
        x, y = sampler.draw(batch_size)
        loss = loss_fn(model(x.to(device)), y.to(device))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        losses.append(float(loss.detach()))
    return losses


@torch.inference_mode()
def predict(model: nn.Module, image: np.ndarray, patch: tuple[int, ...], batch_size: int, device: torch.device) -> np.ndarray:
    """Label map of one whole image by sliding-window inference."""
    from monai.inferers import sliding_window_inference

    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
    logits = sliding_window_inference(x, roi_size=patch, sw_batch_size=batch_size, predictor=model, overlap=OVERLAP,
                                      mode="gaussian", cval=float(image.min()))
    return logits.argmax(1)[0].cpu().numpy()


def score(model: nn.Module, items: Sequence[SegItem], num_classes: int, class_names: list[str], patch: tuple[int, ...],
          batch_size: int, device: torch.device, progress: bool = True) -> dict[str, Any]:
    """Dice per class per case (counts summed over a case's slices), summarised by :func:`summarise_cases`."""
    counts: dict[str, np.ndarray] = {}
    for item in tqdm(items, desc="test", unit="item", disable=not progress):
        c = dice_counts(predict(model, item.image, patch, batch_size, device), item.mask, num_classes)
        counts[item.case] = counts.get(item.case, 0) + c
    return summarise_cases([dice_from_counts(c) for c in counts.values()], class_names)


def _check_items(train: Sequence[SegItem], test: Sequence[SegItem], num_classes: int, dims: int) -> None:
    for split, items in (("train", train), ("test", test)):
        if not items:
            raise MedrepError(f"no {split} items", split)
        for it in items:
            if it.image.ndim != dims or it.image.shape != it.mask.shape:
                raise MedrepError(f"image {it.image.shape} / mask {it.mask.shape} do not fit a {dims}D model", it.name)
            if it.mask.min() < 0 or it.mask.max() >= num_classes:
                raise MedrepError(f"mask labels outside [0, {num_classes - 1}]", it.name)
    if not any(it.mask.max() > 0 for it in test):
        raise MedrepError("the test items hold no foreground label: Dice is undefined", "test")


def _check_options(fractions, seeds, steps, batch_size, lr, num_classes) -> None:
    if not fractions or any(not 0.0 < float(f) <= 1.0 for f in fractions):
        raise MedrepError(f"label fractions must lie in (0, 1], got {list(fractions)}", "--fractions")
    if not seeds:
        raise MedrepError("give at least one seed", "--seeds")
    for value, name, ok in ((steps, "--steps", steps >= 0), (batch_size, "--batch-size", batch_size >= 1), (lr, "--lr", lr > 0),
                            (num_classes, "--num-classes", num_classes >= 2)):
        if not ok:
            raise MedrepError(f"out of range: {value!r}", name)


def segment_eval(
    encoder: nn.Module | str | Path,
    train: Sequence[SegItem],
    test: Sequence[SegItem],
    num_classes: int,
    *,
    fractions: Sequence[float] = (0.1, 1.0),
    seeds: Sequence[int] = (0,),
    steps: int = 200,
    patch: int | None = None,
    batch_size: int = 4,
    lr: float = 1e-3,
    frozen_encoder: bool = False,
    random_init: bool = False,
    unit: str = "auto",
    pool: int = 200,
    device: str = "auto",
    progress: bool = True,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Fine-tune and score ``encoder`` (a backbone module, or an exported encoder path loaded with
    ``random_init`` choosing fresh weights) at each label fraction and seed; see the module docs."""
    from .encoder import resolve_device, resolve_encoder

    _check_options(fractions, seeds, steps, batch_size, lr, num_classes)
    base, enc_name = resolve_encoder(encoder, random_init)
    spec = check_dense(base)
    dims = int(base.spatial_dims)
    _check_items(train, test, num_classes, dims)
    names = list(class_names) if class_names else ["background"] + [f"class_{c}" for c in range(1, num_classes)]
    patch_shape = resolve_patch(patch, train, dims, spec.multiple, spec.why, spec.size)
    unit = label_unit(unit, train, dims)
    dev = resolve_device(device)
    results: dict[str, Any] = {}
    for fraction in fractions:
        runs = {}
        for seed in seeds:
            t0 = time.perf_counter()
            sampler = PatchSampler(train, patch_shape, float(fraction), int(seed), unit, pool)
            model = SegNet(fresh_backbone(base, random_init, int(seed), spec), num_classes).to(dev)
            losses = fine_tune(model, sampler, steps, batch_size, lr, frozen_encoder, dev, progress, f"f={fraction} seed={seed}")
            t1 = time.perf_counter()
            scored = score(model, test, num_classes, names, patch_shape, batch_size, dev, progress)
            runs[str(seed)] = {**scored, "n_train": sampler.n_train, "final_loss": losses[-1] if losses else None,
                               "train_seconds": t1 - t0, "test_seconds": time.perf_counter() - t1}
        results[f"{float(fraction):g}"] = _summarise_fraction(float(fraction), runs, names, steps, unit)
    label = "random-init" if random_init else "pretrained"
    options = {"steps": steps, "patch": list(patch_shape), "batch_size": batch_size, "lr": lr, "weight_decay": WEIGHT_DECAY,
               "frozen_encoder": frozen_encoder, "decoder": spec.describe(), "label_unit": unit,
               "patch_pool": pool if unit == "patches" else None,
               "fractions": [float(f) for f in fractions], "seeds": [int(s) for s in seeds], "device": str(dev),
               "loss": "DiceCELoss(softmax, one-hot, batch Dice)", "optimizer": "AdamW",
               "inference": f"sliding window, roi = patch, overlap {OVERLAP}, gaussian"}
    return {"task": "segment", "encoder": enc_name, "random_init": random_init, "spatial_dims": dims, "num_classes": num_classes,
            "classes": names, "counts": {"train_items": len(train), "test_items": len(test),
                                         "test_cases": len({it.case for it in test})},
            "options": options, "results": results, "table": results_table(results, label),
            "class_table": class_table(results, names)}


def _summarise_fraction(fraction: float, runs: dict[str, dict], names: list[str], steps: int, unit: str) -> dict[str, Any]:
    per_class = {n: summarise(r["per_class"][n] for r in runs.values() if n in r["per_class"])
                 for n in names if any(n in r["per_class"] for r in runs.values())}
    return {"fraction": fraction, "n_train": next(iter(runs.values()))["n_train"], "label_unit": unit, "steps": steps,
            "mean_dice": summarise(r["mean_dice"] for r in runs.values()), "per_class": per_class, "seeds": runs}


def results_table(results: dict[str, Any], label: str) -> str:
    rows = [{"encoder": label, **{k: r[k] for k in ("fraction", "n_train", "label_unit", "steps", "mean_dice")}}
            for r in results.values()]
    return format_table(rows, ["encoder", "fraction", "n_train", "label_unit", "steps", "mean_dice"])


def class_table(results: dict[str, Any], names: list[str]) -> str:
    """Dice per class (rows) and label fraction (columns), mean ± std over seeds."""
    cols = [f"dice@{key}" for key in results]
    rows = [{"class": n, **{c: r["per_class"].get(n) for c, r in zip(cols, results.values())}} for n in names]
    return format_table(rows, ["class", *cols])
