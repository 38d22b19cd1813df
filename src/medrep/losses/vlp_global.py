"""Global (one vector per image / report) vision-language losses: ConVIRT/CLIP and MGCA's prototypes.

Pure functions (embeddings in, scalar out), computed in (at least) float32 with autocast off, like
:mod:`medrep.losses.ntxent`. Line references are to the official code: MGCA =
``HKU-MedAI/MGCA`` ``mgca/models/mgca/mgca_module.py`` (commit 0fe1c3b), GLoRIA =
``marshuang80/gloria`` ``gloria/loss/gloria_loss.py`` (commit 9f0cfcf).

Instance level: :func:`clip_loss` is the symmetric InfoNCE of ConVIRT, CLIP, GLoRIA's global loss
and MGCA's ITA loss; the methods differ only in the logit scale and in how the two directions
are weighted:

- CLIP: learnable ``logit_scale`` (init ``log(1/0.07)``), ``exp`` clipped at 100, mean of both;
- ConVIRT: fixed temperature 0.1 (``logit_scale = log 10``), ``lambda = 0.75`` on image->text;
- GLoRIA ``global_loss`` (lines 61-84): cosine x ``temp3 = 10``, i.e. ``logit_scale = log 10``;
  its model adds ``loss0 + loss1`` (``gloria_model.py`` ``calc_loss``), twice our mean;
- MGCA (lines 104-109): cosine / 0.07, ``loss_ita = loss0 + loss1``, again twice our mean.

Distributed (``gather=True`` under a process group): MGCA's ITA loss compares each image with the
reports of its own GPU only (lines 104-109, no gather), so its negatives, and its gradient,
depend on the number of GPUs: a bug we do not copy. Here each rank's images are scored against
all ranks' reports and each rank's reports against all ranks' images (gathered with gradients),
which by the argument in :mod:`medrep.losses.distributed` gives the single-process loss and
gradient of the global batch after DDP's averaging.

Prototypes: :func:`mgca_prototype_loss` (lines 229-262) with :func:`sinkhorn_knopp` (lines
266-318). The Sinkhorn sums over the *global* batch: SwAV's ``distributed_sinkhorn``, which
MGCA copies (lines 293-318) but selects only when a process group already exists in
``__init__`` (lines 77-80), before Lightning creates it, so in practice it ran per GPU (and the
distributed version reads an undefined ``self.gpus``, lines 303/307).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from medrep.errors import MedrepError
from medrep.losses import distributed
from medrep.losses.ntxent import _check_pair, _compute_dtype

__all__ = ["clip_loss", "sinkhorn_knopp", "mgca_prototype_loss", "MAX_LOGIT_SCALE"]

MAX_LOGIT_SCALE = 100.0  # CLIP: "clipped to prevent scaling the logits by more than 100"


def _check_positive(value: float, name: str, where: str) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value)) or value <= 0:
        raise MedrepError(f"{name} must be a finite number > 0, got {value!r}", where)


def _scale(logit_scale: float | Tensor, dtype: torch.dtype, device: torch.device) -> Tensor | float:
    """``min(exp(logit_scale), 100)``; for a tensor, gradient 0 once the clamp is active."""
    if isinstance(logit_scale, Tensor):
        if logit_scale.numel() != 1:
            raise MedrepError(f"logit_scale must be a scalar, got shape {tuple(logit_scale.shape)}", "clip_loss")
        return logit_scale.to(device=device, dtype=dtype).reshape(()).exp().clamp(max=MAX_LOGIT_SCALE)
    if not (isinstance(logit_scale, (int, float)) and math.isfinite(logit_scale)):
        raise MedrepError(f"logit_scale must be a finite number or a tensor, got {logit_scale!r}", "clip_loss")
    return min(math.exp(min(logit_scale, 700.0)), MAX_LOGIT_SCALE)


def clip_loss(
    image_emb: Tensor,
    text_emb: Tensor,
    logit_scale: float | Tensor,
    gather: bool = True,
    i2t_weight: float = 0.5,
) -> Tensor:
    """Symmetric image-report InfoNCE (ConVIRT / CLIP) on ``(n, d)`` embeddings of paired samples.

    ``logits = min(exp(logit_scale), 100) * cos(image_i, text_j)``; ``logit_scale`` is the
    log of the inverse temperature (CLIP's learnable parameter, initialised at ``log(1/0.07)``;
    a float for a fixed one). The clamp at 100 is CLIP's (paper section 2.5); open_clip instead
    clamps the parameter in place after each step. Clamping in the forward makes the gradient
    0 once the scale passes 100; callers may clamp the parameter too.

    Returns ``i2t_weight * CE(image -> texts) + (1 - i2t_weight) * CE(text -> images)``, each
    the mean over local anchors: 0.5 is CLIP, ConVIRT's ``lambda`` is 0.75. With ``gather``
    and a process group, the candidates of each direction are all ranks' embeddings (gathered
    with gradients), the anchors stay local.
    """
    _check_pair(image_emb, text_emb, ("image_emb", "text_emb"), "clip_loss")
    if not (isinstance(i2t_weight, (int, float)) and 0.0 <= i2t_weight <= 1.0):
        raise MedrepError(f"i2t_weight must be in [0, 1], got {i2t_weight!r}", "clip_loss")
    n = image_emb.shape[0]
    with torch.autocast(device_type=image_emb.device.type, enabled=False):
        dtype = _compute_dtype(image_emb, text_emb)
        img = F.normalize(image_emb.to(dtype), dim=1)
        txt = F.normalize(text_emb.to(dtype), dim=1)
        scale = _scale(logit_scale, dtype, img.device)
        all_img = distributed.gather(img) if gather else img
        all_txt = distributed.gather(txt) if gather else txt
        targets = torch.arange(n, device=img.device) + (distributed.rank_offset(n) if gather else 0)
        loss_i2t = F.cross_entropy(scale * (img @ all_txt.T), targets)  # (n, N): local images vs all reports
        loss_t2i = F.cross_entropy(scale * (txt @ all_img.T), targets)
        return i2t_weight * loss_i2t + (1.0 - i2t_weight) * loss_t2i


def _batch_logsumexp(x: Tensor, gather: bool) -> Tensor:
    """``logsumexp`` over dim 0 (the batch) of ``(n, K)``, over all ranks' rows when gathering."""
    if not (gather and distributed.world_size() > 1):
        return torch.logsumexp(x, dim=0)
    m = x.max(dim=0).values
    dist.all_reduce(m, op=dist.ReduceOp.MAX)
    s = torch.exp(x - m).sum(dim=0)
    dist.all_reduce(s)  # the sums over the global batch (SwAV / MGCA line 317)
    return m + torch.log(s)


