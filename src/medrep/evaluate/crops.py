"""Crops of one whole volume at given centres, fed to a frozen encoder: what the region probe
(:mod:`medrep.evaluate.regions`) and the distance diagnostic (:mod:`medrep.evaluate.distance`)
share.

Intensity scaling is applied to the *whole volume* once, as in pretraining, and only then are crops
cut: a per-crop rescaling would erase the absolute intensity that tells tissues apart. The volume
is padded (with its minimum after scaling, by default) so that a crop centred near the edge is still
full size. Unlike :class:`medrep.data.CropDataset`, which draws K random crops per image for
training, :class:`CentredCrops` cuts exactly the centres it is given, one crop per sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import MedrepError
from .encoder import resolve_device
from .features import extract_features


def crop_shape_for(volume_dims: int, encoder_dims: int, crop: int, slice_axis: int = 2) -> tuple[int, ...]:
    """Crop extent per volume axis: ``crop`` everywhere, except 1 along ``slice_axis`` when a 2D
    encoder reads a 3D volume. A 3D encoder cannot read a 2D image."""
    if isinstance(crop, bool) or not isinstance(crop, (int, np.integer)) or crop < 1:
        raise MedrepError(f"crop must be a positive integer, got {crop!r}", "--crop")
    if encoder_dims == volume_dims:
        return (int(crop),) * volume_dims
    if encoder_dims == 2 and volume_dims == 3:
        if slice_axis not in (0, 1, 2):
            raise MedrepError(f"must be 0, 1 or 2, got {slice_axis!r}", "--slice-axis")
        return tuple(1 if a == slice_axis else int(crop) for a in range(3))
    raise MedrepError(f"a {encoder_dims}D encoder cannot read crops of a {volume_dims}D image", "encoder")


def scale_volume(image: torch.Tensor, preprocess: dict[str, Any] | None, override: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
    """Apply the encoder's intensity preprocessing (optionally overridden) to a whole (1, *spatial)
    image; return the spatial array and the settings used."""
    from ..data.datasets.preprocess import Preprocess
    from ..recipe import DEFAULTS

    cfg = {k: DEFAULTS["data"][k] for k in ("intensity", "window", "percentiles")}
    cfg.update({k: v for k, v in (preprocess or {}).items() if k in cfg})
    cfg.update({k: v for k, v in (override or {}).items() if v is not None})
    pre = Preprocess(intensity=cfg["intensity"], window=cfg["window"], percentiles=cfg["percentiles"] or (1.0, 99.0))
    scaled = pre.scale_intensity(image)
    used = {"intensity": pre.intensity, "size": "not applied (crops are fed at their own size)"}
    if pre.intensity == "ct_window":
        used["window"] = [float(w) for w in pre.window]
    if pre.intensity == "percentile":
        used["percentiles"] = [float(p) for p in pre.percentiles]
    return scaled[0].numpy().astype(np.float32, copy=False), used


def check_encoder_input(encoder: torch.nn.Module, crop_shape: tuple[int, ...]) -> None:
    """A fixed-size encoder (ViT ``img_size``) must get crops of its size (vit2d3d's is a largest size:
    it checks its own inputs)."""
    config = getattr(encoder, "config", {}) or {}
    img = config.get("img_size")
    if img is None or getattr(encoder, "flexible_size", False):
        return
    dims = getattr(encoder, "spatial_dims", len(crop_shape))
    sizes = list(crop_shape) if len(crop_shape) == dims else [s for s in crop_shape if s != 1]
    want = [img] * len(sizes) if isinstance(img, int) else list(img)
    if list(sizes) != list(want):
        raise MedrepError(f"the encoder takes inputs of size {img}; crops are {list(sizes)}: set --crop {want[0]}", "--crop")


class CentredCrops(Dataset):
    """Crops of ``volume`` (spatial array) at integer ``centres`` (N, dims), cut lazily.

    A crop spans ``[c - e // 2, c - e // 2 + e)`` along each axis (extent ``e``); the volume is
    padded with ``pad_value`` so every centre inside the volume gives a full crop. Axes of extent
    1 are squeezed when ``squeeze`` (a 2D patch of a 3D volume). Samples are ``{"image": (1,
    *crop), "label": int}``.
    """

    def __init__(self, volume: np.ndarray, centres: np.ndarray, crop_shape: Sequence[int], labels: Sequence[int] | None = None,
                 squeeze: bool = False, pad_value: float | None = None):
        self.crop_shape = tuple(int(e) for e in crop_shape)
        self.half = np.array([e // 2 for e in self.crop_shape])
        pad_value = float(volume.min()) if pad_value is None else float(pad_value)
        pad = [(int(h), int(e - h)) for h, e in zip(self.half, self.crop_shape)]
        self.volume = np.pad(volume.astype(np.float32, copy=False), pad, mode="constant", constant_values=pad_value)
        self.centres = np.asarray(centres, dtype=np.int64).reshape(-1, volume.ndim)
        self.labels = np.zeros(len(self.centres), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
        self.squeeze = squeeze

    def __len__(self) -> int:
        return len(self.centres)

    def __getitem__(self, i: int) -> dict[str, Any]:
        start = self.centres[i]  # c - e // 2 in the volume is c in the padded one
        sl = tuple(slice(int(s), int(s) + e) for s, e in zip(start, self.crop_shape))
        crop = self.volume[sl]
        if self.squeeze:
            crop = crop.reshape([e for e in self.crop_shape if e != 1])
        return {"image": torch.from_numpy(np.ascontiguousarray(crop))[None], "label": torch.tensor(int(self.labels[i]))}


def encode_crops(
    encoder: torch.nn.Module, dataset: CentredCrops, batch_size: int = 64, device: str = "auto", progress: bool = True
) -> np.ndarray:
    """Frozen features (N, F) of every crop, batched under inference mode in eval mode."""
    dev = resolve_device(device)
    feats, _ = extract_features(encoder.to(dev), dataset, batch_size=batch_size, device=dev, progress=progress)
    return feats


def voxel_to_mm(index: np.ndarray, affine: np.ndarray | None, spacing: Sequence[float]) -> np.ndarray:
    """Positions in mm of (fractional) voxel indices (N, dims): the affine when known, else index * spacing."""
    index = np.asarray(index, dtype=np.float64)
    dims = index.shape[1]
    if affine is not None:
        affine = np.asarray(affine, dtype=np.float64)
        return index @ affine[:3, :dims].T + affine[:3, 3]
    return index * np.asarray(spacing, dtype=np.float64)[None, :dims]
