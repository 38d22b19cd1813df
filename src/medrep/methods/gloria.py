"""GLoRIA (Huang et al. 2021): ConVIRT's global image-report loss plus a local one that matches every
word of a report with an attention-weighted mix of the image's sub-regions.

Built on :class:`~medrep.methods.convirt.ConVIRT` (same text tower, global heads, options and
``encode_image``/``encode_text`` for retrieval and zero-shot); adds the region and word
projections and :func:`medrep.losses.gloria_local_loss`. Official code followed:
``marshuang80/gloria`` ``gloria/models/gloria_model.py`` (``calc_loss``, ``_calc_local_loss``),
``gloria/models/vision_model.py`` (``ImageEncoder``: ``global_embedder``, ``local_embedder``,
``resnet_forward``), ``gloria/models/text_model.py`` (``BertEncoder.aggregate_tokens``) and
``configs/pretrain/chexpert_gloria_pretrain_config.yaml``.

The word helpers here (:func:`word_pooling`, :func:`text_features`) are shared with MGCA.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError
from ..losses import clip_loss, gloria_local_loss
from ..losses.vlp_global import MAX_LOGIT_SCALE
from ..models import Backbone
from ..models.text import TextEncoder, WordSpan
from ..options import NonNegativeFloat, PositiveFloat, PositiveInt
from .convirt import ConVIRT
from .registry import register_method

LocalAggregation = Literal["sum", "mean"]


def word_pooling(spans: list[list[WordSpan]], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, W, T)`` averaging matrix from tokens to words and the ``(B, W)`` word mask.

    Row ``[b, w]`` holds ``1/n`` on the ``n`` sub-word tokens of word ``w`` of text ``b``
    (:meth:`TextEncoder.word_spans`: special tokens belong to no word), so ``matrix @ tokens``
    is each word's mean token; ``W`` is the most words of any text, shorter texts are padded
    (zero rows, mask False). ``matrix > 0`` sums instead (MGCA's word attention).
    """
    if any(not words for words in spans):
        raise DataError("a text has no word left within max_length tokens", "method.max_length")
    b_idx, w_idx, t_idx, values = [], [], [], []
    for b, words in enumerate(spans):
        for w, span in enumerate(words):
            b_idx += [b] * len(span.tokens)
            w_idx += [w] * len(span.tokens)
            t_idx += list(span.tokens)
            values += [1.0 / len(span.tokens)] * len(span.tokens)
    matrix = torch.zeros(len(spans), max(len(words) for words in spans), length)
    matrix[b_idx, w_idx, t_idx] = torch.tensor(values)
    mask = torch.zeros(matrix.shape[:2], dtype=torch.bool)
    mask[b_idx, w_idx] = True
    return matrix, mask


def text_features(encoder: TextEncoder, texts: list[str]) -> dict[str, torch.Tensor]:
    """One pass of the text tower: its ``tokens``, ``mask``, ``sentence`` plus ``words`` ``(B, W, D)``
    (mean of each word's sub-word tokens), ``word_mask`` ``(B, W)`` and the pooling ``matrix``."""
    out = encoder(texts)
    matrix, word_mask = word_pooling(encoder.word_spans(texts), out["tokens"].shape[1])
    matrix = matrix.to(out["tokens"])
    return {**out, "words": matrix @ out["tokens"], "word_mask": word_mask.to(out["tokens"].device), "matrix": matrix}


@torch.no_grad()
def i2t_accuracy(img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
    """Top-1 report of each image within the local batch."""
    sim = F.normalize(img.float(), dim=1) @ F.normalize(txt.float(), dim=1).T
    return (sim.argmax(1) == torch.arange(len(sim), device=sim.device)).float().mean()


@register_method("gloria")
class GLoRIA(ConVIRT):
    """Global + local image-report contrastive pretraining; defaults follow GLoRIA's pretraining config.

    Decisions:

    - global loss: :func:`medrep.losses.clip_loss` (gathered) on the heads of ConVIRT,
      ``proj_layers`` 1 (GLoRIA's ``global_embedder`` is one linear layer; its text side has
      none, ours a linear head too), cosine x 10: ``temperature`` 0.1, ``learn_temperature``
      false (GLoRIA's ``temp3``; true learns it from there, a 0-d parameter).
    - local loss: :func:`medrep.losses.gloria_local_loss` with ``temp_attention`` 4,
      ``temp_similarity`` 5, ``temp_local`` 10 (GLoRIA's temp1/2/3) and ``local_agg`` sum.
      Regions: the encoder's last feature map (:meth:`Backbone.forward_with_local`, one pass),
      projected to ``embed_dim`` by a bias-free linear layer (GLoRIA's 1x1 ``local_embedder``).
      GLoRIA takes ResNet-50's ``layer3`` (19x19 at 299 px), we the last stage (4x4 for the
      ResNet-18 recipe at 128 px): coarser regions, no extra tap into the network.
    - words: sub-word tokens averaged into words (:func:`word_pooling`), special tokens
      excluded, then a linear projection to ``embed_dim``. GLoRIA sums the pieces and the last
      4 BERT layers and keeps [SEP] among the words (``cap_lens`` + 1); we take the last layer
      of the shared text tower and a mean, so long words do not get larger vectors.
    - ``loss = global + local_weight * local``, GLoRIA's weights 1 and 1; its ``calc_loss``
      sums both directions of each loss where ours average them, so the ratio is the same.
    - logged: ``loss_global``, ``loss_local``, ``i2t_acc``, ``logit_scale``.
    """

    needs_local_features: ClassVar[bool] = True

    @dataclass(frozen=True, kw_only=True)
    class Options(ConVIRT.Options):
        embed_dim: PositiveInt = 768
        proj_layers: PositiveInt = 1
        temperature: PositiveFloat = 0.1
        learn_temperature: bool = False
        # not an option: GLoRIA's global loss weighs both directions alike
        i2t_weight: float = field(default=0.5, init=False)
        local_weight: NonNegativeFloat = 1.0
        temp_attention: PositiveFloat = 4.0
        temp_similarity: PositiveFloat = 5.0
        temp_local: PositiveFloat = 10.0
        local_agg: LocalAggregation = "sum"

    options: Options

    def __init__(self, encoder: Backbone, augment: nn.Module | None = None, **options: Any):
        super().__init__(encoder, augment, **options)
        o = self.options
        self.local_weight = o.local_weight
        self.temps = (o.temp_attention, o.temp_similarity, o.temp_local)
        self.local_agg = o.local_agg
        self.region_projector = nn.Linear(encoder.local_dim, o.embed_dim, bias=False)
        self.word_projector = nn.Linear(self.text_encoder.out_dim, o.embed_dim, bias=False)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        texts = self._texts(batch)
        (images,) = self.views(batch["image"], n=1)
        pooled, regions = self.encoder.forward_with_local(images)
        text = text_features(self.text_encoder, texts)
        img = self.image_projector(pooled)
        txt = self.text_projector(text["sentence"])
        loss_global = clip_loss(img, txt, self.logit_scale, gather=self.gather)
        loss_local = gloria_local_loss(self.word_projector(text["words"]), text["word_mask"], self.region_projector(regions),
                                       *self.temps, gather=self.gather, agg=self.local_agg)
        loss = loss_global + self.local_weight * loss_local
        scale = self.logit_scale.detach().float().exp().clamp(max=MAX_LOGIT_SCALE)
        return {"loss": loss, "loss_global": loss_global.detach(), "loss_local": loss_local.detach(),
                "i2t_acc": i2t_accuracy(img, txt), "logit_scale": scale}
