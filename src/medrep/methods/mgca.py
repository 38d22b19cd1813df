"""MGCA (Wang et al. 2022): image-report alignment at three granularities: instances (a CLIP loss),
tokens (each word against its own image's patches and back) and disease-level prototypes (swapped
Sinkhorn assignments).

Built on :class:`~medrep.methods.convirt.ConVIRT` (same text tower, options and
``encode_image``/``encode_text``). Official code followed: ``HKU-MedAI/MGCA``
``mgca/models/mgca/mgca_module.py`` (``MGCA.forward``, ``on_after_backward``,
``add_model_specific_args``) and ``mgca/models/backbones/encoder.py`` (``GlobalEmbedding``,
``LocalEmbedding``, ``BertEncoder.aggregate_tokens`` and ``forward``); line references to the
losses are in :mod:`medrep.losses.vlp_global` and :mod:`medrep.losses.vlp_local`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..errors import RecipeError
from ..losses import clip_loss, mgca_prototype_loss, mgca_token_loss, mgca_token_weights
from ..models import Backbone, MLPHead
from ..models.text import _find_layers
from ..options import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from .convirt import ConVIRT
from .gloria import i2t_accuracy, text_features
from .registry import register_method

TokenWeights = Literal["attention", "uniform"]


def _zero_grad(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the forward; a zero gradient in the backward (the parameter still gets one, for DDP)."""
    x = x * 1.0
    x.register_hook(torch.zeros_like)
    return x


