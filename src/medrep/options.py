"""Typed options: one checker for the settings of methods, backbones and augmentations.

An option is declared once, as an annotated field of a dataclass (a method's ``Options``) or an
annotated parameter with a default (a backbone builder, ``ViewAugment``); the annotation is the
schema. Constraints ride on :data:`typing.Annotated` (``PositiveInt = Annotated[int, Range(gt=0)]``),
choices are ``Literal[...]``, ``X | None`` allows null. One reader (:func:`check_options`) serves
both the recipe loader, which checks names and values before anything is built, and the
constructors themselves, so a value is judged the same way wherever it comes from.

Rules (YAML values are plain Python): ``bool`` accepts only true/false; ``int`` refuses bools;
``float`` accepts ints (returned as float) and refuses nan and inf; lists and tuples keep their
container type; a ``str`` is never a sequence. An unsupported annotation raises TypeError: it is
the author's mistake, not the recipe's.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from .errors import RecipeError


@dataclass(frozen=True)
class Range:
    """Bounds on a number; ``None`` leaves that side open."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def holds(self, v: float) -> bool:
        return ((self.gt is None or v > self.gt) and (self.ge is None or v >= self.ge)
                and (self.lt is None or v < self.lt) and (self.le is None or v <= self.le))

    def describe(self) -> str:
        """``positive``, ``>= 0``, ``in (0, 1]``... ("" when unbounded)."""
        lo, hi = (self.ge if self.gt is None else self.gt), (self.le if self.lt is None else self.lt)
        if lo is not None and hi is not None:
            return "in " + self.interval()
        if self.gt == 0:
            return "positive"
        ops = ((">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le))
        return " and ".join(f"{op} {v}" for op, v in ops if v is not None)

    def interval(self) -> str:
        """``(0, 1]``, ``[0, inf]``..."""
        lo, hi = (self.ge if self.gt is None else self.gt), (self.le if self.lt is None else self.lt)
        return (f"{'(' if self.gt is not None else '['}{'-inf' if lo is None else lo}, "
                f"{'inf' if hi is None else hi}{')' if self.lt is not None else ']'}")


@dataclass(frozen=True)
class MinMax(Range):
    """A ``[min, max]`` pair of numbers with ``min <= max``, both within the bounds; ``scalar``
    also accepts one number ``v`` as ``(v, v)``. Checked values come back as a tuple of floats."""

    scalar: bool = False


PositiveInt = Annotated[int, Range(gt=0)]
NonNegativeInt = Annotated[int, Range(ge=0)]
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]
Fraction = Annotated[float, Range(ge=0, le=1)]


class _Invalid(Exception):
    """A value that does not fit; ``reason`` replaces the generic "must be ..." message."""

    def __init__(self, reason: str | None = None):
        super().__init__(reason)
        self.reason = reason


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _union_members(tp: Any) -> tuple | None:
    if get_origin(tp) is Union or isinstance(tp, types.UnionType):
        return get_args(tp)
    return None


def describe(tp: Any) -> str:
    """The English for what ``tp`` accepts, as in "must be <describe(tp)>"."""
    members = _union_members(tp)
    if members is not None:
        ordered = [m for m in members if m is not type(None)] + [m for m in members if m is type(None)]
        return " or ".join(describe(m) for m in ordered)
    if get_origin(tp) is Annotated:
        base, *meta = get_args(tp)
        bounds = next((m for m in meta if isinstance(m, Range)), None)
        if isinstance(bounds, MinMax):
            return f"a [min, max] pair of numbers within {bounds.interval()}" + (" or one number" if bounds.scalar else "")
        if bounds is not None and base in (int, float):
            words = bounds.describe()
            noun = "integer" if base is int else "number"
            if words == "positive":
                return f"a positive {noun}"
            return f"{'an' if base is int else 'a'} {noun} {words}".rstrip()
        return describe(base)
    if tp is type(None):
        return "null"
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(str(c) for c in get_args(tp))
    named = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if tp in named:
        return named[tp]
    origin = get_origin(tp) or tp
    if origin in (dict, Mapping):
        return "a mapping"
    if origin in (list, tuple, Sequence):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        return f"a list, each {describe(args[0])}" if args else "a list"
    return "any value"


def _check(value: Any, tp: Any) -> Any:
    """``value`` (ints as floats where a float is wanted) or :class:`_Invalid`."""
    if tp is Any or tp is object or tp is inspect.Parameter.empty:
        return value
    members = _union_members(tp)
    if members is not None:
        for member in members:
            try:
                return _check(value, member)
            except _Invalid:
                continue
        raise _Invalid
    if get_origin(tp) is Annotated:
        base, *meta = get_args(tp)
        bounds = next((m for m in meta if isinstance(m, Range)), None)
        if isinstance(bounds, MinMax):
            return _min_max(value, bounds)
        value = _check(value, base)
        if bounds is not None and not bounds.holds(value):
            raise _Invalid
        return value
    if tp is type(None) or tp is None:
        if value is not None:
            raise _Invalid
        return None
    if get_origin(tp) is Literal:
        if not any(type(value) is type(c) and value == c for c in get_args(tp)):
            raise _Invalid
        return value
    if tp is bool or tp is str:
        if not isinstance(value, tp):
            raise _Invalid
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid
        return value
    if tp is float:
        if not _is_number(value):
            raise _Invalid
        return float(value)
    origin = get_origin(tp) or tp
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _Invalid
        return value
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)) or origin is not Sequence and not isinstance(value, origin):
            raise _Invalid
        args = [a for a in get_args(tp) if a is not Ellipsis]
        if len(args) > 1:
            raise TypeError(f"unsupported option annotation {tp!r}: use Sequence[T] or MinMax for pairs")
        return type(value)(_check(v, args[0]) for v in value) if args else value
    raise TypeError(f"unsupported option annotation {tp!r}")


