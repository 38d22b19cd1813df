"""Fully supervised reference: the same encoder trained with labels (cross-entropy on a linear
head), through the same engine and augmentations as the self-supervised methods, so that a
benchmark's "supervised" row differs from theirs only in the signal it learns from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError
from ..models import Backbone
from ..options import Range
from .base import Method
from .registry import register_method


@register_method("supervised")
class Supervised(Method):
    @dataclass(frozen=True, kw_only=True)
    class Options(Method.Options):
        num_classes: Annotated[int, Range(ge=2)] = 2
        augment_views: bool = True

    options: Options

    def __init__(self, encoder: Backbone, augment: nn.Module | None = None, **options: Any):
        super().__init__(encoder, augment, **options)
        o = self.options
        self.num_classes = o.num_classes
        self.augment_views = o.augment_views
        self.head = nn.Linear(encoder.out_dim, o.num_classes)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        label = batch.get("label")
        if label is None:
            raise DataError("the supervised method needs labelled data (no 'label' in the batch)", "data")
        label = torch.as_tensor(label, device=batch["image"].device).reshape(-1).long()
        if label.min() < 0 or label.max() >= self.num_classes:
            raise DataError(f"labels must lie in [0, {self.num_classes - 1}], got {label.min().item()}..{label.max().item()}",
                            "method.num_classes")
        image = self.views(batch["image"], 1)[0] if self.augment_views else batch["image"]
        logits = self.head(self.encoder(image))
        loss = F.cross_entropy(logits, label)
        return {"loss": loss, "accuracy": (logits.argmax(1) == label).float().mean().detach()}
