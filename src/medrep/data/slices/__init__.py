"""Real 2D images (and label maps) for TaCo's task samples, one module per source (see :mod:`.registry`).

Every module here whose name does not start with ``_`` (besides ``registry`` and ``prepare``) is
imported with the package and registers its :class:`~.registry.SliceSet` records.
"""

import importlib
import pkgutil

from .prepare import Slice, SliceList
from .registry import (
    SliceSet,
    format_slice_sets,
    get_slice_set,
    load_slices,
    measure,
    register_slice_set,
    slice_set_names,
    slice_sets,
)
from .user import user_slice_set

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name not in ("registry", "prepare", "user"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "Slice",
    "SliceList",
    "SliceSet",
    "format_slice_sets",
    "get_slice_set",
    "load_slices",
    "measure",
    "register_slice_set",
    "slice_set_names",
    "slice_sets",
    "user_slice_set",
]
