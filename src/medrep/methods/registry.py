"""Methods register by name; one file per method under ``medrep.methods``, named as the method
(solo-learn's layout)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil

from ..errors import RecipeError
from ..models import build_backbone
from ..transforms import ViewAugment
from .base import Method

METHODS: dict[str, type[Method]] = {}
_NOT_METHODS = {"base", "registry"}


def register_method(name: str):
    def wrap(cls: type[Method]) -> type[Method]:
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


def _discover() -> None:
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _NOT_METHODS:
            importlib.import_module(f"{__package__}.{info.name}")


def available_methods() -> list[str]:
    _discover()
    return sorted(METHODS)


def method_options(name: str) -> dict[str, object]:
    """The method's own recipe options (``method.*``) and their defaults."""
    params = inspect.signature(get_method(name).__init__).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", "encoder", "augment")}


def get_method(name: str) -> type[Method]:
    """A method lives in the file of its name, so only that file is imported: a broken file of
    another method cannot stop this one."""
    if name not in METHODS and isinstance(name, str) and name.isidentifier() and name not in _NOT_METHODS:
        if importlib.util.find_spec(f"{__package__}.{name}") is not None:
            importlib.import_module(f"{__package__}.{name}")
    if name not in METHODS:
        _discover()
    if name not in METHODS:
        raise RecipeError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}", "method.name")
    return METHODS[name]


def build_method(recipe: dict) -> Method:
    """The encoder from ``model``, views from ``augment``, the method's options from ``method``."""
    params = dict(recipe["method"])
    cls = get_method(params.pop("name"))
    options = method_options(cls.name)
    for key in params:
        if key not in options:
            raise RecipeError(f"{cls.name} takes no option {key!r}; options: {', '.join(options)}", f"method.{key}")
    encoder = build_backbone(recipe["model"])
    augment = ViewAugment(encoder.spatial_dims, **recipe["augment"])
    return cls(encoder, augment, **params)
