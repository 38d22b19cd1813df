"""COVER (arXiv 2506.20850, ICCV 2025; official code YutingHe-list/COVER, 2D only): pixel-wise
vector contrastive learning. Features of two views must predict the dense displacement field
between them (L_vec) and agree position by position once aligned by the true field (L_con).

A random affine field is free ground truth: view b is the image warped by it, view a the image
with appearance changes only (:class:`~medrep.transforms.displacement.CoverViews`). The U-Net's
five dense levels feed a vector pyramid (:class:`~medrep.models.cover.VectorPyramid`) whose
composed full-resolution field is regressed onto the true one (:func:`~medrep.losses.cover_loss`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import torch
from torch import nn

from ..errors import RecipeError
from ..losses import cover_loss
from ..models import Backbone
from ..models.cover import VectorPyramid
from ..options import NonNegativeFloat, PositiveInt, Range
from ..transforms.displacement import CoverViews
from .base import Method
from .registry import register_method


@register_method("cover")
class COVER(Method):
    """COVER in 2D and 3D on any dense backbone (``model.name: unet``).

    Decisions (some correct the official code's faults):

    - ``neighbourhood`` (default 7, the paper note's best; the code uses 5): the side of the
      window each vector embedding unit searches, at every pyramid level.
    - ``heads`` per level coarse to fine (default 4,4,4,1,1) with ``head_dim`` 8, as the code.
    - views: spatial ranges default to (2D rotation 30 deg, scale 0.25-1.75,
      translation 0.3, shear 8.4 deg; 3D 15 deg, 0.75-1.25, 0.1, 10 deg); ``appearance`` overrides
      the appearance augmentation of view a (keys of ``APPEARANCE_DEFAULTS``). The recipe's
      ``augment`` section is not used: COVER's views are not SimCLR's.
    - L = L_vec + L_con, unweighted; L_con on the full-resolution decoder features, before any
      projection; every warp uses ``align_corners=True`` (the official code mixes conventions).
    - the learning-rate schedule is the engine's (the official code computes one and never uses it).
    """

    needs_dense: ClassVar[bool] = True

    @dataclass(frozen=True, kw_only=True)
    class Options(Method.Options):
        neighbourhood: Annotated[int, Range(ge=3)] = 7  # odd: VectorPyramid checks
        heads: Sequence[PositiveInt] = (4, 4, 4, 1, 1)
        head_dim: PositiveInt = 8
        # spatial ranges of the views; null: COVER's defaults for the encoder's spatial_dims
        rotate_deg: NonNegativeFloat | None = None
        scale: float | Sequence[float] | None = None
        translate: NonNegativeFloat | None = None
        shear_deg: Annotated[float, Range(ge=0, lt=90)] | None = None
        appearance: dict | None = None
        isotropic_scale: bool = False

    options: Options

    def __init__(self, encoder: Backbone, augment: nn.Module | None = None, **options: Any):
        super().__init__(encoder, augment, **options)
        o = self.options
        try:
            self.cover_views = CoverViews(encoder.spatial_dims, rotate_deg=o.rotate_deg, scale=o.scale, translate=o.translate,
                                          shear_deg=o.shear_deg, appearance=o.appearance, isotropic_scale=o.isotropic_scale)
        except RecipeError as exc:  # the views name their own option; the recipe user needs method.<option>
            message = str(exc).removeprefix(f"{exc.where}: ")
            raise RecipeError(message, f"method.{exc.where}") from exc
        except (TypeError, ValueError) as exc:
            raise RecipeError(str(exc), "method") from exc
        self.pyramid = VectorPyramid(encoder.spatial_dims, tuple(encoder.dense_channels), tuple(o.heads), o.head_dim, o.neighbourhood)

    def predict(self, view_b: torch.Tensor, view_a: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Predicted field (view b reads view a at p + flow(p)) and both views' dense features."""
        b = view_b.shape[0]
        feats = self.encoder.dense(torch.cat([view_a, view_b]))
        fa, fb = [f[:b] for f in feats], [f[b:] for f in feats]
        flow, _ = self.pyramid(fb, fa)
        return flow, fb, fa

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        views = self.cover_views(batch["image"])
        flow, fb, fa = self.predict(views["view_b"], views["view_a"])
        return cover_loss(flow, views["flow"], views["mask"], fb[-1], fa[-1])