@register_method("mgca")
class MGCA(ConVIRT):
    """Multi-granularity cross-modal alignment; defaults follow MGCA's command line.

    Decisions:

    - instance loss: :func:`medrep.losses.clip_loss` at ``temperature`` 0.07, fixed (MGCA's
      ``softmax_temperature``), gathered across processes (MGCA compares with its own GPU's
      reports only). MGCA adds both directions (``loss_ita = loss0 + loss1``), so its term is
      ``2 * clip_loss``; we keep that factor to keep MGCA's balance of the three losses.
    - token loss: :func:`medrep.losses.mgca_token_loss` (``local_temperature`` 0.1,
      ``bidirectional``) between projected patches (the encoder's last map or ViT patch tokens,
      :meth:`Backbone.forward_with_local`; MGCA's ResNet uses ``layer3``) and projected words
      (sub-word tokens averaged into words, special tokens excluded; MGCA sums the pieces and
      keeps [SEP]). Word weights (``word_weights: attention``): the text tower's last-layer
      [CLS] attention averaged over heads, summed over each word's pieces as MGCA's
      ``aggregate_tokens`` does, clipped by :func:`medrep.losses.mgca_token_weights`. The
      TextEncoder returns no attentions (and SDPA computes none), so a pre-hook keeps the last
      attention's input and the [CLS] row is recomputed from its query/key layers under
      ``no_grad``, without dropout (BERT-style layers with ``query``/``key``; else use
      ``uniform``). Patch weights: a ViT's last-block [CLS] attention (MONAI's ``save_attn``),
      uniform for CNNs, as MGCA.
    - prototype loss: :func:`medrep.losses.mgca_prototype_loss`, ``num_prototypes`` 500, Sinkhorn
      ``epsilon`` 0.05 with ``sinkhorn_iters`` 3, ``proto_temperature`` 0.2; prototypes the
      weight of a bias-free linear layer. MGCA drops their gradient during the first epoch
      (``on_after_backward``); ``freeze_prototypes_steps`` does it for that many optimiser steps
      (set it to one epoch's steps), counted by :meth:`on_train_batch_end`. The gradient is
      zeroed, not removed, so DDP still sees it; AdamW then still decays the (normalised in the
      loss, so unaffected) prototypes and counts the steps. The count is not checkpointed: a
      resumed run freezes its first batch again.
    - weights ``instance_weight``/``token_weight``/``prototype_weight`` 1/1/1 (MGCA's command
      line; its class defaults 1/0.7/0.5 are overridden there).
    - heads: ConVIRT's MLP heads with ``proj_hidden_dim`` 2048 to ``embed_dim`` 128, and the same
      MLP per token for patches and words (MGCA's ``GlobalEmbedding``/``LocalEmbedding``), each
      ending in an affine-free BatchNorm (``last_bn``). Words are projected without padding, so
      padding does not enter the BatchNorm statistics.
    - text: MGCA's report feature is BERT's [CLS] (``text_pooling: cls``); ``mean`` is MiniLM's.
    """

    needs_local_features: ClassVar[bool] = True

    @dataclass(frozen=True, kw_only=True)
    class Options(ConVIRT.Options):
        embed_dim: PositiveInt = 128
        proj_hidden_dim: PositiveInt = 2048
        learn_temperature: bool = False
        # not an option: the instance loss weighs both directions alike (MGCA adds them)
        i2t_weight: float = field(default=0.5, init=False)
        last_bn: bool = True
        local_temperature: PositiveFloat = 0.1
        bidirectional: bool = True
        word_weights: TokenWeights = "attention"
        patch_weights: TokenWeights = "attention"
        num_prototypes: PositiveInt = 500
        epsilon: PositiveFloat = 0.05
        sinkhorn_iters: NonNegativeInt = 3
        proto_temperature: PositiveFloat = 0.2
        freeze_prototypes_steps: NonNegativeInt = 0
        instance_weight: NonNegativeFloat = 1.0
        token_weight: NonNegativeFloat = 1.0
        prototype_weight: NonNegativeFloat = 1.0

    options: Options

    def __init__(self, encoder: Backbone, augment: nn.Module | None = None, **options: Any):
        super().__init__(encoder, augment, **options)
        o = self.options
        self.local_temperature = o.local_temperature
        self.bidirectional = o.bidirectional
        self.word_weights = o.word_weights
        self.patch_weights = o.patch_weights
        self.epsilon = o.epsilon
        self.sinkhorn_iters = o.sinkhorn_iters
        self.proto_temperature = o.proto_temperature
        self.freeze_prototypes_steps = o.freeze_prototypes_steps
        self.loss_weights = (o.instance_weight, o.token_weight, o.prototype_weight)
        heads = dict(hidden_dim=o.proj_hidden_dim, out_dim=o.embed_dim, num_layers=o.proj_layers, last_bn=o.last_bn)
        self.image_projector = MLPHead(encoder.out_dim, **heads)  # ConVIRT's, with MGCA's last BatchNorm
        self.text_projector = MLPHead(self.text_encoder.out_dim, **heads)
        self.patch_projector = MLPHead(encoder.local_dim, **heads)
        self.word_projector = MLPHead(self.text_encoder.out_dim, **heads)
        self.prototypes = nn.Linear(o.embed_dim, o.num_prototypes, bias=False)
        self._steps_done = 0
        self._attention_input: torch.Tensor | None = None
        self._attention_site: list[nn.Module] = []  # a list: not registered a second time as a submodule
        if self.word_weights == "attention":
            self._hook_text_attention()
        vit = getattr(encoder.net, "vit", None)
        self._vit_attention = [vit.blocks[-1].attn] if self.patch_weights == "attention" and vit is not None else []
        for block in self._vit_attention:
            block.save_attn = True  # MONAI keeps the detached softmax (before dropout) in ``att_mat``

    def _hook_text_attention(self) -> None:
        _, layers = _find_layers(self.text_encoder.model)
        site = next((m for m in layers[-1].modules() if all(isinstance(getattr(m, n, None), nn.Linear) for n in ("query", "key"))), None)
        if site is None:
            raise RecipeError(f"cannot find the query/key layers of {type(self.text_encoder.model).__name__}'s last attention; "
                              "use word_weights: uniform", "method.word_weights")
        self._attention_site = [site]
        site.register_forward_pre_hook(self._keep_attention_input, with_kwargs=True)

    def _keep_attention_input(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._attention_input = (args[0] if args else kwargs["hidden_states"]).detach()

    @torch.no_grad()
    def _text_cls_attention(self, mask: torch.Tensor) -> torch.Tensor:
        """``(B, T)``: the last layer's attention of [CLS] over the tokens, mean over heads (MGCA's
        ``attentions[-1][:, :, 0]``, ``encoder.py`` ``BertEncoder.forward``)."""
        site, h = self._attention_site[0], self._attention_input
        b, t, _ = h.shape
        heads = int(self.text_encoder.model.config.num_attention_heads)
        q = site.query(h[:, :1]).view(b, 1, heads, -1).transpose(1, 2)  # (B, H, 1, dh)
        k = site.key(h).view(b, t, heads, -1).transpose(1, 2)  # (B, H, T, dh)
        scores = (q @ k.transpose(2, 3)).squeeze(2) / math.sqrt(q.shape[-1])  # (B, H, T)
        return scores.masked_fill(~mask[:, None], float("-inf")).softmax(-1).mean(1)

    def _project_words(self, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = words.new_zeros(*mask.shape, self.embed_dim)
        out[mask] = self.word_projector(words[mask]).to(out.dtype)
        return out

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        texts = self._texts(batch)
        (images,) = self.views(batch["image"], n=1)
        pooled, patches = self.encoder.forward_with_local(images)
        text = text_features(self.text_encoder, texts)
        img = self.image_projector(pooled)
        txt = self.text_projector(text["sentence"])

        word_w = patch_w = None
        if self._attention_site:
            attention = self._text_cls_attention(text["mask"])  # special tokens are in no word's row of the matrix
            word_attention = ((text["matrix"] > 0).to(attention) @ attention[..., None]).squeeze(-1)  # summed over pieces
            word_w = mgca_token_weights(word_attention, text["word_mask"])
            self._attention_input = None
        if self._vit_attention:
            patch_w = mgca_token_weights(self._vit_attention[0].att_mat[:, :, 0, 1:].mean(1))
        b, p, _ = patches.shape
        patch_emb = self.patch_projector(patches.reshape(b * p, -1)).view(b, p, -1)
        word_emb = self._project_words(text["words"], text["word_mask"])

        w_inst, w_token, w_proto = self.loss_weights
        loss_instance = 2.0 * clip_loss(img, txt, self.logit_scale, gather=self.gather)
        loss_token = mgca_token_loss(patch_emb, word_emb, text["word_mask"], word_w, patch_w, self.local_temperature, self.bidirectional)
        prototypes = self.prototypes.weight
        if self._steps_done < self.freeze_prototypes_steps:
            prototypes = _zero_grad(prototypes)
        loss_proto = mgca_prototype_loss(img, txt, prototypes, self.epsilon, self.sinkhorn_iters, self.proto_temperature, self.gather)
        loss = w_inst * loss_instance + w_token * loss_token + w_proto * loss_proto
        return {"loss": loss, "loss_instance": loss_instance.detach(), "loss_token": loss_token.detach(),
                "loss_prototype": loss_proto.detach(), "i2t_acc": i2t_accuracy(img, txt)}

    def on_train_batch_end(self, step: int, max_steps: int) -> None:
        """``step`` optimiser steps are done: the prototypes stay frozen while it is below ``freeze_prototypes_steps``."""
        self._steps_done = step
