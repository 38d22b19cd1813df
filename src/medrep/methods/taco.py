"""TaCo (arXiv 2604.05651): task-contrastive learning. The encoder embeds a whole task sample, an
(input, target) pair stacked on channels (:mod:`medrep.tasks.pairs`), and a multi-positive SupCon
loss pulls samples of one task together across images.

The paper's text could not be read; these choices are ours (METHODS.md, "TaCo: DECIDE"):

- Encoder: any registered 2D backbone over :data:`~medrep.tasks.pairs.PAIR_CHANNELS` channels
  (``model.in_channels: 6``; the GPU recipe uses ResNet-50 as the paper's summary says), a 2-layer
  projection head, cosine similarity at temperature 0.1.
- Positives (``positives``): ``task``, samples of the same task on other images (default), or
  ``task_dataset``, the same task on images of the same data set (a map that may separate data sets).
- Failure samples (``failures``): ``negative``, candidates in every denominator but never anchors or
  positives (default: a failure is "not this task", not a task of its own), or ``class``, each task's
  failures form a class of their own.
- No augmentation: the recipe's ``augment`` section is not used (rotation, flips, noise and
  brightness are tasks); the data layer's joint crop is the only one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..errors import RecipeError
from ..losses import supcon
from ..models import Backbone, MLPHead
from ..options import PositiveFloat, PositiveInt
from ..tasks.pairs import PAIR_CHANNELS
from .base import Method
from .registry import register_method


def task_classes(batch: dict, positives: str, failures: str, n_sets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(labels, negative_only)`` of a task batch under the two switches."""
    labels = batch["task"].long()
    if positives == "task_dataset":
        labels = labels * n_sets + batch["dataset"].long()
    failure = batch["failure"].bool()
    if failures == "class":
        # a class id past every true class: (label, failure) -> 2 * label + 1
        return 2 * labels + failure.long(), torch.zeros_like(failure)
    return labels, failure


@register_method("taco")
class TaCo(Method):
    supported_dims = (2,)
    needs_tasks = True

    @dataclass(frozen=True, kw_only=True)
    class Options(Method.Options):
        temperature: PositiveFloat = 0.1
        proj_hidden_dim: PositiveInt = 2048
        proj_dim: PositiveInt = 128
        proj_layers: PositiveInt = 2
        positives: Literal["task", "task_dataset"] = "task"
        failures: Literal["negative", "class"] = "negative"
        #: an upper bound on data-set ids (labels are task * max_datasets + dataset under task_dataset)
        max_datasets: PositiveInt = 64

    options: Options

    def __init__(self, encoder: Backbone, augment: nn.Module | None = None, **options: Any):
        super().__init__(encoder, None, **options)  # no augmentation: see the module docstring
        channels = encoder.config.get("in_channels")
        if channels != PAIR_CHANNELS:
            raise RecipeError(f"taco reads (input, target) pairs of {PAIR_CHANNELS} channels; set model.in_channels={PAIR_CHANNELS} "
                              f"(got {channels})", "model.in_channels")
        o = self.options
        self.projector = MLPHead(encoder.out_dim, o.proj_hidden_dim, o.proj_dim, num_layers=o.proj_layers)

    def embed(self, pairs: torch.Tensor) -> torch.Tensor:
        """The projection of a batch of stacked pairs (what the loss compares)."""
        return self.projector(self.encoder(pairs))

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        for key in ("task", "dataset", "failure"):
            if key not in batch:
                raise RecipeError(f"taco trains on task samples (batch key {key!r} missing); set data.source: tasks", "data.source")
        o = self.options
        labels, negative = task_classes(batch, o.positives, o.failures, o.max_datasets)
        loss = supcon(self.embed(batch["image"]), labels, negative, temperature=o.temperature)
        return {"loss": loss, "failure_fraction": batch["failure"].float().mean()}
