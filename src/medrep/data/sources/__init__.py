"""Public data sets and source kinds, one module each, registered in :mod:`.registry`.

Every module here whose name does not start with ``_`` is imported with the package and registers
its :class:`~.registry.Source`: adding a source is adding one file.
"""

import importlib
import pkgutil

from .registry import (
    KINDS,
    PRETRAIN_KINDS,
    Source,
    check_source_options,
    get_source,
    guess_source,
    read_pairs,
    register_source,
    source_names,
    source_options,
    source_path,
)

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "registry":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "KINDS",
    "PRETRAIN_KINDS",
    "Source",
    "check_source_options",
    "get_source",
    "guess_source",
    "read_pairs",
    "register_source",
    "source_names",
    "source_options",
    "source_path",
]
