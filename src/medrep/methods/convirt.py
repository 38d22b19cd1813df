"""ConVIRT / CLIP (Zhang et al. 2020; Radford et al. 2021): images and their reports pulled together,
other pairs of the batch pushed apart, by a symmetric InfoNCE on projected embeddings.

The image encoder is any registered backbone (``model``; 2D or 3D); it is what ``pretrain``
exports. The text tower is a :class:`~medrep.models.text.TextEncoder` (offline: the packaged
all-MiniLM-L6-v2 unless ``text_model`` names a local folder) and stays in the checkpoint only, so
:func:`medrep.load_method` rebuilds the whole model for retrieval through
:meth:`ConVIRT.encode_image` and :meth:`ConVIRT.encode_text`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError, MedrepError, RecipeError
from ..losses import clip_loss
from ..losses.vlp_global import MAX_LOGIT_SCALE
from ..models import Backbone, MLPHead
from ..models.text import TextEncoder
from ..options import Fraction, NonNegativeInt, PositiveFloat, PositiveInt, Range
from .base import Method
from .registry import register_method

TextSampling = Literal["report", "sentence"]
#: TextEncoder's error fields -> this method's recipe options
_TEXT_OPTIONS = {
    "text.model": "method.text_model",
    "text.max_length": "method.max_length",
    "text.trainable_layers": "method.text_trainable_layers",
    "text.pooling": "method.text_pooling",
}


@register_method("convirt")
class ConVIRT(Method):
    """Contrastive image-report pretraining; the defaults are CLIP's loss with ConVIRT's heads.

    Decisions:

    - loss: :func:`medrep.losses.clip_loss` on the projections, gathered across processes
      (``gather``), so every image meets every report of the global batch. ``temperature`` 0.07
      with ``learn_temperature`` (CLIP: ``logit_scale`` learnt from ``log(1/0.07)``, its exp
      capped at 100) and ``i2t_weight`` 0.5. ConVIRT itself: ``temperature: 0.1``,
      ``learn_temperature: false``, ``i2t_weight: 0.75``. A learnt ``logit_scale`` is a 0-d
      parameter, so the engine puts it in the group without weight decay.
    - heads: :class:`~medrep.models.MLPHead` per modality to ``embed_dim`` (512, as ConVIRT),
      ``proj_layers`` 2 with hidden width ``proj_hidden_dim`` (ConVIRT's one-hidden-layer heads,
      with BatchNorm after the hidden layer, as every MLP head here); ``proj_layers: 1`` is
      CLIP's linear projection.
    - text tower: ``text_trainable_layers`` 2 of MiniLM's 6 layers, embeddings frozen. ConVIRT
      froze the embeddings and the first 6 of BERT's 12 layers; MiniLM is already a sentence
      encoder, and on a CPU the backward pass then stops after 2 layers. 3 mirrors ConVIRT's
      half, ``all`` fine-tunes everything. ``text_pooling`` mean (MiniLM's own) or cls;
      ``max_length`` 128 tokens.
    - texts: ``text_sampling: report`` embeds the whole report (CLIP, MedPix captions);
      ``sentence`` draws one sentence of each report per step, as ConVIRT did with findings and
      impressions.
    - images: one view per image through the recipe's ``augment`` (ConVIRT: crop, flip, affine,
      jitter, blur); set its strengths to 0 for none. Keep ``flip: false`` where reports say
      left and right.
    - logged besides ``loss``: ``i2t_acc`` (top-1 report of each image within the local batch)
      and ``logit_scale`` (the multiplier in use, ``1/temperature``); both come from tensors the
      loss needs anyway.
    """

    needs_text: ClassVar[bool] = True

    @dataclass(frozen=True, kw_only=True)
    class Options(Method.Options):
        embed_dim: PositiveInt = 512
        proj_hidden_dim: PositiveInt = 512
        proj_layers: PositiveInt = 2
        text_model: str | None = None  # a local model folder or a cached hub name; null: the packaged MiniLM
        text_trainable_layers: NonNegativeInt | Literal["all", "none"] = 2
        text_pooling: Literal["mean", "cls"] = "mean"
        max_length: Annotated[int, Range(ge=2)] = 128  # room for the special tokens
        temperature: PositiveFloat = 0.07
        learn_temperature: bool = True
        i2t_weight: Fraction = 0.5
        gather: bool = True
        text_sampling: TextSampling = "report"

    options: Options

    def __init__(self, encoder: Backbone, augment: nn.Module | None = None, **options: Any):
        super().__init__(encoder, augment, **options)
        o = self.options
        self.gather = o.gather
        self.learn_temperature = o.learn_temperature
        self.i2t_weight = o.i2t_weight
        self.text_sampling = o.text_sampling
        self.embed_dim = o.embed_dim
        try:
            self.text_encoder = TextEncoder(o.text_model, max_length=o.max_length, trainable_layers=o.text_trainable_layers,
                                            pooling=o.text_pooling)
        except MedrepError as exc:  # name the recipe option, not TextEncoder's argument
            if exc.where not in _TEXT_OPTIONS:
                raise
            raise RecipeError(str(exc).removeprefix(f"{exc.where}: "), _TEXT_OPTIONS[exc.where]) from exc
        self.image_projector = MLPHead(encoder.out_dim, o.proj_hidden_dim, o.embed_dim, num_layers=o.proj_layers)
        self.text_projector = MLPHead(self.text_encoder.out_dim, o.proj_hidden_dim, o.embed_dim, num_layers=o.proj_layers)
        init = torch.tensor(math.log(1.0 / o.temperature))
        if self.learn_temperature:
            self.logit_scale = nn.Parameter(init)
        else:  # a buffer: in the checkpoint, never in the optimiser (DDP needs every parameter to get a gradient)
            self.register_buffer("logit_scale", init)

    def _embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_projector(self.encoder(images))

    def _embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self.text_projector(self.text_encoder(list(texts))["sentence"])

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` prepared images -> ``(B, embed_dim)`` unit vectors (no augmentation).

        Call in eval mode (the heads' BatchNorm then uses its running statistics), under
        ``torch.no_grad()`` for retrieval.
        """
        return F.normalize(self._embed_images(images), dim=1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """A list of ``B`` texts -> ``(B, embed_dim)`` unit vectors, on the model's device."""
        return F.normalize(self._embed_texts(texts), dim=1)

    def _texts(self, batch: dict) -> list[str]:
        if "text" not in batch:
            raise DataError(f"{self.name} needs image-report batches (a 'text' per image); use an image-text data.source", "data.source")
        texts = list(batch["text"])
        if self.text_sampling == "sentence":
            for i, sentences in enumerate(batch.get("sentences") or [[]] * len(texts)):
                if sentences:  # a report with no sentence left after cleaning keeps its whole text
                    texts[i] = sentences[int(torch.randint(len(sentences), ()))]
        return texts

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        texts = self._texts(batch)
        (images,) = self.views(batch["image"], n=1)
        img = self._embed_images(images)
        txt = self._embed_texts(texts)
        loss = clip_loss(img, txt, self.logit_scale, gather=self.gather, i2t_weight=self.i2t_weight)
        with torch.no_grad():
            sim = F.normalize(img.float(), dim=1) @ F.normalize(txt.float(), dim=1).T
            i2t_acc = (sim.argmax(1) == torch.arange(len(sim), device=sim.device)).float().mean()
            scale = self.logit_scale.detach().float().exp().clamp(max=MAX_LOGIT_SCALE)
        return {"loss": loss, "i2t_acc": i2t_acc, "logit_scale": scale}