@torch.no_grad()
def sinkhorn_knopp(scores: Tensor, epsilon: float = 0.05, iters: int = 3, gather: bool = True) -> Tensor:
    """Soft equipartitioned assignments of ``n`` samples to ``K`` prototypes (SwAV), no gradient.

    ``scores`` is ``(n, K)`` (sample-prototype cosines). Starting from ``Q = exp(scores /
    epsilon)``, each iteration scales every prototype's total mass over the batch to ``1/K``
    and then every sample's to ``1/B`` (``B`` the global batch); the result is normalised per
    sample, so each row sums to 1 and, as ``iters`` grows, each prototype receives ``B / K``
    of the batch. Identical to MGCA's ``sinkhorn`` (lines 266-291; ``distributed_sinkhorn``
    293-318 when gathering) but in log space, which cannot overflow or underflow for small
    ``epsilon``. With ``gather`` and a process group the per-prototype sums are all-reduced, so
    each rank gets its rows of the single-process assignment of the global batch.
    """
    _check_positive(epsilon, "epsilon", "sinkhorn_knopp")
    if not isinstance(iters, int) or iters < 0:
        raise MedrepError(f"iters must be an int >= 0, got {iters!r}", "sinkhorn_knopp")
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise MedrepError(f"scores must be (n > 0, K), got shape {tuple(scores.shape)}", "sinkhorn_knopp")
    with torch.autocast(device_type=scores.device.type, enabled=False):
        log_q = scores.detach().to(_compute_dtype(scores)) / epsilon
        k = log_q.shape[1]
        b = log_q.shape[0] * (distributed.world_size() if gather else 1)
        for _ in range(iters):
            log_q = log_q - (_batch_logsumexp(log_q, gather) + math.log(k))  # prototypes: mass 1/K
            log_q = log_q - (torch.logsumexp(log_q, dim=1, keepdim=True) + math.log(b))  # samples: 1/B
        return torch.softmax(log_q, dim=1)  # per sample (MGCA line 291)


