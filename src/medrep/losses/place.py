"""PLACE's losses (pathology-level image-report alignment, arXiv 2506.10573): PCMA and CCE.

The paper has no public code; this is our design of its two objectives.

Pathological-level cross-modal alignment (:func:`pcma_loss`)
------------------------------------------------------------
A report is split into sentences ``(B, S, D)`` (padded, ``sentence_mask`` True = sentence) and
the image into ``Q`` visual observations ``(B, Q, D)`` (e.g. learnable queries of a decoder),
both already in the shared space. Every valid sentence ``s_i`` is paired with one observation
``v_i`` of its own image by :func:`match_observations`; with the ``N`` pairs of the global batch

    l_i = 0.5 * ( -log( e^{c(s_i, v_i)/t} / sum_{j in A(i)} e^{c(s_i, v_j)/t} )
                + -log( e^{c(v_i, s_i)/t} / sum_{j in A(i)} e^{c(v_i, s_j)/t} ) )

with ``c`` the cosine, ``A(i)`` = ``{i}`` and the pairs of *other images*, and the loss the mean
of ``l_i`` over the ``N`` pairs (symmetric InfoNCE, the two directions averaged per pair).
Decisions and why:

- Matching is under ``no_grad`` on the cosines of the given embeddings: it picks targets, it
  is not a path for the gradient (argmax / assignment have none anyway).
- ``"max"``: each sentence takes its most similar observation; several sentences may take the
  same one (a report often says one finding twice). ``"hungarian"``: per image, the assignment
  of sentences to observations with the largest total cosine in which each observation serves
  at most ``ceil(n / Q)`` of the ``n`` sentences, i.e. one-to-one when ``n <= Q`` (scipy's
  ``linear_sum_assignment``). A report with more sentences than ``Q`` does not raise: a long
  report must not stop a training run, and spreading its sentences as evenly as possible over
  the observations keeps the intent of the one-to-one rule (the extra sentences do not all
  pile onto one query, as a fallback to ``"max"`` would allow). It is solved exactly by
  repeating each observation's column ``ceil(n / Q)`` times. It runs on the CPU (one device
  sync per call); ``"max"`` stays on the device.
- Padded sentences get index 0 (any index would do: they are ignored downstream); their rows
  never reach the argmax's result or the assignment. In the loss their values are replaced by
  zeros first, so padding (even NaN) never changes the loss and gets exactly zero gradient.
- Same-image entries are not negatives: two sentences of one report may describe one finding
  and two pairs may share an observation (always possible under ``"max"``), so pushing them
  apart would contradict the positives. Only the pair's own entry and other images' pairs are
  in the denominators. Consequence: with a single image in the global batch every pair is its
  own only candidate and the loss is 0.
- An image with no valid sentence has no pair: it is neither anchor nor candidate (its
  observations have no sentence to be a pair with). With no pair in the whole global batch the
  loss is 0 with a gradient path (every parameter gets a zero gradient, as DDP needs), like
  :func:`medrep.losses.supcon.supcon`.
- Computed in (at least) float32 with autocast off, like the other losses.

Distributed (``gather=True`` under a process group): anchors are this rank's pairs, candidates
all ranks' pairs. :func:`medrep.losses.distributed.gather` needs equal shapes, but ranks differ
in images (a last batch), in padded length and in valid sentences, so ``B`` and ``S`` are first
all-reduced to their maxima (one all-reduce of two ints and a host sync), every rank pads its
``(B, S)`` grid of pairs to that size with invalid entries, and the validity mask travels with
the gathered embeddings. A pair's image is its global grid row, ``rank_offset(B_max) + b``, so
images of different ranks stay distinct. Each rank returns its anchors' sum divided by the
*global* number of pairs, times the world size: after DDP averages the gradients, loss and
gradient equal one process's on the whole batch (argument in :mod:`medrep.losses.distributed`).
Without ``gather`` each rank takes the mean over its own pairs against its own candidates.

Correlation consistency (:func:`patch_correlation`, :func:`cce_loss`)
--------------------------------------------------------------------
:func:`patch_correlation` is the cosine Gram matrix of an image's tokens; :func:`cce_loss` the
mean squared error between a predicted and a target correlation matrix over the off-diagonal
entries only (a cosine Gram's diagonal is 1 by construction: including it would only dilute
the mean). The target is detached inside (stop-gradient), so it may come from the same network
without the loss pulling it towards the prediction. Per image, nothing is gathered: each rank's
mean, averaged by DDP, is the global mean when ranks hold equal batches.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from medrep.errors import MedrepError
from medrep.losses import distributed
from medrep.losses.ntxent import _autocast_off, _check_temperature, _compute_dtype
from medrep.losses.supcon import _gather_plain
from medrep.losses.vlp_local import _check_mask, _check_tokens

__all__ = ["match_observations", "pcma_loss", "patch_correlation", "cce_loss"]

MATCHES = ("max", "hungarian")


def _check_pcma_inputs(sentences: Tensor, sentence_mask: Tensor, observations: Tensor, how: str, where: str) -> None:
    _check_tokens(sentences, "sentences", where)
    b, s, d = sentences.shape
    _check_tokens(observations, "observations", where, batch=b, dim=d)
    _check_mask(sentence_mask, (b, s), "sentence_mask", where)
    if how not in MATCHES:
        raise MedrepError(f"match must be one of {MATCHES}, got {how!r}", where)


def _hungarian(cos: np.ndarray) -> np.ndarray:
    """Observation index of each of the ``n`` rows of ``cos`` (n, Q): the assignment of largest
    total in which every observation takes at most ``ceil(n / Q)`` rows (one-to-one for n <= Q)."""
    from scipy.optimize import linear_sum_assignment

    n, q = cos.shape
    rows, cols = linear_sum_assignment(np.tile(cos, (1, math.ceil(n / q))), maximize=True)
    out = np.empty(n, dtype=np.int64)
    out[rows] = cols % q  # column j is observation j mod Q
    return out


def _match(sentences: Tensor, sentence_mask: Tensor, observations: Tensor, how: str) -> Tensor:
    with torch.no_grad(), _autocast_off(sentences):
        dtype = _compute_dtype(sentences, observations)
        s = F.normalize(sentences.detach().to(dtype), dim=-1)  # padded rows: any value, dropped below
        cos = s @ F.normalize(observations.detach().to(dtype), dim=-1).transpose(1, 2)  # (B, S, Q)
        if how == "max":
            return cos.argmax(dim=-1).masked_fill(~sentence_mask, 0)
        cos_np, mask_np = cos.cpu().double().numpy(), sentence_mask.cpu().numpy()
        out = np.zeros(mask_np.shape, dtype=np.int64)
        for b in range(out.shape[0]):
            rows = np.flatnonzero(mask_np[b])
            if rows.size:
                out[b, rows] = _hungarian(cos_np[b, rows])
        return torch.from_numpy(out).to(sentences.device)


def match_observations(sentences: Tensor, sentence_mask: Tensor, observations: Tensor,
                       how: Literal["max", "hungarian"] = "max") -> Tensor:
    """For each sentence of ``sentences`` (B, S, D) the index (B, S) of its visual observation
    among ``observations`` (B, Q, D) of the same image, by cosine similarity, without gradient.

    ``"max"``: the most similar observation (several sentences may share one). ``"hungarian"``:
    per image the assignment of largest total cosine, one-to-one when the image has at most
    ``Q`` valid sentences, else each observation serving at most ``ceil(n / Q)`` of them (see the
    module docstring). Padded sentences (``sentence_mask`` False) get index 0.
    """
    _check_pcma_inputs(sentences, sentence_mask, observations, how, "match_observations")
    return _match(sentences, sentence_mask, observations, how)


def pcma_loss(sentences: Tensor, sentence_mask: Tensor, observations: Tensor, temperature: float | Tensor = 0.1,
              match: Literal["max", "hungarian"] = "max", gather: bool = True) -> Tensor:
    """PLACE's pathological-level cross-modal alignment: symmetric InfoNCE over sentence-observation pairs.

    ``sentences`` (B, S, D) with ``sentence_mask`` (B, S) bool, ``observations`` (B, Q, D). Each
    valid sentence is paired with the observation :func:`match_observations` picks (``match``);
    negatives are the pairs of other images only. Returns the mean over all pairs of the
    average of the sentence->observation and observation->sentence cross-entropies; 0 (with a
    gradient path) when the global batch has no valid sentence. ``gather``: see the module
    docstring (exact under DDP, ranks may differ in ``B``, ``S`` and valid sentences).
    """
    where = "pcma_loss"
    _check_pcma_inputs(sentences, sentence_mask, observations, match, where)
    _check_temperature(temperature, where)
    b, s, d = sentences.shape
    spread = gather and distributed.world_size() > 1
    with _autocast_off(sentences):
        idx = _match(sentences, sentence_mask, observations, match)
        dtype = _compute_dtype(sentences, observations)
        sent = F.normalize(sentences.to(dtype).masked_fill(~sentence_mask[..., None], 0.0), dim=-1)
        obs = F.normalize(observations.to(dtype), dim=-1)
        vis = torch.gather(obs, 1, idx[..., None].expand(b, s, d))  # (B, S, D): each sentence's observation
        valid = sentence_mask
        if spread:  # pad the (B, S) grid to the largest over ranks: gather needs equal shapes
            size = torch.tensor([b, s], device=sentences.device)
            dist.all_reduce(size, op=dist.ReduceOp.MAX)
            b_max, s_max = (int(v) for v in size.tolist())
            grid = (0, 0, 0, s_max - s, 0, b_max - b)
            sent, vis = F.pad(sent, grid), F.pad(vis, grid)
            valid = F.pad(valid, grid[2:], value=False)
            b, s = b_max, s_max
        sent, vis, valid = sent.reshape(b * s, d), vis.reshape(b * s, d), valid.reshape(b * s)
        image = torch.arange(b, device=sent.device).repeat_interleave(s)  # each grid row's image
        if spread:
            key_sent, key_vis, key_valid = distributed.gather(sent), distributed.gather(vis), _gather_plain(valid)
            key_image = torch.arange(b * distributed.world_size(), device=sent.device).repeat_interleave(s)
            image = image + distributed.rank_offset(b)
            self_col = torch.arange(b * s, device=sent.device) + distributed.rank_offset(b * s)
        else:
            key_sent, key_vis, key_valid, key_image = sent, vis, valid, image
            self_col = torch.arange(b * s, device=sent.device)
        is_self = torch.arange(key_sent.shape[0], device=sent.device)[None, :] == self_col[:, None]
        # candidates: the pair itself and valid pairs of other images (never the same image's)
        keep = (key_valid[None, :] & (image[:, None] != key_image[None, :])) | is_self
        s2v = (sent @ key_vis.T / temperature).masked_fill(~keep, float("-inf")).log_softmax(dim=1)
        v2s = (vis @ key_sent.T / temperature).masked_fill(~keep, float("-inf")).log_softmax(dim=1)
        per_pair = -(s2v[is_self] + v2s[is_self]) / 2  # (b * s,), in row order
        total = per_pair.masked_fill(~valid, 0.0).sum()
        count = valid.sum().to(per_pair.dtype)
        if spread:
            dist.all_reduce(count)
            total = total * distributed.world_size()
        return total / count.clamp(min=1.0)


def patch_correlation(tokens: Tensor) -> Tensor:
    """Cosine Gram matrix ``(B, N, N)`` of ``tokens`` ``(B, N, D)``: entry ``[b, i, j]`` is the
    cosine of tokens ``i`` and ``j`` of image ``b`` (in at least float32)."""
    _check_tokens(tokens, "tokens", "patch_correlation")
    with _autocast_off(tokens):
        t = F.normalize(tokens.to(_compute_dtype(tokens)), dim=-1)
        return t @ t.transpose(1, 2)


def cce_loss(predicted: Tensor, target: Tensor) -> Tensor:
    """Mean squared error between ``predicted`` and ``target`` correlation matrices ``(B, N, N)``
    over the off-diagonal entries only (``B * N * (N - 1)`` of them; ``N >= 2``).

    ``target`` is detached inside (stop-gradient): no gradient reaches it, only ``predicted``.
    """
    where = "cce_loss"
    if predicted.ndim != 3 or predicted.shape[0] == 0 or predicted.shape[1] != predicted.shape[2] or predicted.shape[1] < 2:
        raise MedrepError(f"predicted must be (batch > 0, N, N) with N >= 2, got shape {tuple(predicted.shape)}", where)
    if target.shape != predicted.shape:
        raise MedrepError(f"target must have shape {tuple(predicted.shape)}, got {tuple(target.shape)}", where)
    n = predicted.shape[1]
    with _autocast_off(predicted):
        dtype = _compute_dtype(predicted, target)
        diff = predicted.to(dtype) - target.detach().to(dtype)
        off = ~torch.eye(n, dtype=torch.bool, device=predicted.device)
        return diff[:, off].pow(2).mean()
