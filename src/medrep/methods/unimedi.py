"""UniMedI (He et al., ECCV 2024): reports as the common space of 2D images and 3D volumes, one ViT
for both, text-related slices picked by an EMA teacher's attention, and self-distillation.

The paper's full text could not be read and no code is public (see ``METHODS.md``); this is the
first open implementation, and every choice below the abstract is ours, each an option.

One step (a batch is a list of parts, one per data source, see :mod:`medrep.data.datasets.mixed`):

1. each part gets one augmented view (the recipe's ``augment``, built for the part's dimensionality);
2. a volume's slices are scored by the EMA teacher ([CLS]-to-patch attention over its 3D tokens,
   averaged over heads and layers, then over each slab's tokens; no gradient) and the ``select_k``
   best (``model.select_k``) are tokenised in 2D and joined to the volume's 3D tokens in one
   sequence; ``selection: random`` or ``central`` replaces the teacher's choice (ablation); 2D
   images skip this. The paper calls the selection text-guided: the report enters it only through
   the [CLS] token, which CLIP pulls toward the report; no text is read when selecting;
3. the teacher encodes the whole sequence; the student encodes it with ``mask_ratio`` of its tokens
   removed (a random subset per sample; removal, not mask tokens, halves the student's cost);
4. losses, each with its weight:
   - ``clip_weight``: :func:`~medrep.losses.clip_loss` between the student's projected [CLS] and the
     report, over the images of every part that has text, 2D and 3D in one matrix (that is what
     makes the report space common), gathered across processes; learnt temperature from 0.07;
   - ``cls_weight``: :func:`~medrep.losses.dino_loss` between student and teacher [CLS] through
     DINO heads (``dino_out`` prototypes), student temperature 0.1, teacher 0.04, centre momentum
     0.9 (:func:`~medrep.losses.dino_center`, reduced over processes);
   - ``patch_weight``: the same on patch tokens (own head and centre, teacher temperature
     ``patch_teacher_temperature``), at the student's kept positions: the student saw half the
     context, the teacher all of it (with removal there is no output at removed positions, as
     iBOT's mask tokens would give).
5. after the optimiser step the teacher (encoder and DINO heads) follows the student by EMA,
   momentum ``ema`` 0.996 rising to 1 on a cosine schedule (DINO's).

Volumes without a report (``text`` None) take part in self-distillation only when
``volumes_without_report: distill``; a 2D image without a report is refused while ``clip_weight``
is on (a 2D image has nothing else to learn from here but distillation, and the recipe should
say so by turning CLIP off). The exported encoder is the student's ViT (:mod:`medrep.models.unified_vit`),
whose ``forward`` selects its own ``select_k`` slices for a volume; the text tower and heads stay in
the checkpoint for :func:`medrep.load_method`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from itertools import chain
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..errors import DataError, RecipeError
from ..losses import clip_loss
from ..losses.dino import dino_center, dino_loss
from ..models import Backbone, DINOHead
from ..models.ema import cosine_momentum, ema_update
from ..models.unified_vit import UnifiedViT, check_slices
from ..options import Fraction, NonNegativeFloat, PositiveFloat, PositiveInt
from .convirt import ConVIRT
from .registry import register_method


@register_method("unimedi")
class UniMedI(ConVIRT):
    """See the module docstring; text tower, projections and CLIP options are ConVIRT's."""

    needs_text: ClassVar[bool] = True

    @dataclass(frozen=True, kw_only=True)
    class Options(ConVIRT.Options):
        selection: Literal["attentive", "random", "central"] = "attentive"
        mask_ratio: Fraction = 0.5
        clip_weight: NonNegativeFloat = 1.0
        cls_weight: NonNegativeFloat = 1.0
        patch_weight: NonNegativeFloat = 1.0
        dino_hidden_dim: PositiveInt = 2048
        dino_bottleneck_dim: PositiveInt = 256
        dino_out: PositiveInt = 8192
        student_temperature: PositiveFloat = 0.1
        teacher_temperature: PositiveFloat = 0.04
        patch_teacher_temperature: PositiveFloat = 0.04
        center_momentum: Fraction = 0.9
        ema: Fraction = 0.996
        volumes_without_report: Literal["distill", "error"] = "distill"

    options: Options

    def __init__(self, encoder: Backbone, augment: nn.Module | None = None, **options: Any):
        if not isinstance(getattr(encoder, "net", None), UnifiedViT):
            raise RecipeError(f"unimedi needs the shared 2D/3D ViT (model.name: vit2d3d), got {encoder.config.get('name')!r}",
                              "model.name")
        super().__init__(encoder, augment, **options)
        o = self.options
        if o.clip_weight + o.cls_weight + o.patch_weight == 0:
            raise RecipeError("every loss weight is 0: nothing to train", "method.clip_weight")
        self.select_k = int(encoder.config.get("select_k", 0))
        hidden = encoder.out_dim
        self.cls_head = DINOHead(hidden, o.dino_hidden_dim, o.dino_bottleneck_dim, o.dino_out)
        self.patch_head = DINOHead(hidden, o.dino_hidden_dim, o.dino_bottleneck_dim, o.dino_out)
        self.teacher = copy.deepcopy(encoder).requires_grad_(False)
        self.teacher_cls_head = copy.deepcopy(self.cls_head).requires_grad_(False)
        self.teacher_patch_head = copy.deepcopy(self.patch_head).requires_grad_(False)
        self.register_buffer("cls_center", torch.zeros(o.dino_out))
        self.register_buffer("patch_center", torch.zeros(o.dino_out))
        self.momentum = o.ema
        self._ema_step = -1

    # selection ---------------------------------------------------------------------------------
    @torch.no_grad()
    def choose_slices(self, volumes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(slabs (B, k), teacher scores (B, gz) or None)`` for a batch of volumes."""
        net: UnifiedViT = self.teacher.net
        k, pd = self.select_k, net.patch_depth
        check_slices(volumes, k, pd, "model.select_k")
        gz = volumes.shape[-1] // pd
        if self.options.selection == "attentive":
            scores = net.slice_scores(volumes)
            return net.select(volumes, k, scores), scores
        if self.options.selection == "random":
            return torch.rand(len(volumes), gz, device=volumes.device).topk(k, dim=1).indices.sort(dim=1).values, None
        start = (gz - k) // 2
        return torch.arange(start, start + k, device=volumes.device).expand(len(volumes), -1), None

    # one part ----------------------------------------------------------------------------------
    def _view(self, images: torch.Tensor) -> torch.Tensor:
        if self.augment is None:
            return images
        with torch.no_grad():
            return self.augment.for_dims(images.ndim - 2)(images) if hasattr(self.augment, "for_dims") else self.augment(images)

    def _part(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Student and teacher outputs for one homogeneous part (all 2D or all 3D)."""
        images = self._view(images)
        slabs = self.choose_slices(images)[0] if images.ndim == 5 and self.select_k else None
        student: UnifiedViT = self.encoder.net
        tokens = student.sequence(images, slabs)
        b, n, _ = tokens.shape
        n_keep = max(1, round(n * (1 - self.options.mask_ratio)))
        keep = torch.rand(b, n, device=tokens.device).argsort(dim=1)[:, :n_keep].sort(dim=1).values
        out = student.encode(tokens.gather(1, keep[..., None].expand(-1, -1, tokens.shape[-1])))[0]
        with torch.no_grad():
            teacher_out = self.teacher.net.encode(self.teacher.net.sequence(images, slabs))[0]
            teacher_patches = teacher_out[:, 1:].gather(1, keep[..., None].expand(-1, -1, teacher_out.shape[-1]))
        return {"cls": out[:, 0], "patches": out[:, 1:], "teacher_cls": teacher_out[:, 0], "teacher_patches": teacher_patches}

    # the step ----------------------------------------------------------------------------------
    def _parts(self, batch: dict) -> list[dict]:
        parts = batch["parts"] if "parts" in batch else [batch | {"name": "data"}]
        for part in parts:
            texts = part.get("text")
            missing = texts is None or any(t is None for t in texts)
            part["has_text"] = not missing
            if missing and part["image"].ndim == 4 and self.options.clip_weight > 0:
                raise DataError(f"part {part['name']!r} has 2D images without a report, which the CLIP loss needs "
                                "(give every 2D image a report, or set method.clip_weight: 0)", "data.parts")
            if missing and part["image"].ndim == 5 and self.options.volumes_without_report == "error":
                raise DataError(f"part {part['name']!r} has volumes without a report "
                                "(method.volumes_without_report: distill lets them train by self-distillation)", "data.parts")
        return parts

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        o = self.options
        parts = self._parts(batch)
        outs = [self._part(part["image"]) for part in parts]
        logs: dict[str, torch.Tensor] = {}
        loss = outs[0]["cls"].new_zeros(())
        texted = [(part, out) for part, out in zip(parts, outs) if part["has_text"]]
        if o.clip_weight > 0 and texted:
            img = self.image_projector(torch.cat([out["cls"] for _, out in texted]))
            txt = self._embed_texts([t for part, _ in texted for t in self._texts(part)])
            logs["clip"] = clip_loss(img, txt, self.logit_scale, gather=self.gather, i2t_weight=self.i2t_weight)
            loss = loss + o.clip_weight * logs["clip"]
        if o.cls_weight > 0:
            student = self.cls_head(torch.cat([out["cls"] for out in outs]))
            with torch.no_grad():
                teacher = self.teacher_cls_head(torch.cat([out["teacher_cls"] for out in outs]))
            logs["dino_cls"] = dino_loss(student, teacher, self.cls_center, o.student_temperature, o.teacher_temperature)
            self.cls_center.copy_(dino_center(self.cls_center, teacher, o.center_momentum, self.gather))
            loss = loss + o.cls_weight * logs["dino_cls"]
        if o.patch_weight > 0:
            student = self.patch_head(torch.cat([out["patches"].flatten(0, 1) for out in outs]))
            with torch.no_grad():
                teacher = self.teacher_patch_head(torch.cat([out["teacher_patches"].flatten(0, 1) for out in outs]))
            logs["dino_patch"] = dino_loss(student, teacher, self.patch_center, o.student_temperature, o.patch_teacher_temperature)
            self.patch_center.copy_(dino_center(self.patch_center, teacher, o.center_momentum, self.gather))
            loss = loss + o.patch_weight * logs["dino_patch"]
        loss = loss + self._unused(o)
        return {"loss": loss, **{k: v.detach() for k, v in logs.items()}, "ema": torch.tensor(self.momentum)}

    def _unused(self, o: Options) -> torch.Tensor:
        """0 times the parameters a step left out (a switched-off loss's head, the text tower when no
        part had text, a tokenizer no part used): DDP without ``find_unused_parameters`` needs every
        parameter in the graph, and this keeps them there at no cost to the gradient."""
        zero = self.cls_head.prototypes.new_zeros(())
        for p in self.parameters():
            if p.requires_grad:
                zero = zero + 0.0 * p.sum()
        return zero

    # teacher -----------------------------------------------------------------------------------
    def momentum_at(self, step: int, max_steps: int) -> float:
        return cosine_momentum(self.options.ema, step, max_steps)

    @torch.no_grad()
    def on_train_batch_end(self, step: int, max_steps: int) -> None:
        if step <= self._ema_step:
            return
        self._ema_step = step
        self.momentum = self.momentum_at(step, max_steps)
        students = chain(self.encoder.parameters(), self.cls_head.parameters(), self.patch_head.parameters())
        teachers = chain(self.teacher.parameters(), self.teacher_cls_head.parameters(), self.teacher_patch_head.parameters())
        ema_update(students, teachers, self.momentum)
