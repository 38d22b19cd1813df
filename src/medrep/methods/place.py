"""PLACE (arXiv 2506.10573): pathology-level image-report alignment, plus a report-conditioned
patch-correlation proxy task, on top of ConVIRT's global image-report loss.

Only the paper's abstract could be read and no code was published: this is the first open
implementation, and everything below the abstract's names is our design, each choice an option.

- **Visual pathology observations** (the paper's V-PORs): ``queries`` learnable query tokens read
  the image tower's local tokens (:meth:`Backbone.forward_with_local`: ResNet feature-map cells,
  ViT patch tokens, 2D or 3D) through :class:`~medrep.models.place.ObservationExtractor`, a
  ``decoder_layers``-layer decoder (self-attention over queries, cross-attention to the tokens,
  MLP) of width ``decoder_width``.
- **Textual observations** (T-PORs): one per report sentence (the data pipeline's
  :func:`~medrep.data.io.reports.split_sentences`), the mean of that sentence's sub-word token
  states from *one* pass of the text tower over the report (so a sentence is read in its report's
  context, and the tower runs once per report, not once per sentence). At most ``max_sentences``
  per report, in report order; the rest are cut and counted (logged as ``sentences_cut``); a
  sentence that ``max_length`` truncation leaves without a token is masked and counted the same way.
- **Alignment** (PCMA): both sides are projected linearly to ``observation_dim``; each sentence is
  matched to its observation (``match``: highest cosine, or ``hungarian``: one-to-one while a report
  has no more sentences than queries, else at most ceil(S/Q) sentences per query; no gradient
  through the choice) and :func:`medrep.losses.pcma_loss` pulls matched pairs together, other
  images' pairs apart (symmetric InfoNCE, ``pcma_temperature`` 0.1, gathered across processes).
- **Correlation exploration** (CCE): the image is masked (``mask_ratio`` 0.5 of the cells of the
  encoder's token grid set to 0, :func:`~medrep.models.place.mask_patches`) and encoded again; its
  tokens attend to the report's token states (:class:`~medrep.models.place.CorrelationPredictor`)
  and predict the cosine Gram of the *full* view's tokens (stop-gradient target), MSE off the
  diagonal (:func:`medrep.losses.cce_loss`). The report has to supply what the mask removed.
- **Global loss**: ConVIRT's (CLIP loss on pooled projections, gathered), kept because retrieval
  and zero-shot read it; ``encode_image``/``encode_text`` are ConVIRT's, so every image-report
  evaluation runs unchanged.
- ``loss = global_weight * global + alignment_weight * pcma + correlation_weight * cce`` (all 1).
  Switches: ``alignment: false`` and ``correlation: false`` remove a term *and its modules* (DDP
  then sees no unused parameter); with both off only ConVIRT's loss is left, on the report's first
  ``max_sentences`` sentences.
- Texts: always the whole report (``text_sampling`` is not an option here): sentences need it.
- logged: ``loss_global``, ``loss_pcma``, ``loss_cce``, ``i2t_acc``, ``logit_scale``,
  ``sentences`` (mean per report, after the cut) and ``sentences_cut`` (in this batch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..errors import DataError
from ..losses import cce_loss, clip_loss, patch_correlation, pcma_loss
from ..losses.vlp_global import MAX_LOGIT_SCALE
from ..models import Backbone
from ..models.place import CorrelationPredictor, ObservationExtractor, mask_patches
from ..models.text import TextEncoder
from ..options import Fraction, NonNegativeFloat, PositiveFloat, PositiveInt
from .convirt import ConVIRT, TextSampling
from .gloria import i2t_accuracy
from .registry import register_method


class SentenceBatch:
    """Reports as texts for one pass of the text tower, and which tokens belong to which sentence.

    ``texts[b]`` is report ``b``'s first ``max_sentences`` sentences joined by spaces; ``matrix``
    ``(B, S, T)`` averages token states into sentence vectors (``1/n`` on the ``n`` tokens of a
    sentence); ``mask`` ``(B, S)`` marks real sentences; ``cut`` counts sentences beyond the limit
    or truncated away by ``max_length``.
    """

    def __init__(self, encoder: TextEncoder, sentences: Sequence[Sequence[str]], studies: Sequence[str], max_sentences: int):
        self.cut = 0
        texts, ranges = [], []
        for b, report in enumerate(sentences):
            report = [s for s in report if s.strip()]
            if not report:
                raise DataError(f"study {studies[b]}: the report has no sentence left after cleaning; "
                                "PLACE aligns sentences (leave such rows out of the data, or use data.skip_bad)", "data")
            self.cut += max(0, len(report) - max_sentences)
            report = list(report[:max_sentences])
            spans, start = [], 0
            for sentence in report:
                spans.append((start, start + len(sentence)))
                start += len(sentence) + 1
            texts.append(" ".join(report))
            ranges.append(spans)
        self.texts = texts
        # the tower's own tokenization (same padding, truncation, max_length), with character offsets
        encoded = encoder._encode(texts, return_offsets_mapping=True)
        self.tokens = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        length = encoded["input_ids"].shape[1]
        width = max(len(spans) for spans in ranges)
        owner = torch.full((len(texts), length), -1, dtype=torch.long)
        offsets = encoded["offset_mapping"]
        real = (offsets[..., 1] > offsets[..., 0]) & encoded["attention_mask"].bool()  # special and padding tokens: no sentence
        for b, spans in enumerate(ranges):
            bounds = torch.tensor(spans)  # (S, 2) character ranges, in order
            k = torch.searchsorted(bounds[:, 0].contiguous(), offsets[b, :, 0].contiguous(), right=True) - 1
            inside = real[b] & (k >= 0) & (offsets[b, :, 0] < bounds[k.clamp(min=0), 1])
            owner[b, inside] = k[inside]
        onehot = torch.zeros(len(texts), width, length)
        valid = owner >= 0
        b_idx, t_idx = valid.nonzero(as_tuple=True)
        onehot[b_idx, owner[valid], t_idx] = 1.0
        counts = onehot.sum(2)
        self.mask = counts > 0
        self.matrix = onehot / counts.clamp(min=1.0).unsqueeze(-1)
        # sentences truncated away by max_length: present in the report, no token left
        self.cut += sum(len(spans) for spans in ranges) - int(self.mask.sum())
        self.count = int(self.mask.sum())


def token_grid(spatial: Sequence[int], tokens: int) -> tuple[int, ...]:
    """The encoder's local-token grid for an input of shape ``spatial`` holding ``tokens`` cells:
    ResNets and ViTs shrink every axis by the same factor (stride or patch size)."""
    factor = (math.prod(spatial) / tokens) ** (1.0 / len(spatial))
    grid = tuple(max(1, round(s / factor)) for s in spatial)
    if math.prod(grid) != tokens:
        raise DataError(f"cannot place {tokens} local tokens on a grid over an input of {tuple(spatial)}; "
                        "use an image size the encoder divides evenly", "data.size")
    return grid


@register_method("place")
class PLACE(ConVIRT):
    """Global image-report loss + pathology-level alignment + report-conditioned correlation proxy.

    Decisions (each an option; see the module docstring for the reasoning): ``queries`` 16,
    ``decoder_layers`` 2, ``decoder_width`` 256, ``decoder_heads`` 8; ``max_sentences`` 16;
    ``observation_dim`` 256; ``match`` max; ``pcma_temperature`` 0.1; ``mask_ratio`` 0.5;
    ``correlation_layers`` 1 (cross-attention of masked-view tokens to report tokens); all loss
    weights 1; the global part is ConVIRT's (``temperature`` 0.07 learnt, both directions alike).
    """

    needs_local_features: ClassVar[bool] = True

    @dataclass(frozen=True, kw_only=True)
    class Options(ConVIRT.Options):
        # not an option: PLACE reads every sentence of the whole report
        text_sampling: TextSampling = field(default="report", init=False)
        queries: PositiveInt = 16
        decoder_layers: PositiveInt = 2
        decoder_width: PositiveInt = 256
        decoder_heads: PositiveInt = 8
        max_sentences: PositiveInt = 16
        observation_dim: PositiveInt = 256
        match: Literal["max", "hungarian"] = "max"
        pcma_temperature: PositiveFloat = 0.1
        mask_ratio: Fraction = 0.5
        correlation_layers: PositiveInt = 1
        alignment: bool = True
        correlation: bool = True
        global_weight: NonNegativeFloat = 1.0
        alignment_weight: NonNegativeFloat = 1.0
        correlation_weight: NonNegativeFloat = 1.0

    options: Options

    def __init__(self, encoder: Backbone, augment: nn.Module | None = None, **options: Any):
        super().__init__(encoder, augment, **options)
        o = self.options
        if o.alignment:
            self.extractor = ObservationExtractor(encoder.local_dim, width=o.decoder_width, queries=o.queries,
                                                  layers=o.decoder_layers, heads=o.decoder_heads)
            self.observation_projector = nn.Linear(o.decoder_width, o.observation_dim)
            self.sentence_projector = nn.Linear(self.text_encoder.out_dim, o.observation_dim)
        if o.correlation:
            self.correlator = CorrelationPredictor(encoder.local_dim, self.text_encoder.out_dim, width=o.decoder_width,
                                                   heads=o.decoder_heads, layers=o.correlation_layers)

    def _sentences(self, batch: dict) -> SentenceBatch:
        self._texts(batch)  # the image-report check
        sentences = batch.get("sentences")
        if sentences is None:
            raise DataError(f"{self.name} needs the report's sentences; use an image-text data.source", "data.source")
        studies = batch.get("study") or [str(i) for i in range(len(sentences))]
        return SentenceBatch(self.text_encoder, sentences, studies, self.options.max_sentences)

    def observations(self, local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Local tokens ``(B, N, C)`` -> projected observations ``(B, Q, observation_dim)`` and the
        queries' attention over the tokens ``(B, Q, N)`` (rows sum to one)."""
        obs, attention = self.extractor(local)
        return self.observation_projector(obs), attention

    def sentence_vectors(self, report: SentenceBatch, tokens: torch.Tensor) -> torch.Tensor:
        """The text tower's token states ``(B, T, D)`` of ``report.tokens`` -> projected sentence
        observations ``(B, S, observation_dim)`` (padded where ``report.mask`` is False)."""
        return self.sentence_projector(report.matrix.to(tokens) @ tokens)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        o = self.options
        report = self._sentences(batch)
        (images,) = self.views(batch["image"], n=1)
        pooled, local = self.encoder.forward_with_local(images)
        text = self.text_encoder(report.tokens)
        img = self.image_projector(pooled)
        txt = self.text_projector(text["sentence"])
        loss_global = clip_loss(img, txt, self.logit_scale, gather=self.gather, i2t_weight=self.i2t_weight)
        loss = o.global_weight * loss_global
        out = {"loss_global": loss_global.detach()}
        if o.alignment:
            observations, _ = self.observations(local)
            sentences = self.sentence_vectors(report, text["tokens"])
            loss_pcma = pcma_loss(sentences, report.mask.to(sentences.device), observations,
                                  temperature=o.pcma_temperature, match=o.match, gather=self.gather)
            loss = loss + o.alignment_weight * loss_pcma
            out["loss_pcma"] = loss_pcma.detach()
        if o.correlation:
            if local.shape[1] < 2:
                raise DataError(f"the correlation proxy needs at least 2 local tokens, but {self.encoder.config['name']} "
                                f"gives 1 for an input of {tuple(images.shape[2:])}; use a larger image or method.correlation: false",
                                "data.size")
            grid = token_grid(images.shape[2:], local.shape[1])
            masked, _ = mask_patches(images, grid, o.mask_ratio)
            _, masked_local = self.encoder.forward_with_local(masked)
            predicted = self.correlator(masked_local, text["tokens"], text["mask"])
            loss_cce = cce_loss(predicted, patch_correlation(local.detach()))
            loss = loss + o.correlation_weight * loss_cce
            out["loss_cce"] = loss_cce.detach()
        scale = self.logit_scale.detach().float().exp().clamp(max=MAX_LOGIT_SCALE)
        device = loss.device
        return {"loss": loss, **out, "i2t_acc": i2t_accuracy(img, txt), "logit_scale": scale,
                "sentences": torch.tensor(report.count / len(report.texts), device=device),
                "sentences_cut": torch.tensor(float(report.cut), device=device)}
