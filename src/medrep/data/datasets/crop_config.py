"""``data.crops``: its keys, their defaults and their checks.

Here rather than beside :class:`~medrep.data.datasets.crops.CropDataset` so that the recipe
checks (``medrep.recipe`` imports this) and the dataset share one definition without the data
package importing the recipe module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

from ...errors import RecipeError
from ...options import Fraction, PositiveFloat, PositiveInt, check_options


@dataclass(frozen=True, kw_only=True)
class CropOptions:
    """The keys of ``data.crops`` (see :class:`medrep.data.CropDataset`), typed for :mod:`medrep.options`."""

    k: PositiveInt = 16  # crops per image
    size: PositiveInt | Sequence[PositiveInt] = 32  # crop size in voxels (one per axis or one for all); with crop_mm, the resampled size
    crop_mm: PositiveFloat | Sequence[PositiveFloat] | None = None  # physical crop extent in mm; null: size is in voxels
    min_foreground: Fraction | None = None  # redraw crops whose fraction of voxels > threshold is below this
    threshold: float = 0.1  # foreground intensity (after data.intensity scaling to [0, 1])
    max_tries: PositiveInt = 50  # draws per crop before the image counts as having no foreground
    cache: Literal["memory", "mmap"] = "memory"  # memory: per process | mmap: .npy files under cache_dir, shared by processes
    cache_dtype: Literal["float32", "float16"] = "float32"  # float16 halves the cache (~3 significant digits)
    cache_dir: str | None = None  # mmap cache folder; null: $MEDREP_CACHE_DIR or <tmp>/medrep_cache


#: Keys of ``data.crops`` and their defaults.
CROP_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(CropOptions)}


def check_crops(crops: Any, spatial_dims: int | None = None) -> dict | None:
    """``data.crops`` with defaults filled in, or None; a bad key or value raises RecipeError naming it.

    Names and single values go through :func:`medrep.options.check_options`; what annotations
    cannot say (one size per axis must match the images' dimensions) is checked here.
    """
    if crops is None or crops is False:
        return None
    if not isinstance(crops, dict):
        raise RecipeError(f"must be a mapping of crop settings or null, got {crops!r}", "data.crops")
    out = check_options(CropOptions, crops, "data.crops.", "data.crops")
    for key in ("size", "crop_mm"):
        value = out[key]
        if isinstance(value, (list, tuple)):
            if not value or (spatial_dims is not None and len(value) != spatial_dims):
                raise RecipeError(f"has {len(value)} values but images are {spatial_dims}D", f"data.crops.{key}")
            out[key] = list(value)  # plain lists: the resolved recipe is dumped as YAML
    return out
