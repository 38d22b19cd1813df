"""Intensity normalisation to [0, 1]: pure functions, tensor in, float32 tensor of the same shape out.

Which one fits depends on the modality: CT has absolute units (HU), so a fixed window keeps the
meaning of a value across scans; MR and X-ray intensities are relative, so per-image percentiles
(robust to a few hot pixels) or min-max are used. A constant image maps to all zeros.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import DataError


def _plain(x) -> torch.Tensor:
    """MONAI transforms may return a MetaTensor; callers get a plain float32 tensor."""
    x = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
    return x.to(torch.float32)


def _scale(image: torch.Tensor, low: float, high: float) -> torch.Tensor:
    from monai.transforms import ScaleIntensityRange  # lazy: MONAI takes seconds to import

    if high <= low:  # constant image (or empty window after percentiles): nothing to scale
        return torch.zeros_like(image, dtype=torch.float32)
    return _plain(ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)(image))


def ct_window(image: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Map the HU window [low, high] linearly to [0, 1], clipping outside (e.g. lung: -1000, 400)."""
    low, high = float(low), float(high)
    if not high > low:
        raise DataError(f"window must have low < high, got [{low}, {high}]", "data.window")
    return _scale(torch.as_tensor(image, dtype=torch.float32), low, high)


def percentile_scale(image: torch.Tensor, lower: float = 1.0, upper: float = 99.0) -> torch.Tensor:
    """Map the image's [lower, upper] percentiles linearly to [0, 1], clipping outside."""
    lower, upper = float(lower), float(upper)
    if not 0.0 <= lower < upper <= 100.0:
        raise DataError(f"percentiles must satisfy 0 <= lower < upper <= 100, got [{lower}, {upper}]", "data.percentiles")
    image = torch.as_tensor(image, dtype=torch.float32)
    # numpy's partition-based percentile: one pass, one thread; torch.quantile sorts every value
    low, high = (float(v) for v in np.percentile(image.detach().cpu().numpy(), [lower, upper]))
    return _scale(image, low, high)


def minmax_scale(image: torch.Tensor) -> torch.Tensor:
    """Map the image's minimum to 0 and maximum to 1."""
    image = torch.as_tensor(image, dtype=torch.float32)
    low, high = float(image.min()), float(image.max())
    return _scale(image, low, high)