def mgca_prototype_loss(
    image_emb: Tensor,
    text_emb: Tensor,
    prototypes: Tensor,
    epsilon: float = 0.05,
    sinkhorn_iters: int = 3,
    temperature: float = 0.2,
    gather: bool = True,
) -> Tensor:
    """MGCA's cross-modal prototype alignment: swapped prediction of Sinkhorn codes.

    ``image_emb``, ``text_emb`` are ``(n, d)`` global embeddings of paired samples,
    ``prototypes`` ``(K, d)`` (MGCA: 500, the weight of a bias-free linear layer). All three
    are L2-normalised (MGCA lines 91, 99, 230-233); scores are cosines. Each modality's codes
    come from :func:`sinkhorn_knopp` (no gradient, lines 240-248); the loss is

        ``0.5 * (CE(codes_img, softmax(s_txt / T)) + CE(codes_txt, softmax(s_img / T)))``

    averaged over samples (lines 250-262), i.e. the report must predict its image's prototype
    assignment and vice versa. ``temperature`` defaults to MGCA's ``proto_temperature = 0.2``
    (line 45, not overridden by its CLI).

    Deviation: MGCA renormalises the prototype weights in place under ``no_grad`` before the
    forward (lines 230-233), so its gradient reaches the raw weights; here the normalisation is
    in the graph, so the gradient has no radial component (same value for unit prototypes).
    MGCA also drops the prototypes' gradient in the first epoch (``on_after_backward``): the
    caller's business.

    Distributed: the codes need the global batch (Sinkhorn sums all-reduced when ``gather``);
    the cross-entropies only involve local rows, so each rank's mean over its ``n`` samples,
    averaged by DDP, is the global-batch loss and gradient without gathering embeddings.
    """
    _check_pair(image_emb, text_emb, ("image_emb", "text_emb"), "mgca_prototype_loss")
    if prototypes.ndim != 2 or prototypes.shape[1] != image_emb.shape[1]:
        raise MedrepError(f"prototypes must be (K, {image_emb.shape[1]}), got shape {tuple(prototypes.shape)}", "mgca_prototype_loss")
    _check_positive(temperature, "temperature", "mgca_prototype_loss")
    with torch.autocast(device_type=image_emb.device.type, enabled=False):
        dtype = _compute_dtype(image_emb, text_emb, prototypes)
        protos = F.normalize(prototypes.to(dtype), dim=1)
        s_img = F.normalize(image_emb.to(dtype), dim=1) @ protos.T  # (n, K)
        s_txt = F.normalize(text_emb.to(dtype), dim=1) @ protos.T
        code_img = sinkhorn_knopp(s_img, epsilon, sinkhorn_iters, gather)
        code_txt = sinkhorn_knopp(s_txt, epsilon, sinkhorn_iters, gather)
        loss_i2t = -(code_img * F.log_softmax(s_txt / temperature, dim=1)).sum(dim=1).mean()
        loss_t2i = -(code_txt * F.log_softmax(s_img / temperature, dim=1)).sum(dim=1).mean()
        return (loss_i2t + loss_t2i) / 2
