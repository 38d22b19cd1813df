"""Local (word / region / patch token) vision-language losses: GLoRIA's and MGCA's.

Pure functions (token embeddings in, scalar out), computed in (at least) float32 with autocast
off. Reports are padded word sequences ``(B, W, D)`` with a mask ``(B, W)`` (True = word,
False = padding); padding never changes a loss value (it is excluded from every softmax, sum
and weight, and gets zero gradient). Each report needs at least one word (not checked: that
would cost a device sync). Line references: GLoRIA = ``marshuang80/gloria``
``gloria/loss/gloria_loss.py`` (commit 9f0cfcf); MGCA = ``HKU-MedAI/MGCA``
``mgca/models/mgca/mgca_module.py`` (commit 0fe1c3b).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from medrep.errors import MedrepError
from medrep.losses import distributed
from medrep.losses.ntxent import _compute_dtype

__all__ = ["gloria_local_loss", "gloria_word_attention", "mgca_token_loss", "mgca_token_weights"]


def _check_tokens(x: Tensor, name: str, where: str, batch: int | None = None, dim: int | None = None) -> None:
    if x.ndim != 3 or x.shape[0] == 0 or x.shape[1] == 0:
        raise MedrepError(f"{name} must be (batch > 0, tokens > 0, dim), got shape {tuple(x.shape)}", where)
    if (batch is not None and x.shape[0] != batch) or (dim is not None and x.shape[2] != dim):
        raise MedrepError(f"{name} must be ({batch}, *, {dim}), got shape {tuple(x.shape)}", where)


def _check_mask(mask: Tensor, shape: tuple[int, int], name: str, where: str) -> None:
    if mask.dtype != torch.bool or tuple(mask.shape) != shape:
        raise MedrepError(f"{name} must be a bool tensor of shape {shape}, got {mask.dtype} {tuple(mask.shape)}", where)


# ---------------------------------------------------------------- GLoRIA


def _word_region_attention(w: Tensor, m: Tensor, regions: Tensor, t1: float) -> tuple[Tensor, Tensor]:
    """One report's words ``w`` ``(W, D)`` (mask ``m`` ``(W,)``) over each image's ``regions``
    ``(Ni, R, D)``: the attention ``(Ni, W, R)`` (each row a distribution over regions) and the
    cosine ``(Ni, W)`` of every word with its attention-weighted region context."""
    dots = torch.einsum("jrd,wd->jwr", regions, w)  # raw dot products, attention_fn line 37
    # softmax over the report's words for each region (line 40; padding excluded, as the
    # official slices words[:cap_len], line 101), then over regions at temp1 (lines 48-49)
    attn = dots.masked_fill(~m[None, :, None], float("-inf")).softmax(dim=1)
    attn = (attn * t1).softmax(dim=2)  # (Ni, W, R); padding rows are uniform, dropped by the callers
    ctx = attn @ regions  # (Ni, W, D): region context of every word, line 56
    cos = (ctx * w).sum(-1) / (ctx.norm(dim=-1) * w.norm(dim=-1)).clamp(min=1e-8)  # lines 11-17, 114
    return attn, cos


def _gloria_scores(words: Tensor, mask: Tensor, regions: Tensor, t1: float, t2: float, agg: str, paper: bool) -> Tensor:
    """``S[j, i]``: similarity of image ``j`` (of ``regions``) and report ``i`` (of ``words``), ``(Ni, Nr)``.

    One report at a time against all images, as ``local_loss`` (lines 95-124), so that only one
    ``(Ni, W, R)`` attention is alive outside autograd's saved tensors.
    """
    cols = []
    for i in range(words.shape[0]):
        w, m = words[i], mask[i]  # (W, D), (W,)
        _, cos = _word_region_attention(w, m, regions, t1)
        logit = (t2 * cos).masked_fill(~m, float("-inf"))
        s = torch.logsumexp(logit, dim=1)  # log sum_w exp(temp2 * cos), lines 117-122
        if agg == "mean":
            s = s - torch.log(m.sum().to(s.dtype))
        cols.append(s / t2 if paper else s)
    return torch.stack(cols, dim=1)


@torch.no_grad()
def gloria_word_attention(words: Tensor, word_mask: Tensor, regions: Tensor,
                          temp_attention: float = 4.0) -> tuple[Tensor, Tensor]:
    """Where each word of report ``b`` looks in its own image ``b``: the attention of
    :func:`gloria_local_loss` (step 1, the same code), for inspection.

    ``words`` ``(B, W, D)`` with ``word_mask`` ``(B, W)``, ``regions`` ``(B, R, D)`` (already
    projected, as the loss receives them) -> ``attention`` ``(B, W, R)``, each real word's row a
    distribution over the regions (``softmax_regions(temp_attention * softmax_words(<region,
    word>))``), and ``cosine`` ``(B, W)``, each word's cosine with its attended region context (the
    ``sim_w`` the loss aggregates). Padding words get all-zero attention rows and cosine 0.
    Computed in (at least) float32 with autocast off, without gradient.
    """
    where = "gloria_word_attention"
    _check_tokens(words, "words", where)
    b, w_len, d = words.shape
    _check_tokens(regions, "regions", where, batch=b, dim=d)
    _check_mask(word_mask, (b, w_len), "word_mask", where)
    if not (isinstance(temp_attention, (int, float)) and math.isfinite(temp_attention)) or temp_attention <= 0:
        raise MedrepError(f"temp_attention must be a finite number > 0, got {temp_attention!r}", where)
    with torch.autocast(device_type=words.device.type, enabled=False):
        dtype = _compute_dtype(words, regions)
        words, regions = words.to(dtype), regions.to(dtype)
        pairs = [_word_region_attention(words[i], word_mask[i], regions[i : i + 1], temp_attention) for i in range(b)]
        attention = torch.cat([a for a, _ in pairs]) * word_mask[..., None]
        cosine = torch.cat([c for _, c in pairs]) * word_mask
    return attention, cosine


def gloria_local_loss(
    words: Tensor,
    word_mask: Tensor,
    regions: Tensor,
    temp_attention: float = 4.0,
    temp_similarity: float = 5.0,
    temp_loss: float = 10.0,
    gather: bool = True,
    agg: str = "sum",
    paper_aggregation: bool = False,
) -> Tensor:
    """GLoRIA's local loss: word-to-region attention, report-image matching, symmetric CE.

    ``words`` ``(B, W, D)`` with ``word_mask`` ``(B, W)``; ``regions`` ``(B, R, D)`` (the
    flattened ``ih x iw`` map of image sub-region features). For every report ``i`` and image
    ``j``, following ``attention_fn`` (lines 20-58) and ``local_loss`` (lines 87-135) exactly:

    1. ``a = softmax_regions(temp_attention * softmax_words(<region, word>))``: a first softmax
       over the report's words of the raw dot products, then over regions. (The paper writes a
       single softmax over regions of ``temp * cos``; the code, inherited from
       AttnGAN/ControlGAN, does this double softmax on raw products, and so do we.)
    2. ``c_w = sum_r a_wr region_r``; ``sim_w = cos(word_w, c_w)`` (eps 1e-8 on the norms).
    3. ``Z_ij = log sum_w exp(temp_similarity * sim_w)`` (``agg="mean"``: ``log mean``).
       The paper's ``log(sum exp(.))^(1/temp_similarity)`` divides that by
       ``temp_similarity``; the official code does not (lines 117-122), nor do we by default;
       ``paper_aggregation=True`` divides.
    4. ``logits = temp_loss * Z``; the loss is ``0.5 * (CE(images -> reports) + CE(reports ->
       images))``. GLoRIA sums the two (``gloria_model.py`` ``calc_loss``: ``l_loss0 +
       l_loss1``), twice ours; its global loss likewise, so the ratio is kept.

    Distributed (``gather=True`` under a process group): ``Z`` needs every report against every
    image, so words, masks and regions are gathered with gradients; rank ``r`` computes its
    images against all reports and all images against its reports (``2 n N`` pairs instead of
    ``N^2``) and the mean CE over its own anchors. Reports are padded to the longest ``W``
    over ranks (one all-reduce of an int and a host sync), so dynamic padding per rank works;
    ``R``, ``D`` and ``B`` must agree across ranks. DDP's average then gives the single-process
    loss and gradient (argument in :mod:`medrep.losses.distributed`). The official code is
    per-GPU only.
    """
    where = "gloria_local_loss"
    _check_tokens(words, "words", where)
    b, w_len, d = words.shape
    _check_tokens(regions, "regions", where, batch=b, dim=d)
    _check_mask(word_mask, (b, w_len), "word_mask", where)
    for name, t in (("temp_attention", temp_attention), ("temp_similarity", temp_similarity), ("temp_loss", temp_loss)):
        if not (isinstance(t, (int, float)) and math.isfinite(t)) or t <= 0:
            raise MedrepError(f"{name} must be a finite number > 0, got {t!r}", where)
    if agg not in ("sum", "mean"):
        raise MedrepError(f"agg must be 'sum' or 'mean', got {agg!r}", where)
    args = (temp_attention, temp_similarity, agg, paper_aggregation)
    with torch.autocast(device_type=words.device.type, enabled=False):
        dtype = _compute_dtype(words, regions)
        words, regions = words.to(dtype), regions.to(dtype)
        targets = torch.arange(b, device=words.device)
        if not (gather and distributed.world_size() > 1):
            scores = temp_loss * _gloria_scores(words, word_mask, regions, *args)  # (B images, B reports)
            return 0.5 * (F.cross_entropy(scores, targets) + F.cross_entropy(scores.T, targets))
        longest = torch.tensor([w_len], device=words.device)
        dist.all_reduce(longest, op=dist.ReduceOp.MAX)
        pad = int(longest.item()) - w_len
        words = F.pad(words, (0, 0, 0, pad))
        word_mask = F.pad(word_mask, (0, pad), value=False)
        all_words = distributed.gather(words)
        all_mask = distributed.gather(word_mask.to(dtype)) > 0.5
        all_regions = distributed.gather(regions)
        targets = targets + distributed.rank_offset(b)
        rows = temp_loss * _gloria_scores(all_words, all_mask, regions, *args)  # (n local images, N reports)
        cols = temp_loss * _gloria_scores(words, word_mask, all_regions, *args)  # (N images, n local reports)
        return 0.5 * (F.cross_entropy(rows, targets) + F.cross_entropy(cols.T, targets))


# ---------------------------------------------------------------- MGCA


@torch.no_grad()
def mgca_token_weights(attention: Tensor, mask: Tensor | None = None, quantiles: tuple[float, float] = (0.1, 0.9)) -> Tensor:
    """MGCA's token weights from [CLS] attention ``(B, T)``: clip per sample to its quantiles, normalise.

    Words: BERT's last-layer [CLS] attention, clipped to the 10th/90th percentile of the
    sample's non-padding entries (lines 140-153); patches: ViT's last-block [CLS] attention
    averaged over heads, clipped the same over all patches (lines 192-205). Padding (``mask``
    False; MGCA uses the zero entries) gets weight 0. Detached. The clipping keeps a few
    tokens from taking all the weight.
    """
    if attention.ndim != 2:
        raise MedrepError(f"attention must be (batch, tokens), got shape {tuple(attention.shape)}", "mgca_token_weights")
    a = attention.detach().to(_compute_dtype(attention))
    if mask is None:
        mask = torch.ones_like(a, dtype=torch.bool)
    _check_mask(mask, tuple(a.shape), "mask", "mgca_token_weights")
    masked = a.masked_fill(~mask, float("nan"))
    q = torch.tensor(quantiles, dtype=a.dtype, device=a.device)
    bounds = torch.nanquantile(masked, q, dim=1, keepdim=True)  # (2, B, 1)
    clipped = torch.minimum(torch.maximum(a, bounds[0]), bounds[1]).masked_fill(~mask, 0.0)
    return clipped / clipped.sum(dim=1, keepdim=True)


def _token_weights(weights: Tensor | None, mask: Tensor, name: str) -> Tensor:
    """Detached, zero on padding, normalised per sample (MGCA lines 153, 204); uniform when None (line 188)."""
    if weights is None:
        weights = torch.ones(mask.shape, dtype=torch.float64, device=mask.device)
    elif tuple(weights.shape) != tuple(mask.shape):
        raise MedrepError(f"{name} must have shape {tuple(mask.shape)}, got {tuple(weights.shape)}", "mgca_token_loss")
    w = weights.detach().masked_fill(~mask, 0.0)
    return w / w.sum(dim=1, keepdim=True)


def _weighted_token_ce(sim: Tensor, mask: Tensor | None, weights: Tensor) -> Tensor:
    """``sum_{b,t} weights[b,t] * CE(sim[b, t, :], t) / B`` (MGCA lines 158-166); padding columns
    are no candidates (each row keeps its own diagonal entry, so padding rows stay finite and
    are then weighted 0)."""
    b, t, _ = sim.shape
    if mask is not None:
        keep = mask[:, None, :] | torch.eye(t, dtype=torch.bool, device=sim.device)
        sim = sim.masked_fill(~keep, float("-inf"))
    targets = torch.arange(t, device=sim.device).repeat(b)
    ce = F.cross_entropy(sim.reshape(b * t, t), targets, reduction="none").view(b, t)
    return (ce * weights.to(ce.dtype)).sum() / b


def mgca_token_loss(
    patches: Tensor,
    words: Tensor,
    word_mask: Tensor,
    word_weights: Tensor | None = None,
    patch_weights: Tensor | None = None,
    temperature: float = 0.1,
    bidirectional: bool = True,
) -> Tensor:
    """MGCA's cross-modal token alignment, within each image-report pair (no batch negatives).

    ``patches`` ``(B, P, D)``, ``words`` ``(B, W, D)`` with ``word_mask`` ``(B, W)``; all
    L2-normalised here (MGCA lines 89, 97). Following the code's default path
    (``use_local_atten=False``, lines 124-227), with ``tau = temperature`` (MGCA's
    ``local_temperature = 0.1``, used for both the attention and the similarities):

    - words: each word attends over its own image's patches, ``c = normalize(softmax(<w, p> /
      tau) @ p)`` (lines 127-135); ``sim[n1, n2] = <w_n1, c_n2> / tau``; CE of every word
      against the contexts (target: its own) and of every context against the words, each
      weighted by the word weights, summed over tokens and averaged over the batch, the two
      directions averaged (lines 155-168);
    - patches (``bidirectional``): the same with each patch attending over its report's words
      (padding masked, lines 176-182) and the patch weights (lines 207-221).

    Returns ``loss_word + loss_patch`` (MGCA's ``loss_local``, line 223), or ``loss_word``.
    Weights ``(B, W)`` / ``(B, P)`` (e.g. from :func:`mgca_token_weights`) are detached, zeroed
    on padding and normalised per sample; ``None`` is uniform (MGCA's ResNet branch for patches,
    line 188).

    Deviations: (1) padding words are also removed as *negatives* (MGCA only gives them weight
    0 as anchors: their contexts stay candidates in both CEs, lines 158-166), so padding cannot
    change the loss; (2) the patches' word contexts are always normalised (MGCA skips it for
    ViT encoders, lines 185-186, making those similarities non-cosine, unlike the word branch).

    Distributed: nothing crosses pairs, so nothing is gathered; each rank's mean over its
    samples, averaged by DDP, is the global-batch mean (equal local batches).
    """
    where = "mgca_token_loss"
    _check_tokens(patches, "patches", where)
    b, p_len, d = patches.shape
    _check_tokens(words, "words", where, batch=b, dim=d)
    _check_mask(word_mask, tuple(words.shape[:2]), "word_mask", where)
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)) or temperature <= 0:
        raise MedrepError(f"temperature must be a finite number > 0, got {temperature!r}", where)
    with torch.autocast(device_type=patches.device.type, enabled=False):
        dtype = _compute_dtype(patches, words)
        p = F.normalize(patches.to(dtype), dim=-1)
        w = F.normalize(words.to(dtype), dim=-1)
        ww = _token_weights(word_weights, word_mask, "word_weights")
        pw = _token_weights(patch_weights, torch.ones((b, p_len), dtype=torch.bool, device=p.device), "patch_weights")

        ctx = F.normalize(torch.softmax(w @ p.transpose(1, 2) / temperature, dim=-1) @ p, dim=-1)  # (B, W, D)
        sim = w @ ctx.transpose(1, 2) / temperature  # [b, word n1, context n2]
        loss = (_weighted_token_ce(sim, word_mask, ww) + _weighted_token_ce(sim.transpose(1, 2), word_mask, ww)) / 2
        if not bidirectional:
            return loss
        logits = (p @ w.transpose(1, 2) / temperature).masked_fill(~word_mask[:, None, :], float("-inf"))
        ctx = F.normalize(torch.softmax(logits, dim=-1) @ w, dim=-1)  # (B, P, D)
        sim = p @ ctx.transpose(1, 2) / temperature  # [b, patch n1, context n2]
        return loss + (_weighted_token_ce(sim, None, pw) + _weighted_token_ce(sim.transpose(1, 2), None, pw)) / 2
