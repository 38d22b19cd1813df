"""2D-3D consistency of an encoder that takes both: does a volume's embedding retrieve its own slices
among the slices of every volume?

Each volume is embedded whole (3D) and each of its axial slices (the last axis, every ``stride``-th)
as a 2D image, by the same encoder. For every volume the slices of all volumes are ranked by cosine
similarity: ``R@K`` is the fraction of volumes with one of their own slices in the top K (chance
about ``K / volumes`` for small K), ``auroc`` the mean over volumes of the AUROC of own slices
against the others (chance 0.5), ``mean_rank`` the mean rank of a volume's best own slice (1 best).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from ..errors import MedrepError


@torch.no_grad()
def slice_consistency(encoder: torch.nn.Module, volumes: torch.Tensor, stride: int = 1, ks: Sequence[int] = (1, 5, 10),
                      batch_size: int = 64) -> dict[str, float]:
    """``volumes`` ``(N, C, X, Y, Z)`` -> R@K, AUROC and mean rank (see the module docstring)."""
    if volumes.ndim != 5 or len(volumes) < 2:
        raise MedrepError(f"give at least two volumes (N, C, X, Y, Z), got shape {tuple(volumes.shape)}", "volumes")
    encoder = encoder.eval()
    vol = torch.cat([encoder(volumes[i : i + batch_size]) for i in range(0, len(volumes), batch_size)])
    zs = range(0, volumes.shape[-1], stride)
    slices = volumes[..., list(zs)].permute(0, 4, 1, 2, 3).reshape(-1, *volumes.shape[1:4])
    owner = np.repeat(np.arange(len(volumes)), len(zs))
    flat = torch.cat([encoder(slices[i : i + batch_size]) for i in range(0, len(slices), batch_size)])
    sim = (F.normalize(vol.float(), dim=1) @ F.normalize(flat.float(), dim=1).T).numpy()
    order = np.argsort(-sim, axis=1, kind="stable")
    first_own = np.array([int(np.flatnonzero(owner[order[i]] == i)[0]) + 1 for i in range(len(volumes))])
    out = {f"R@{k}": float(np.mean(first_own <= k)) for k in ks}
    out["auroc"] = float(np.mean([roc_auc_score(owner == i, sim[i]) for i in range(len(volumes))]))
    out["mean_rank"] = float(first_own.mean())
    out |= {"volumes": len(volumes), "slices_per_volume": len(zs)}
    return out
