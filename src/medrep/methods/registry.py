"""Methods register by name; one file per method under ``medrep.methods``, named as the method
(solo-learn's layout). A method's options are its ``Options`` dataclass (see :mod:`medrep.methods.base`)."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import pkgutil

from ..errors import RecipeError
from ..models import build_backbone
from ..options import check_names, options_of
from ..transforms import ViewAugment
from .base import Method

METHODS: dict[str, type[Method]] = {}
_NOT_METHODS = {"base", "registry"}


def register_method(name: str):
    def wrap(cls: type[Method]) -> type[Method]:
        _check_declared(cls)
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


def _check_declared(cls: type[Method]) -> None:
    """Every class in ``Options``' lineage must be a frozen keyword-only dataclass itself and
    restate a field's annotation to change its default; otherwise the change would silently
    not reach the generated ``__init__``."""
    names = {f.name for f in dataclasses.fields(cls.Options)}
    for klass in cls.Options.__mro__[:-1]:
        own = vars(klass)
        if "__dataclass_fields__" not in own and (own.get("__annotations__") or names & set(own)):
            raise TypeError(f"{cls.__name__}: {klass.__qualname__} must be decorated with @dataclass(frozen=True, kw_only=True)")
        unannotated = names & set(own) - set(own.get("__annotations__", {}))
        if unannotated:
            raise TypeError(f"{cls.__name__}: {klass.__qualname__} sets {', '.join(sorted(unannotated))} without its annotation")
    if not cls.Options.__dataclass_params__.frozen or any(not f.kw_only for f in dataclasses.fields(cls.Options)):
        raise TypeError(f"{cls.__name__}.Options must be @dataclass(frozen=True, kw_only=True)")


def _discover() -> None:
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _NOT_METHODS:
            importlib.import_module(f"{__package__}.{info.name}")


def available_methods() -> list[str]:
    _discover()
    return sorted(METHODS)


def method_options(name: str) -> dict[str, object]:
    """The method's recipe options (``method.*``) and their defaults, in declaration order."""
    return {k: option.default for k, option in options_of(get_method(name).Options).items()}


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
    check_names(cls.Options, params, "method.", cls.name)  # before the encoder is built
    encoder = build_backbone(recipe["model"])
    augment = ViewAugment(encoder.spatial_dims, **recipe["augment"])
    return cls(encoder, augment, **params)
