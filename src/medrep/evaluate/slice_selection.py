"""Is UniMedI's slice selection right? On prepared Colin27 crops (``medrep prepare colin27-regions``),
whose text names the atlas regions they contain, the fraction of the ``k`` selected slices that hold
a named region, against ``k`` random slices and the ``k`` central ones. The paper never measured it.

For every (crop, named region) pair: the slices holding the region come from the crop's AAL labels
(:func:`~medrep.data.io.atlas.region_slices`, at least ``min_voxels`` voxels); a selected slab
counts by its centre slice, the one the model tokenises. ``random`` is the exact expectation of k
distinct random slabs (the fraction of slab centres holding the region), ``central`` the k middle
slabs, ``best`` the most any k slabs can reach. Pairs whose region fills every slab or none score
the same under every rule, so ``partial`` repeats the means over the pairs where the choice matters.
``brain_spearman`` (mean over crops of the rank correlation between a crop's slab scores and the
atlas-labelled fraction of each slab) says whether the attention simply follows how much brain a
slice holds, a reading that needs no text; ``picked_slabs`` counts how often each slab was chosen and
``same_choice`` is the share of crops given the most common set (a choice by position alone gives 1).

The scores come from the model's own attention: a UniMedI method's EMA teacher (what training
selects with), or an exported ``vit2d3d`` encoder's network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from ..data.datasets.image_text_dataset import ImageTextDataset
from ..data.datasets.preprocess import Preprocess
from ..data.io.atlas import region_slices
from ..data.io.readers import read_image
from ..data.sources import read_pairs
from ..data.sources.colin27_regions import NAME, read_region_columns
from ..errors import MedrepError
from ..models.unified_vit import UnifiedViT

RULES = ("attentive", "random", "central", "best")


def selection_net(model: Any) -> UnifiedViT:
    """The network whose attention selects: a method's teacher, else its encoder, else the model's own."""
    for owner in (getattr(model, "teacher", None), getattr(model, "encoder", None), model):
        net = getattr(owner, "net", None)
        if isinstance(net, UnifiedViT):
            return net
    raise MedrepError("slice selection needs a vit2d3d encoder or a method built on one (unimedi)", "--run")


def prepared_crops(folder: str | Path, split: str | None) -> tuple[ImageTextDataset, dict, Path]:
    """The prepared crops of ``split`` (read as prepared: no rescaling), their region columns and label names."""
    folder = Path(folder)
    rows, _ = read_pairs({"source": NAME, "path": str(folder)}, "--data")
    dataset = ImageTextDataset(rows, Preprocess.from_config({"intensity": "none"}), split=split, spatial_dims=3, train=False)
    return dataset, read_region_columns(folder), folder / "label_names.txt"


@torch.no_grad()
def selection_hits(model: Any, folder: str | Path, split: str | None = "train", k: int | None = None, min_voxels: int = 20,
                   batch_size: int = 8, limit: int | None = None) -> dict[str, Any]:
    """Mean hit fraction of each rule over (crop, region) pairs, all and ``partial``; per region; the scores."""
    net = selection_net(model)
    k = int(k or net.select_k)
    dataset, columns, names = prepared_crops(folder, split)
    count = min(len(dataset), limit or len(dataset))
    pairs: list[dict[str, Any]] = []
    scores_by_study, brain_rho, picks = {}, [], []
    for start in range(0, count, batch_size):
        items = [dataset[i] for i in range(start, min(count, start + batch_size))]
        volumes = torch.cat([item["images"] for item in items])
        scores = net.slice_scores(volumes)
        chosen = net.select(volumes, k, scores, where="--k").numpy()
        pd, gz = net.patch_depth, scores.shape[1]
        centres = np.arange(gz) * pd + pd // 2
        middle = np.arange((gz - k) // 2, (gz - k) // 2 + k)
        for item, score, pick in zip(items, scores.numpy(), chosen):
            crop = columns[item["study"]]
            labels = read_image(str(crop.labels), 3)["image"][0].numpy().round().astype(np.int64)
            scores_by_study[item["study"]] = score
            picks.append(tuple(int(i) for i in pick))
            brain = (labels[..., centres] > 0).reshape(-1, gz).mean(0)  # atlas-labelled fraction of each slab centre
            if brain.std() > 0 and score.std() > 0:
                brain_rho.append(float(spearmanr(score, brain)[0]))
            for region in crop.regions:
                holds = region_slices(labels, region, names, min_voxels)[centres]
                pairs.append({"study": item["study"], "region": region, "coverage": float(holds.mean()),
                              "attentive": float(holds[pick].mean()), "random": float(holds.mean()),
                              "central": float(holds[middle].mean()), "best": min(int(holds.sum()), k) / k})
    if not pairs:
        raise MedrepError(f"no crop of split {split!r} names a region", folder)
    partial = [p for p in pairs if 0 < p["coverage"] < 1]
    mean = lambda rows, key: float(np.mean([r[key] for r in rows])) if rows else None  # noqa: E731
    regions = sorted({p["region"] for p in pairs})
    return {
        "k": k, "min_voxels": min_voxels, "split": split, "crops": count, "pairs": len(pairs), "partial_pairs": len(partial),
        "all": {rule: mean(pairs, rule) for rule in RULES}, "partial": {rule: mean(partial, rule) for rule in RULES},
        "by_region": {r: {rule: mean([p for p in pairs if p["region"] == r], rule) for rule in ("coverage", *RULES)} for r in regions},
        "brain_spearman": float(np.mean(brain_rho)) if brain_rho else None,
        "picked_slabs": np.bincount(np.ravel(picks), minlength=gz).tolist(),
        "same_choice": max(picks.count(p) for p in set(picks)) / len(picks),
        # how decided the teacher is: (max - min) / mean of a crop's slab scores, averaged over crops
        # (0 = flat attention, where the top k are picked by noise)
        "score_spread": float(np.mean([np.ptp(v) / v.mean() for v in scores_by_study.values()])),
        "rows": pairs, "scores": {s: v.tolist() for s, v in scores_by_study.items()},
    }


def selection_figure(model: Any, folder: str | Path, study: str, path: str | Path, k: int | None = None, min_voxels: int = 20) -> Path:
    """One crop's slab-centre slices in a row-major grid, each titled with its score over the crop's
    mean slab score (the raw attention masses differ in the fourth decimal), the selected ones framed
    red, and the slices holding the first named region marked; saved as PNG."""
    from .figures import pyplot, save_figure

    net = selection_net(model)
    k = int(k or net.select_k)
    dataset, columns, names = prepared_crops(folder, None)
    index = next((i for i, row in enumerate(dataset.rows) if row.study == study), None)
    if index is None:
        raise MedrepError(f"no prepared crop {study!r}", folder)
    item, crop = dataset[index], columns[study]
    volume = item["images"]
    with torch.no_grad():
        scores = net.slice_scores(volume)
        pick = set(net.select(volume, k, scores, where="--k")[0].tolist())
    labels = read_image(str(crop.labels), 3)["image"][0].numpy().round().astype(np.int64)
    holds = region_slices(labels, crop.regions[0], names, min_voxels)
    pd, gz = net.patch_depth, scores.shape[1]
    relative = scores[0] / scores[0].mean()
    cols = min(8, gz)
    plt = pyplot()
    fig, axes = plt.subplots(-(-gz // cols), cols, figsize=(1.6 * cols, 1.8 * -(-gz // cols)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for s in range(gz):
        z = s * pd + pd // 2
        ax = axes.flat[s]
        ax.imshow(volume[0, 0, :, :, z].T.numpy(), cmap="gray", origin="lower")
        ax.set_title(f"z{z} {relative[s]:.3f}{' *' if holds[z] else ''}", fontsize=7, color="red" if s in pick else "black")
        if s in pick:
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_edgecolor("red")
                side.set_linewidth(2.5)
    fig.suptitle(f"{study}: teacher slice score / mean score, top {k} framed; * = holds {crop.regions[0]}", fontsize=8)
    return save_figure(fig, path)
