"""COVER's registration diagnostic: how well the pretrained pyramid predicts the displacement
between two views it has never seen, against the field that made them.

Pairs come from held-out images warped by random affine fields drawn exactly as in training
(:class:`~medrep.transforms.displacement.CoverViews`, fixed seed). The end-point error is the
Euclidean length of ``pred - true`` in voxels, averaged over the valid positions of every pair;
beside it the error of predicting no motion (``|true|``), which any learnt field must beat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import MedrepError
from ..recipe import load_recipe


def end_point_error(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per pair: mean over valid positions of ``||pred - true||_2`` (voxels); NaN for a pair with none."""
    err = (pred - true).norm(dim=1, keepdim=True)
    m = mask.to(err.dtype)
    count = m.flatten(1).sum(1)
    return (err * m).flatten(1).sum(1) / count.where(count > 0, torch.full_like(count, float("nan")))


@torch.no_grad()
def registration_eval(method, images: torch.Tensor, pairs_per_image: int = 1, seed: int = 0, batch_size: int = 8,
                      plot: str | Path | None = None) -> dict[str, Any]:
    """End-point error of ``method.predict`` on ``images`` (N, C, *spatial) warped by random fields."""
    if not hasattr(method, "cover_views") or not hasattr(method, "predict"):
        raise MedrepError("the registration diagnostic needs a COVER run (its pyramid predicts the field)", "--run")
    if images.ndim != method.spatial_dims + 2:
        raise MedrepError(f"images of shape {tuple(images.shape)} do not fit a {method.spatial_dims}D model", "--data")
    gen = torch.Generator().manual_seed(seed)
    epe, zero, valid = [], [], []
    first = None
    for _ in range(pairs_per_image):
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size]
            views = method.cover_views(x, generator=gen)
            pred, _, _ = method.predict(views["view_b"], views["view_a"])
            epe.append(end_point_error(pred, views["flow"], views["mask"]))
            zero.append(end_point_error(torch.zeros_like(pred), views["flow"], views["mask"]))
            valid.append(views["mask"].flatten(1).float().mean(1))
            first = first or {k: v[:1] for k, v in views.items()} | {"pred": pred[:1]}
    epe_t, zero_t = torch.cat(epe), torch.cat(zero)
    result = {"pairs": len(epe_t), "epe_mean": float(epe_t.nanmean()), "epe_std": float(epe_t[~epe_t.isnan()].std()),
              "zero_flow_epe_mean": float(zero_t.nanmean()), "valid_fraction": float(torch.cat(valid).mean()),
              "seed": seed, "spatial_shape": list(images.shape[2:])}
    if plot is not None:
        result["plot"] = str(plot_fields(first, plot))
    return result


def plot_fields(pair: dict[str, torch.Tensor], path: str | Path, step: int | None = None) -> Path:
    """View b with the true (green) and predicted (red) fields as arrows, and view a beside it; the
    middle slice along the first axis of a volume, its in-plane components."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def plane(t: torch.Tensor) -> np.ndarray:
        t = t[0].float()
        return (t[:, t.shape[1] // 2] if t.ndim == 4 else t).numpy()

    b, a = plane(pair["view_b"])[0], plane(pair["view_a"])[0]
    true, pred, mask = plane(pair["flow"])[-2:], plane(pair["pred"])[-2:], plane(pair["mask"])[0]
    step = step or max(1, min(b.shape) // 16)
    yy, xx = np.mgrid[0 : b.shape[0] : step, 0 : b.shape[1] : step]
    keep = mask[::step, ::step] > 0
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    axes[0].imshow(b, cmap="gray")
    for field, colour, label in ((true, "lime", "true"), (pred, "red", "predicted")):
        u, v = field[1][::step, ::step], field[0][::step, ::step]  # x = last axis, y = first
        axes[0].quiver(xx[keep], yy[keep], u[keep], v[keep], color=colour, angles="xy", scale_units="xy", scale=1, width=0.004, label=label)
    axes[0].set_title("view b: arrows point to where it reads view a")
    axes[0].legend(loc="lower right", fontsize=8)
    axes[1].imshow(a, cmap="gray")
    axes[1].set_title("view a (appearance only)")
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def held_out_images(run_dir: str | Path, path: str | None = None, split: str | None = None, n: int = 16,
                    source: str | None = None) -> torch.Tensor:
    """``n`` images (or crops, for a recipe with ``data.crops``) prepared as the run's recipe prepares
    them, from ``path`` (default: the recipe's data) and ``split`` (default: the recipe's)."""
    from ..data import build_dataset, collate
    from ..data.sources import get_source, guess_source

    data = dict(load_recipe(Path(run_dir) / "recipe.yaml")["data"])
    if path is not None:
        data["path"], data["source"] = str(path), get_source(source, "image", "--source").name if source else guess_source(path)
    data["skip_bad"] = False
    dataset = build_dataset(data, split=split)
    if len(dataset) == 0:
        raise MedrepError("no images to draw pairs from", path or data.get("path"))
    images = []
    total = 0
    for i in range(len(dataset)):
        batch = collate([dataset[i]])["image"]
        images.append(batch)
        total += len(batch)
        if total >= n:
            break
    return torch.cat(images)[:n].float()
