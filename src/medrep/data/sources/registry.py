"""The data-source registry: one :class:`Source` record per data set medrep can read, found by name.

Everything that needs to know the sources asks here: the recipe checks (valid ``data.source``
values, each source's own ``data.*`` keys and their defaults), :func:`~medrep.data.build_dataset`,
the engine's loader (which collate, whether a method that needs text gets image-report pairs), the
CLI's ``--source`` and ``--data`` names, and the evaluations (where a run's pairs or a segmentation
task come from). No other module keeps a list of sources.

A source is one module in :mod:`medrep.data.sources` that calls :func:`register_source`; every
module of the package whose name does not start with ``_`` is imported when the package is, so
adding a source is adding one file. Three kinds, each with its own builder:

- ``image``: ``images(data, split, **common)`` returns a Dataset of image samples
  (:mod:`medrep.data.io.sample`), batched with :func:`~medrep.data.datasets.collate`. ``common`` holds
  ``preprocess``, ``transform``, ``spatial_dims``, ``skip_bad`` and ``cache``; ``data.crops`` wraps
  the result in a crop dataset without the source knowing.
- ``image_text``: ``pairs(path, data)`` returns ``(rows, report)``: the studies as
  :class:`~medrep.data.datasets.image_text.ImageTextRow` and what the reader kept and skipped. The
  same rows feed pretraining (an ImageTextDataset, batched with ``collate_image_text``) and
  retrieval or zero-shot evaluation, so both read a source the same way.
- ``segmentation``: ``task(data)`` returns a :class:`~medrep.data.datasets.segmentation.SegTask`
  (train and test image/mask items) for the dense evaluation; not a pretraining source.
- ``mixed``: ``mixed(data, split)`` returns a dataset over several sources' parts (one run on 2D
  and 3D data, :mod:`medrep.data.sources.mixed`); it owns its batching and collate.
- ``tasks``: ``task_samples(data, split)`` returns TaCo's task samples (a
  :class:`~medrep.tasks.pairs.TaskPairs`: channel-stacked (input, target) pairs with ``task``,
  ``family``, ``dataset`` and ``failure`` keys); only methods with ``needs_tasks`` train on them.

Every source should also give ``example(root, spatial_dims=2) -> data``: it writes a tiny but
valid tree in the source's own on-disk layout under ``root`` (a few samples, fixed seed; ``root``
may not exist yet) and returns the recipe ``data`` keys that read it (``source``, ``path``, and
any key the tree needs, such as ``image_root`` or ``size``). It is called once for each of the
source's ``supported_dims`` (a writer whose tree serves both may ignore the argument). The example
is the layout's documentation in runnable form, and it gives a new source its contract test for
free: ``tests/data/test_source_contracts.py`` builds every registered source from its example
through the path a user takes, checks that a truncated or missing file is an error naming it,
and fails for a source registered without an example.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import DataError, MedrepError

KINDS = ("image", "image_text", "segmentation", "tasks", "mixed")
#: kinds a recipe's ``data.source`` may name (segmentation sources are read by the dense evaluation only)
PRETRAIN_KINDS = ("image", "image_text", "tasks", "mixed")
_BUILDERS = {"image": "images", "image_text": "pairs", "segmentation": "task", "tasks": "task_samples", "mixed": "mixed"}


@dataclass(frozen=True)
class Source:
    """What medrep knows about one source.

    ``options`` are the ``data.*`` keys only this source reads, with their defaults (they join the
    recipe's ``data`` section); ``check(data)`` checks their values in a recipe's ``data`` section,
    raising :class:`~medrep.errors.RecipeError` naming ``data.<key>`` (run for every source, since a
    recipe can hold any source's keys). ``default_path`` is where ``data.path`` points when unset,
    relative to ``$MEDREP_DATA``. ``matches(path)`` says whether a path given without a source
    looks like this one (image sources: ``--data`` without ``--source``). ``case_by`` and
    ``eval_split`` are retrieval's defaults for image-report sources: what a case is (``study``, or
    ``patient`` when rows are single images of a case) and which split is scored.

    ``example(root, spatial_dims=2)`` writes a tiny tree in this source's layout under ``root``
    and returns the ``data`` keys that read it (see the module docstring); ``supported_dims`` lists
    the image dimensionalities the source's data comes in, each of which ``example`` can write
    (``(2,)`` for sources of 2D images only, such as chest X-rays).
    """

    name: str
    kind: str
    summary: str
    images: Callable[..., Any] | None = None
    pairs: Callable[[Path, dict[str, Any]], tuple[list, dict[str, Any]]] | None = None
    task: Callable[[dict[str, Any]], Any] | None = None
    task_samples: Callable[[dict[str, Any], str | None], Any] | None = None
    mixed: Callable[[dict[str, Any], str | None], Any] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    check: Callable[[dict[str, Any]], None] | None = None
    default_path: str | None = None
    matches: Callable[[Path], bool] | None = None
    case_by: str = "study"
    eval_split: str = "test"
    example: Callable[..., dict[str, Any]] | None = None
    supported_dims: tuple[int, ...] = (2, 3)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MedrepError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}", f"source {self.name}")
        given = [b for b in _BUILDERS.values() if getattr(self, b) is not None]
        if given != [_BUILDERS[self.kind]]:
            raise MedrepError(f"a {self.kind} source gives {_BUILDERS[self.kind]} and no other builder, got {given}",
                              f"source {self.name}")
        if self.case_by not in ("study", "patient"):
            raise MedrepError(f"case_by must be study or patient, got {self.case_by!r}", f"source {self.name}")
        if not self.supported_dims or not set(self.supported_dims) <= {2, 3}:
            raise MedrepError(f"supported_dims must be a non-empty tuple of 2 and/or 3, got {self.supported_dims!r}", f"source {self.name}")

    @property
    def collate(self) -> Callable | None:
        """The DataLoader ``collate_fn`` for this source's datasets (None for segmentation tasks, and
        for mixed datasets, which carry their parts' own as ``collate_fn``)."""
        if self.kind in ("image", "tasks"):
            from ..datasets.collate import collate

            return collate
        if self.kind == "image_text":
            from ..datasets.image_text_dataset import collate_image_text

            return collate_image_text
        return None


_SOURCES: dict[str, Source] = {}


def register_source(source: Source) -> Source:
    """Add ``source`` to the registry (a name is registered once; a ``data.*`` key two sources
    share must have one default)."""
    if source.name in _SOURCES:
        raise MedrepError("a source of this name is already registered", f"source {source.name}")
    defaults = source_options()
    for key, value in source.options.items():
        if key in defaults and defaults[key] != value:
            raise MedrepError(f"data.{key} already has the default {defaults[key]!r} from another source", f"source {source.name}")
    _SOURCES[source.name] = source
    return source


def _kinds(kinds: str | tuple[str, ...] | None) -> tuple[str, ...]:
    return KINDS if kinds is None else (kinds,) if isinstance(kinds, str) else tuple(kinds)


def source_names(kinds: str | tuple[str, ...] | None = None) -> tuple[str, ...]:
    """Registered names of the given kind(s) (default: all), grouped by kind in :data:`KINDS` order."""
    return tuple(s.name for k in _kinds(kinds) for s in _SOURCES.values() if s.kind == k)


def get_source(name: Any, kinds: str | tuple[str, ...] | None = None, where: str = "data.source") -> Source:
    """The source called ``name``; an unknown name, or one of another kind, is a DataError naming ``where``."""
    names = source_names(kinds)
    if not isinstance(name, str) or name not in names:
        raise DataError(f"must be one of {', '.join(names)}, got {name!r}", where)
    return _SOURCES[name]


def source_options() -> dict[str, Any]:
    """Every source's own ``data.*`` keys with their defaults."""
    return {key: value for s in _SOURCES.values() for key, value in s.options.items()}


def check_source_options(data: dict[str, Any]) -> None:
    """Run every source's check of its own keys on a recipe's ``data`` section."""
    for source in _SOURCES.values():
        if source.check is not None:
            source.check(data)


def source_path(name: str, data: dict[str, Any], option: str = "data.path", must_exist: bool = False) -> Path:
    """``data["path"]``, else the source's ``default_path`` under ``$MEDREP_DATA``; ``option`` is what
    an error names (``data.path``, or the CLI option that stands for it)."""
    source = get_source(name)
    path, shared = data.get("path"), os.environ.get("MEDREP_DATA")
    if path is None and source.default_path and shared:
        path = Path(shared) / source.default_path
    if path is None:
        hint = f" (or set $MEDREP_DATA to a folder holding {source.default_path})" if source.default_path else ""
        raise DataError(f"source {name!r} needs {option}{hint}", option)
    path = Path(path).expanduser()
    if must_exist and not path.exists():
        raise DataError(f"does not exist (source {name!r})", path)
    return path


def read_pairs(data: dict[str, Any], option: str = "data.path") -> tuple[list, dict[str, Any]]:
    """``(rows, report)`` of the image-report source ``data["source"]``, read from its path."""
    source = get_source(data.get("source"), "image_text")
    return source.pairs(source_path(source.name, data, option, must_exist=True), data)


def guess_source(path: str | Path) -> str:
    """The image source a path looks like (a folder, a MedMNIST ``.npz``, a ``.csv``/``.jsonl`` manifest)."""
    path = Path(path)
    for source in _SOURCES.values():
        if source.kind == "image" and source.matches is not None and source.matches(path):
            return source.name
    raise MedrepError(f"cannot tell the kind of data ({', '.join(source_names('image'))}); pass --source", path)