def _min_max(value: Any, bounds: MinMax) -> tuple[float, float]:
    if bounds.scalar and _is_number(value):
        value = (value, value)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2 or not all(map(_is_number, value)):
        raise _Invalid
    a, b = float(value[0]), float(value[1])
    if a > b:
        raise _Invalid(f"min {a} is larger than max {b}")
    if not (bounds.holds(a) and bounds.holds(b)):
        raise _Invalid
    return a, b


def check_value(value: Any, annotation: Any, where: str) -> Any:
    """``value`` checked against ``annotation`` (see the module rules); RecipeError naming ``where``."""
    try:
        return _check(value, annotation)
    except _Invalid as exc:
        raise RecipeError(exc.reason or f"must be {describe(annotation)}, got {value!r}", where) from None


@dataclass(frozen=True)
class Option:
    annotation: Any
    default: Any = dataclasses.MISSING


@functools.cache
def options_of(target: Any) -> dict[str, Option]:
    """Declared options, in order: a dataclass's init fields; a callable's (or class's ``__init__``)
    parameters that have a default. Parameters without a default (``spatial_dims``, ``encoder``)
    are arguments, not options."""
    if dataclasses.is_dataclass(target):
        hints = typing.get_type_hints(target, include_extras=True)
        return {f.name: Option(hints[f.name], f.default if f.default_factory is dataclasses.MISSING else f.default_factory())
                for f in dataclasses.fields(target) if f.init}
    fn = target.__init__ if isinstance(target, type) else target
    fn = inspect.unwrap(fn)
    hints = typing.get_type_hints(fn, include_extras=True)
    params = inspect.signature(fn).parameters.values()
    return {p.name: Option(hints.get(p.name, Any), p.default) for p in params
            if p.default is not inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_names(target: Any, values: Mapping[str, Any], prefix: str, owner: str) -> None:
    """An unknown key raises RecipeError naming ``<prefix><key>`` and listing ``owner``'s options."""
    known = options_of(target)
    for key in values:
        if key not in known:
            raise RecipeError(f"{owner} takes no option {key!r}; options: {', '.join(known)}", f"{prefix}{key}")


def check_options(target: Any, values: Mapping[str, Any], prefix: str, owner: str | None = None) -> dict[str, Any]:
    """Every option of ``target`` (``values`` over the defaults), checked; RecipeError names
    ``<prefix><key>`` for an unknown key (listing the known ones) or a bad value."""
    check_names(target, values, prefix, owner or getattr(target, "__qualname__", str(target)))
    out = {}
    for key, option in options_of(target).items():
        value = values.get(key, option.default)
        out[key] = value if value is dataclasses.MISSING else check_value(value, option.annotation, f"{prefix}{key}")
    return {k: v for k, v in out.items() if v is not dataclasses.MISSING}


def checked(prefix: str) -> Callable[[Callable], Callable]:
    """Decorator: check a function's options (parameters with defaults) on every call, with errors
    naming ``<prefix><parameter>``. Unknown keywords still raise TypeError, as for any call."""

    def wrap(fn: Callable) -> Callable:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            for key, option in options_of(fn).items():
                bound.arguments[key] = check_value(bound.arguments[key], option.annotation, f"{prefix}{key}")
            return fn(*bound.args, **bound.kwargs)

        return call

    return wrap
