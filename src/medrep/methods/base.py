"""What every method is: an ``nn.Module`` with an ``encoder`` and ``training_step(batch) -> losses``.

The engine knows nothing of any method; it calls ``training_step`` and optimises ``loss``, and it
calls ``on_train_batch_end`` so that methods with a momentum teacher (BYOL) can update it.

A method's recipe options (``method.*``) are the fields of its nested ``Options`` dataclass
(frozen, keyword-only, typed with :mod:`medrep.options` annotations). ``Method.__init__`` checks
the keywords it is given against them and keeps the result in ``self.options``; a subclass's
``Options`` subclasses its parent's and states only the fields it adds or whose default changes.
What a method needs from its data or encoder is declared as class variables, so the engine and
the recipe loader read them without building anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import RecipeError
from ..models import Backbone
from ..options import check_options


class Method(nn.Module):
    name: ClassVar[str] = ""
    #: trains on image-report pairs: the engine refuses an image-only ``data.source``
    needs_text: ClassVar[bool] = False
    #: trains on TaCo's task samples: the engine refuses any source that is not of kind ``tasks``, and the reverse
    needs_tasks: ClassVar[bool] = False
    #: uses the encoder's sub-region features (:meth:`Backbone.forward_with_local`)
    needs_local_features: ClassVar[bool] = False
    #: uses dense encoder-decoder features (``encoder.dense``, the unet backbone)
    needs_dense: ClassVar[bool] = False
    #: the encoder dimensionalities (``model.spatial_dims``) the method trains with
    supported_dims: ClassVar[tuple[int, ...]] = (2, 3)

    @dataclass(frozen=True, kw_only=True)
    class Options:
        """No options; a method's own ``Options`` subclasses its parent's."""

    options: Options

    def __init__(self, encoder: Backbone, augment: nn.Module | None = None, **options: Any):
        super().__init__()
        self.options = type(self).Options(**check_options(type(self).Options, options, "method.", self.name or type(self).__name__))
        self._check_encoder(encoder)
        self.encoder = encoder
        self.augment = augment

    def _check_encoder(self, encoder: Backbone) -> None:
        model = encoder.config.get("name", type(encoder).__name__)
        if encoder.spatial_dims not in self.supported_dims:
            raise RecipeError(f"{self.name} trains in {' or '.join(map(str, self.supported_dims))}D only, "
                              f"got {model} with spatial_dims={encoder.spatial_dims}", "model.spatial_dims")
        if self.needs_local_features and encoder.local_dim is None:
            raise RecipeError(f"{self.name} needs sub-region features, which {model} lacks; use a resnet, vit or densenet121", "model.name")
        if self.needs_dense and not (hasattr(encoder, "dense") and hasattr(encoder, "dense_channels")):
            raise RecipeError(f"{self.name} needs a dense encoder-decoder backbone (unet), got {model!r}", "model.name")

    @property
    def spatial_dims(self) -> int:
        return self.encoder.spatial_dims

    @torch.no_grad()
    def views(self, image: torch.Tensor, n: int = 2) -> list[torch.Tensor]:
        """``n`` independently augmented views of a batch; no gradients flow into augmentation."""
        if self.augment is None:
            return [image] * n
        return [self.augment(image) for _ in range(n)]

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def on_train_batch_end(self, step: int, max_steps: int) -> None:
        """Called after each optimiser step (``step`` counts optimiser steps)."""
