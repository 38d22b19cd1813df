"""The per-sample preprocessing a recipe's ``data`` section asks for: intensity, then optional resize.

Resizing changes the voxel grid but not the anatomy, so the spacing is updated to keep the
physical extent: ``new_spacing = old_spacing * old_shape / new_shape``. The original shape and
spacing are kept in ``meta`` so that nothing is resampled silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...errors import DataError
from ..io.intensity import ct_window, minmax_scale, percentile_scale
from ..io.sample import spatial_dims_of

INTENSITY_MODES = ("minmax", "percentile", "ct_window", "none")


@dataclass
class Preprocess:
    """Callable on a sample dict; returns a new sample dict (the input is not modified).

    ``size``: one int for every spatial axis, or one per axis; None keeps the image's size.
    """

    intensity: str = "minmax"
    window: Sequence[float] | None = None
    percentiles: Sequence[float] = (1.0, 99.0)
    size: int | Sequence[int] | None = None

    def __post_init__(self) -> None:
        if self.intensity not in INTENSITY_MODES:
            raise DataError(f"must be one of {', '.join(INTENSITY_MODES)}, got {self.intensity!r}", "data.intensity")
        if self.intensity == "ct_window":
            if self.window is None or len(self.window) != 2 or not float(self.window[0]) < float(self.window[1]):
                raise DataError(f"ct_window needs [low, high] HU with low < high, got {self.window!r}", "data.window")
        if self.intensity == "percentile" and (self.percentiles is None or len(self.percentiles) != 2):
            raise DataError(f"must be [lower, upper], got {self.percentiles!r}", "data.percentiles")
        if self.size is not None:
            sizes = [self.size] if isinstance(self.size, int) else list(self.size)
            if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
                raise DataError(f"must be a positive integer or a list of them, got {self.size!r}", "data.size")

    @classmethod
    def from_config(cls, data_cfg: dict[str, Any]) -> Preprocess:
        """From a recipe's ``data`` section (keys intensity, window, percentiles, size)."""
        return cls(
            intensity=data_cfg.get("intensity", "minmax"),
            window=data_cfg.get("window"),
            percentiles=data_cfg.get("percentiles") or (1.0, 99.0),
            size=data_cfg.get("size"),
        )

    def target_size(self, spatial_dims: int) -> tuple[int, ...] | None:
        if self.size is None:
            return None
        if isinstance(self.size, int):
            return (self.size,) * spatial_dims
        if len(self.size) != spatial_dims:
            raise DataError(f"has {len(self.size)} values but images are {spatial_dims}D", "data.size")
        return tuple(int(s) for s in self.size)

    def scale_intensity(self, image: torch.Tensor) -> torch.Tensor:
        if self.intensity == "minmax":
            return minmax_scale(image)
        if self.intensity == "percentile":
            return percentile_scale(image, *self.percentiles)
        if self.intensity == "ct_window":
            return ct_window(image, *self.window)
        return image

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        out = dict(sample)
        meta = dict(sample.get("meta", {}))
        image = self.scale_intensity(sample["image"])
        meta["intensity"] = self.intensity
        size = self.target_size(spatial_dims_of(sample))
        old_shape = tuple(image.shape[1:])
        if size is not None and size != old_shape:
            image, out["spacing"] = resize(image, sample["spacing"], size)
            meta["original_shape"] = list(old_shape)
            meta["original_spacing"] = [float(s) for s in sample["spacing"]]
            meta["spatial_shape"] = list(size)
        out["image"], out["meta"] = image, meta
        return out


def resize(image: torch.Tensor, spacing: torch.Tensor, size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize a channel-first image with MONAI (bi/trilinear, anti-aliased when shrinking);
    returns the image and the spacing that keeps its physical extent."""
    from monai.transforms import Resize  # lazy: MONAI takes seconds to import

    spatial_dims = image.ndim - 1
    mode = "bilinear" if spatial_dims == 2 else "trilinear"
    resized = Resize(spatial_size=tuple(size), mode=mode, anti_aliasing=True)(image)
    resized = resized.as_tensor() if hasattr(resized, "as_tensor") else resized
    old = torch.tensor(image.shape[1:], dtype=torch.float32)
    new = torch.tensor(tuple(size), dtype=torch.float32)
    return resized.to(torch.float32).contiguous(), (spacing.to(torch.float32) * old / new)
