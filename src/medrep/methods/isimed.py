"""ISImed (arXiv 2410.16947; official code NabJa/isimed): crop embeddings whose pairwise distances
match the crops' physical distances.

Anatomy varies little between patients, so an embedding that knows where a crop lies must
capture what it shows. Each batch holds K random crops of each of B images (``data.crops``, see
:class:`medrep.data.CropDataset`) with their centres in mm; the loss regresses the matrix
``cdist(z, z)`` onto ``cdist(c, c) / distance_scale`` (:func:`medrep.losses.isimed_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..errors import DataError
from ..losses import isimed_loss
from ..models import Backbone
from ..options import NonNegativeFloat, PositiveFloat, PositiveInt
from .base import Method
from .registry import register_method


@register_method("isimed")
class ISImed(Method):
    """ISImed, 2D and 3D, with distances in millimetres.

    Kept from the official code: no projector, the backbone output is the embedding (3D default
    backbone MONAI DenseNet-121, 1024-d, on 32^3 crops, 16 crops per volume; 2D: ResNet-18);
    ``MSE(cdist(z, z), cdist(c, c))``. Our decisions:

    - distances in mm: crop centres come from each file's affine (or ``index * spacing``), so
      anisotropic voxels and differently sampled scans are handled; 2D files without a physical
      spacing (PNG) count one pixel as the unit.
    - ``distance_scale`` (mm per embedding unit, default 10): targets are divided by it, so one
      unit is 1 cm. Crops of a head or trunk lie 0-300 mm apart, i.e. 0-30 units, the order of the
      distances between crop embeddings of the default encoders at initialisation (measured
      ~15-25 for DenseNet-121 at 32^3), so training starts near the right scale and the MSE
      stays O(1-100). Raw mm (the official code, voxel units) gives losses of 1e3-1e4 that
      lean on gradient clipping; 50 mm would squeeze a whole brain into ~3 units.
    - ``pairs``: ``same_image`` (default) compares only crops of one image; ``all`` compares
      every pair in the batch, for registered data (the official choice). ``same_image`` needs
      no gathering across processes; ``all`` gathers with gradients (``gather``).
    - anti-collapse: the official KL term is invalid, so it is replaced by an optional
      VICReg-style variance hinge (``var_weight``, default 0; ``var_target`` default
      ``1/sqrt(dim)``). Default 0 because the distance loss itself cannot collapse (distinct
      crops must stay apart by their physical distances; collapsing costs the mean squared
      target), and a VICReg hinge at its usual target of 1 per dimension would demand an
      expected squared distance of ``2 * dim`` units^2 (~45 units for 1024-d), contradicting the
      targets. The small default target only keeps dimensions from dying.
    - ``embed_dim``: optional linear head on the backbone output (default none, as the official
      code; it is not needed, the loss constrains only distances).
    - augmentation: the crops themselves are the signal, so there are no views and no spatial
      augmentation (a flip, rotation or crop would move the content away from its recorded
      centre). ``intensity_augment`` (default off, as the official ``augment: False``) applies
      only the intensity, blur and noise parts of ``augment``, per crop, without gradients.
    """

    @dataclass(frozen=True, kw_only=True)
    class Options(Method.Options):
        distance_scale: PositiveFloat = 10.0  # mm per embedding unit
        pairs: Literal["same_image", "all"] = "same_image"
        var_weight: NonNegativeFloat = 0.0
        var_target: PositiveFloat | None = None
        embed_dim: PositiveInt | None = None
        intensity_augment: bool = False
        gather: bool = True

    options: Options

    def __init__(self, encoder: Backbone, augment: nn.Module | None = None, **options: Any):
        super().__init__(encoder, augment, **options)
        o = self.options
        self._loss_options = dict(distance_scale=o.distance_scale, pairs=o.pairs, var_weight=o.var_weight,
                                  var_target=o.var_target, gather=o.gather)
        self.head = nn.Linear(encoder.out_dim, o.embed_dim) if o.embed_dim is not None else nn.Identity()
        self.intensity_augment = o.intensity_augment

    @torch.no_grad()
    def _intensity(self, x: torch.Tensor) -> torch.Tensor:
        """The augment's intensity, blur and noise parts only (never its crop/rotate/flip/cutout)."""
        for name in ("intensity", "blur", "noise"):
            part = getattr(self.augment, name, None)
            if part is not None and not getattr(part, "is_identity", False):
                x = part(x)
        return x

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        if "coords" not in batch or "group" not in batch:
            raise DataError("isimed trains on crops with their centres: set data.crops in the recipe", "data.crops")
        x, coords = batch["image"], batch["coords"]
        if coords.shape[-1] != self.spatial_dims:
            raise DataError(f"crop centres have {coords.shape[-1]} coordinates but the encoder is {self.spatial_dims}D", "data.crops")
        if self.intensity_augment and self.augment is not None:
            x = self._intensity(x)
        z = self.embed(x)
        return isimed_loss(z, coords, batch["group"], **self._loss_options)
