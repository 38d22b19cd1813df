"""``data.crops``: its keys, their defaults and their checks.

Here rather than beside :class:`~medrep.data.datasets.crops.CropDataset` so that the recipe
checks (``medrep.recipe`` imports this) and the dataset share one definition without the data
package importing the recipe module.
"""

from __future__ import annotations

from typing import Any

from ...errors import RecipeError

#: Keys of ``data.crops`` and their defaults (see :class:`medrep.data.CropDataset`).
CROP_DEFAULTS: dict[str, Any] = {
    "k": 16,  # crops per image
    "size": 32,  # crop size in voxels (int or one per axis); with crop_mm, the resampled size
    "crop_mm": None,  # physical crop extent in mm (number or one per axis); null: size is in voxels
    "min_foreground": None,  # redraw crops whose fraction of voxels > threshold is below this
    "threshold": 0.1,  # foreground intensity (after data.intensity scaling to [0, 1])
    "max_tries": 50,  # draws per crop before the image counts as having no foreground
    "cache": "memory",  # memory: per process | mmap: .npy files under cache_dir, shared by processes
    "cache_dtype": "float32",  # float32 | float16 (halves the cache; ~3 significant digits)
    "cache_dir": None,  # mmap cache folder; null: $MEDREP_CACHE_DIR or <tmp>/medrep_cache
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) != float("inf")


def check_crops(crops: Any, spatial_dims: int | None = None) -> dict | None:
    """``data.crops`` with defaults filled in, or None; a bad key or value raises RecipeError naming it."""
    if crops is None or crops is False:
        return None
    if not isinstance(crops, dict):
        raise RecipeError(f"must be a mapping of crop settings or null, got {crops!r}", "data.crops")
    for key in crops:
        if key not in CROP_DEFAULTS:
            raise RecipeError(f"unknown recipe key; known: {', '.join(sorted(CROP_DEFAULTS))}", f"data.crops.{key}")
    out = {**CROP_DEFAULTS, **crops}
    where = "data.crops."
    if not _is_int(out["k"]) or out["k"] < 1:
        raise RecipeError(f"must be a positive integer, got {out['k']!r}", where + "k")
    for key, positive in (("size", _is_int), ("crop_mm", _is_number)):
        value = out[key]
        if value is None and key == "crop_mm":
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if not values or not all(positive(v) and v > 0 for v in values):
            kind = "integer" if key == "size" else "number"
            raise RecipeError(f"must be a positive {kind} or a list of them, got {value!r}", where + key)
        if isinstance(value, (list, tuple)):
            if spatial_dims is not None and len(values) != spatial_dims:
                raise RecipeError(f"has {len(values)} values but images are {spatial_dims}D", where + key)
            out[key] = list(values)
    mf = out["min_foreground"]
    if mf is not None and not (_is_number(mf) and 0 <= mf <= 1):
        raise RecipeError(f"must be a fraction in [0, 1] or null, got {mf!r}", where + "min_foreground")
    if not _is_number(out["threshold"]):
        raise RecipeError(f"must be a number, got {out['threshold']!r}", where + "threshold")
    if not _is_int(out["max_tries"]) or out["max_tries"] < 1:
        raise RecipeError(f"must be a positive integer, got {out['max_tries']!r}", where + "max_tries")
    if out["cache"] not in ("memory", "mmap"):
        raise RecipeError(f"must be memory or mmap, got {out['cache']!r}", where + "cache")
    if out["cache_dtype"] not in ("float32", "float16"):
        raise RecipeError(f"must be float32 or float16, got {out['cache_dtype']!r}", where + "cache_dtype")
    if out["cache_dir"] is not None and not isinstance(out["cache_dir"], str):
        raise RecipeError(f"must be a folder path or null, got {out['cache_dir']!r}", where + "cache_dir")
    return out
