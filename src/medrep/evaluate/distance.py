"""The ISImed diagnostic: do embedding distances between crops follow their physical distances?

``N`` random crops (seeded) are cut from one volume (or 2D image); for every pair the distance
between their embeddings and the distance between their centres in millimetres (through the
file's affine, else its spacing) are compared by Spearman's rho (the rank agreement ISImed
optimises) and Pearson's r. A scatter (hexbin) plot is saved beside the JSON result.

Crop centres are drawn uniformly among voxels whose *preprocessed* intensity exceeds
``min_intensity`` (so crops of the air around a head are not drawn) and whose crop fits wholly in
the volume. "Held-out" is the caller's choice of volume: use one the encoder was not trained on.
Intensity follows the encoder's training preprocessing, applied to the whole volume (see
:mod:`medrep.evaluate.crops`), unless ``intensity`` overrides it (e.g. a CT window).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.distance import pdist
from scipy.stats import pearsonr, spearmanr

from ..errors import MedrepError
from .crops import CentredCrops, check_encoder_input, crop_shape_for, encode_crops, scale_volume, voxel_to_mm
from .encoder import resolve_encoder
from .report import format_table, write_json

METRICS = ("euclidean", "cosine")


def sample_centres(mask: np.ndarray, crop_shape: Sequence[int], n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct voxel centres (n, dims) drawn uniformly from ``mask`` such that the crop
    ``[c - e // 2, c - e // 2 + e)`` lies inside the volume."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 3:
        raise MedrepError(f"need at least 3 crops, got {n!r}", "--crops")
    crop = np.asarray(crop_shape, dtype=np.int64)
    shape = np.asarray(mask.shape)
    if np.any(crop > shape):
        raise MedrepError(f"crop {crop.tolist()} is larger than the image {shape.tolist()}", "--crop")
    inside = np.zeros_like(mask, dtype=bool)
    sl = tuple(slice(int(e // 2), int(s - (e - e // 2) + 1)) for e, s in zip(crop, shape))
    inside[sl] = True
    candidates = np.argwhere(mask & inside)
    if len(candidates) < n:
        raise MedrepError(f"only {len(candidates)} valid crop centres for {n} crops; lower --crops, --crop or --min-intensity", "--crops")
    rng = np.random.default_rng(seed)
    return candidates[np.sort(rng.choice(len(candidates), size=int(n), replace=False))]


def distance_correlation(embeddings: np.ndarray, positions_mm: np.ndarray, metric: str = "euclidean") -> dict[str, Any]:
    """Spearman rho and Pearson r between pairwise embedding and physical distances over all
    ``N (N - 1) / 2`` pairs. Returns the statistics and the two distance vectors."""
    emb = np.asarray(embeddings, dtype=np.float64)
    pos = np.asarray(positions_mm, dtype=np.float64)
    if emb.ndim != 2 or pos.ndim != 2 or emb.shape[0] != pos.shape[0] or emb.shape[0] < 3:
        raise MedrepError(f"need (N, F) embeddings and (N, dims) positions with N >= 3, got {emb.shape} and {pos.shape}", "distance")
    if metric not in METRICS:
        raise MedrepError(f"must be one of {', '.join(METRICS)}, got {metric!r}", "--metric")
    d_emb = pdist(emb, metric=metric)
    d_mm = pdist(pos, metric="euclidean")
    if np.ptp(d_emb) == 0 or np.ptp(d_mm) == 0:
        raise MedrepError("embedding or physical distances are all equal: correlation undefined", "distance")
    rho, p_rho = spearmanr(d_mm, d_emb)
    r, p_r = pearsonr(d_mm, d_emb)
    return {
        "spearman_rho": float(rho), "spearman_p": float(p_rho), "pearson_r": float(r), "pearson_p": float(p_r),
        "n_pairs": int(d_mm.size), "metric": metric,
        "physical_mm": {"min": float(d_mm.min()), "median": float(np.median(d_mm)), "max": float(d_mm.max())},
        "embedding": {"min": float(d_emb.min()), "median": float(np.median(d_emb)), "max": float(d_emb.max())},
        "_d_mm": d_mm, "_d_emb": d_emb,
    }


def plot_distances(d_mm: np.ndarray, d_emb: np.ndarray, path: str | Path, title: str = "", metric: str = "euclidean") -> Path:
    """Hexbin of embedding distance against physical distance (mm), written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    try:
        hb = ax.hexbin(d_mm, d_emb, gridsize=50, mincnt=1, bins="log", cmap="viridis")
        fig.colorbar(hb, ax=ax, label="pairs (log)")
        ax.set_xlabel("distance between crop centres (mm)")
        ax.set_ylabel(f"embedding distance ({metric})")
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def distance_eval(
    encoder,
    volume: str | Path,
    crops: int = 256,
    crop: int = 32,
    seed: int = 0,
    slice_axis: int = 2,
    metric: str = "euclidean",
    min_intensity: float = 0.05,
    random_init: bool = False,
    intensity: dict[str, Any] | None = None,
    batch_size: int = 64,
    device: str = "auto",
    out: str | Path | None = None,
    plot: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the diagnostic for ``encoder`` (nn.Module or exported encoder path) on ``volume``.

    Writes the result JSON to ``out`` and the plot to ``plot`` (default: ``out`` with ``.png``).
    A 2D encoder on a 3D volume reads ``crop x crop`` patches of slices perpendicular to
    ``slice_axis``; physical distances stay 3D.
    """
    from ..data import read_image

    model, enc_name = resolve_encoder(encoder, random_init)
    sample = read_image(volume)
    vol_dims = sample["image"].ndim - 1
    enc_dims = int(getattr(model, "spatial_dims", vol_dims))
    crop_shape = crop_shape_for(vol_dims, enc_dims, crop, slice_axis)
    check_encoder_input(model, crop_shape)
    scaled, used = scale_volume(sample["image"], getattr(model, "preprocess", None), intensity)
    centres = sample_centres(scaled > float(min_intensity), crop_shape, crops, seed)
    ds = CentredCrops(scaled, centres, crop_shape, squeeze=len(crop_shape) != enc_dims)
    emb = encode_crops(model, ds, batch_size, device, progress)
    geometric = centres - np.array([e // 2 for e in crop_shape]) + (np.array(crop_shape) - 1) / 2.0  # true crop centre
    affine = sample["meta"].get("affine")
    pos = voxel_to_mm(geometric, affine, sample["spacing"].numpy())
    stats = distance_correlation(emb, pos, metric)
    d_mm, d_emb = stats.pop("_d_mm"), stats.pop("_d_emb")
    label = "random-init" if random_init else "pretrained"
    table = format_table([{"encoder": label, "crops": int(crops), "pairs": stats["n_pairs"], "spearman_rho": stats["spearman_rho"],
                           "pearson_r": stats["pearson_r"]}], ["encoder", "crops", "pairs", "spearman_rho", "pearson_r"])
    result: dict[str, Any] = {
        "task": "distance", "encoder": enc_name, "random_init": random_init, "volume": str(volume), "crops": int(crops),
        "crop_shape": list(crop_shape), "spatial_dims": enc_dims, "seed": int(seed), "min_intensity": float(min_intensity),
        "preprocess": used, "spacing": sample["spacing"].tolist(), "positions": "affine" if affine is not None else "spacing",
        **stats, "table": table,
    }
    if plot is None and out:
        plot = Path(out).with_suffix(".png")
    if plot:
        title = f"{Path(str(volume)).name}, {label}: Spearman {stats['spearman_rho']:.3f}, Pearson {stats['pearson_r']:.3f}"
        result["plot"] = str(plot_distances(d_mm, d_emb, plot, title, metric))
    if out:
        write_json(out, result)
    return result
