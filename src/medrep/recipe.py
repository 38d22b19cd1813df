"""Recipes: YAML files of nested settings, checked against known keys, overridable as key=value.

A recipe has fixed sections. ``method`` and ``model`` hold the options of the named method (its
``Options`` dataclass) or backbone (its builder's parameters); ``augment`` those of
:class:`~medrep.transforms.ViewAugment`. Their names and values are checked when the recipe is
loaded, by the same annotations the constructors check (:mod:`medrep.options`); every other
section is closed. So a typo such as ``optim.lrr`` or ``method.temprature`` fails at once with the
list of valid keys instead of being ignored or failing only when the run starts.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from .data.datasets.crop_config import CROP_DEFAULTS as CROP_DEFAULTS  # re-exported: recipe users read the crop keys here
from .data.datasets.crop_config import check_crops
from .data.sources import PRETRAIN_KINDS, check_source_options, get_source, source_names, source_options
from .errors import MedrepError, RecipeError
from .options import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, check_options


@dataclass(frozen=True, kw_only=True)
class DataSection:
    """``data``: the keys every source reads (each source adds its own, see :mod:`medrep.data.sources`)."""

    source: str = "medmnist"  # a registered source: medmnist | folder | manifest | image_text | medpix2 | iu_xray | mimic_cxr ...
    path: Any = None  # None: the source's default (packaged PneumoniaMNIST, $MEDREP_DATA/medpix2, ...); checked by the source
    split: str | None = "train"  # None: no split (a folder is then read whole)
    size: PositiveInt | Sequence[PositiveInt] | None = None  # resize every image to this spatial size; None keeps it
    intensity: Literal["minmax", "percentile", "ct_window", "none"] = "minmax"
    window: Sequence[float] | None = None  # [low, high] HU for ct_window
    percentiles: Sequence[float] = (1.0, 99.0)
    spatial_dims: Literal[2, 3] | None = None  # None: follow model.spatial_dims
    batch_size: PositiveInt = 256
    num_workers: NonNegativeInt = 0
    cache: bool = True
    skip_bad: bool = False  # image sources: leave out unreadable images; image-text readers: bad studies
    # K random crops per image with their centres in mm (medrep.data.CropDataset), or null for whole
    # images; keys and defaults: medrep.data.datasets.crop_config.CropOptions
    crops: dict | bool | None = None


@dataclass(frozen=True, kw_only=True)
class OptimSection:
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 1e-4
    momentum: NonNegativeFloat = 0.9  # sgd only
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: NonNegativeInt = 0


PRECISIONS = ("32", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "64", "64-true")


@dataclass(frozen=True, kw_only=True)
class TrainerSection:
    max_steps: PositiveInt | None = 1000
    max_epochs: PositiveInt | None = None
    accelerator: str = "auto"
    devices: int | str | Sequence[int] = 1  # Lightning's: a count, "auto", or device indices
    num_nodes: PositiveInt = 1
    strategy: str = "auto"
    precision: Literal[PRECISIONS] = "32"  # a YAML 32 is read as "32"
    accumulate_grad_batches: PositiveInt = 1
    gradient_clip_val: NonNegativeFloat | None = None
    checkpoint_every_n_steps: PositiveInt | None = 500
    # the newest N step checkpoints stay besides last.ckpt (0: only last.ckpt; None: every one, which a
    # long run pays for in disk: each demo ResNet-18 SimCLR checkpoint, with AdamW state, is 138 MB)
    keep_checkpoints: NonNegativeInt | None = 3
    log_every_n_steps: PositiveInt = 10
    seed: int = 0
    output_dir: str = "runs/run"
    progress_bar: bool = True
    deterministic: bool = False


#: The closed sections, declared once as typed dataclasses and checked by :mod:`medrep.options`.
SECTIONS = {"data": DataSection, "optim": OptimSection, "trainer": TrainerSection}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value  # YAML-dumpable


def _section_defaults(section: type) -> dict[str, Any]:
    return {f.name: _plain(f.default) for f in fields(section)}


DEFAULTS: dict[str, Any] = {
    "method": {"name": None},
    "model": {"name": "resnet18", "spatial_dims": 2, "in_channels": 1},
    # each source's own keys join data (medpix2: text_field, iu_xray: image_root, folder: class_folders)
    "data": {**_section_defaults(DataSection), **source_options()},
    # ViewAugment's defaults (tests/transforms checks they agree; importing it here would bring in torch)
    "augment": {
        "crop_scale": [0.35, 1.0],
        "rotate_deg": 15.0,
        "flip": True,
        "brightness": 0.4,
        "contrast": 0.4,
        "gamma": 0.3,
        "noise_std": 0.05,
        "blur_prob": 0.5,
        "blur_sigma": [0.1, 1.5],
        "cutout_prob": 0.0,
    },
    "optim": _section_defaults(OptimSection),
    "trainer": _section_defaults(TrainerSection),
}

OPEN_SECTIONS = ("method", "model")
class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string; a recipe author means a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def read_yaml(text: str):
    return yaml.load(text, Loader=_Loader)
def _merge(base: dict, update: dict, prefix: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        name = f"{prefix}{key}"
        if prefix == "" and key not in base:
            raise RecipeError(f"unknown recipe section; known: {', '.join(sorted(base))}", name)
        if prefix and prefix.split(".")[0] not in OPEN_SECTIONS and key not in base:
            raise RecipeError(f"unknown recipe key; known: {', '.join(sorted(base))}", name)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = _merge(base[key], value, f"{name}.")
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``optim.lr=3e-4`` -> (["optim", "lr"], 0.0003); the value is read as YAML."""
    if "=" not in text:
        raise RecipeError("an override must look like section.key=value", text)
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) < 2 or not all(parts):
        raise RecipeError("an override key must be section.key", key)
    try:
        value = read_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise RecipeError(f"cannot read value {raw!r}: {exc}", key) from exc
    return parts, value


def _nest(parts: list[str], value: Any) -> dict:
    out: dict = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        out = {part: out}
    return out


def bundled_recipes() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("medrep.configs").iterdir() if p.name.endswith(".yaml"))


def find_recipe(name_or_path: str | Path) -> Path:
    """A path to a YAML file, or the name of a recipe shipped with medrep."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = resources.files("medrep.configs") / f"{path.stem}.yaml"
    if path.suffix in ("", ".yaml") and bundled.is_file():
        return Path(str(bundled))
    raise RecipeError(f"no such recipe file or bundled recipe (bundled: {', '.join(bundled_recipes())})", name_or_path)


def _defaults() -> dict:
    """:data:`DEFAULTS`, plus the ``data`` keys of sources registered after this module was imported."""
    late = {key: value for key, value in source_options().items() if key not in DEFAULTS["data"]}
    return {**DEFAULTS, "data": {**DEFAULTS["data"], **late}} if late else DEFAULTS


def load_recipe(source: str | Path | dict | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Defaults, then the recipe file (or dict), then ``key=value`` overrides; checked and resolved."""
    if source is None:
        user: dict = {}
    elif isinstance(source, dict):
        user = source
    else:
        path = find_recipe(source)
        try:
            user = read_yaml(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise RecipeError(f"not valid YAML: {exc}", path) from exc
        if not isinstance(user, dict):
            raise RecipeError("a recipe must be a mapping of sections", path)
    recipe = _merge(_defaults(), user)
    for text in overrides:
        parts, value = parse_override(text)
        recipe = _merge(recipe, _nest(parts, value))
    return validate(recipe)


def validate(recipe: dict) -> dict:
    if not recipe["method"].get("name"):
        raise RecipeError("a recipe must name its method", "method.name")
    trainer, data = recipe["trainer"], recipe["data"]
    if isinstance(trainer["precision"], int) and not isinstance(trainer["precision"], bool):
        trainer["precision"] = str(trainer["precision"])  # YAML reads 32 as a number
    for name, section in SECTIONS.items():
        values, names = recipe[name], {f.name for f in fields(section)}
        declared = {k: v for k, v in values.items() if k in names}  # data also holds each source's own keys
        checked = check_options(section, declared, f"{name}.", name)
        values.update({k: _plain(v) for k, v in checked.items() if k in declared})
    if trainer["max_steps"] is None and trainer["max_epochs"] is None:
        raise RecipeError("set trainer.max_steps or trainer.max_epochs", "trainer")
    _check_source(data)
    if data["intensity"] == "ct_window" and (not isinstance(data["window"], (list, tuple)) or len(data["window"]) != 2):
        raise RecipeError("ct_window needs data.window: [low, high] in HU", "data.window")
    if recipe["model"]["spatial_dims"] not in (2, 3):
        raise RecipeError(f"must be 2 or 3, got {recipe['model']['spatial_dims']!r}", "model.spatial_dims")
    if data["spatial_dims"] is None:
        data["spatial_dims"] = recipe["model"]["spatial_dims"]
    _check_dims(data, "data.")
    model = recipe["model"]
    if data["source"] != "mixed" and model.get("name") != "vit2d3d" and data["spatial_dims"] != model["spatial_dims"]:
        raise RecipeError(f"the data hold {data['spatial_dims']}D images but model.spatial_dims is {model['spatial_dims']} "
                          "(only vit2d3d takes both)", "data.spatial_dims")
    if data["source"] == "mixed":
        _check_parts(recipe)
    _check_options(recipe)
    return recipe


def _check_dims(data: dict, prefix: str) -> None:
    dims = get_source(data["source"]).supported_dims
    if data["spatial_dims"] not in dims:
        raise RecipeError(f"source {data['source']!r} holds {' or '.join(f'{d}D' for d in dims)} images, "
                          f"got spatial_dims {data['spatial_dims']!r}", f"{prefix}spatial_dims")
    data["crops"] = check_crops(data.get("crops"), data["spatial_dims"])


def _check_parts(recipe: dict) -> None:
    """Each part of a ``mixed`` source is checked as a ``data`` section of its own, errors naming
    ``data.parts[i].<key>``; a part of a dimensionality the encoder cannot take is refused here."""
    from .data.sources.mixed import mixed_parts

    for i, (_, _, part) in enumerate(mixed_parts(recipe["data"])):
        prefix = f"data.parts[{i}]."
        declared = {k: v for k, v in part.items() if k in {f.name for f in fields(DataSection)}}
        check_options(DataSection, declared, prefix, "data part")
        unknown = sorted(set(part) - set(DEFAULTS["data"]))
        if unknown:
            raise RecipeError(f"unknown data keys {unknown}", f"{prefix}{unknown[0]}")
        if get_source(part["source"]).kind not in ("image", "image_text"):
            raise RecipeError(f"a part is an image or image-report source, got {part['source']!r}", f"{prefix}source")
        _check_dims(part, prefix)
        try:
            check_source_options(part)
        except MedrepError as exc:  # name the part's key, not the run's
            where = str(exc.where or "")
            raise RecipeError(str(exc).removeprefix(f"{where}: "), where.replace("data.", prefix, 1)) from exc
        if part["spatial_dims"] != recipe["model"]["spatial_dims"] and recipe["model"]["name"] != "vit2d3d":
            raise RecipeError(f"a {part['spatial_dims']}D part needs an encoder for both dimensionalities (model.name: vit2d3d); "
                              f"{recipe['model']['name']} is {recipe['model']['spatial_dims']}D", f"{prefix}spatial_dims")


def _check_options(recipe: dict) -> None:
    """``method.*``, ``model.*`` and ``augment.*`` against the registered method's ``Options``, the
    backbone builder's and ViewAugment's parameters: names and single values, as the constructors
    check them. Checks across options (channels divisible by groups...) stay with the builder."""
    from .methods import get_method  # lazy: these registries bring in torch, which reading a recipe does not need
    from .models import BACKBONES
    from .transforms import ViewAugment

    method = dict(recipe["method"])
    cls = get_method(method.pop("name"))
    check_options(cls.Options, method, "method.", cls.name)
    if recipe["model"]["spatial_dims"] not in cls.supported_dims:
        raise RecipeError(f"{cls.name} trains in {' or '.join(map(str, cls.supported_dims))}D only", "model.spatial_dims")
    model = dict(recipe["model"])
    name = model.pop("name", None)
    if name not in BACKBONES:
        raise RecipeError(f"unknown backbone {name!r}; available: {', '.join(sorted(BACKBONES))}", "model.name")
    check_options(BACKBONES[name], model, "model.", name)
    check_options(ViewAugment, recipe["augment"], "augment.", "augment")


def _check_source(data: dict) -> None:
    """``data.source`` (a registered pretraining source) and the keys each source declares."""
    sources = source_names(PRETRAIN_KINDS)
    if not isinstance(data["source"], str) or data["source"] not in sources:
        raise RecipeError(f"must be one of {', '.join(sources)}, got {data['source']!r}", "data.source")
    check_source_options(data)  # each source's check raises RecipeError naming data.<key>
    if data["source"] in source_names("image_text") and data.get("crops") not in (None, False):
        raise RecipeError(f"crops are for image sources; {data['source']!r} gives whole images with their reports", "data.crops")


def dump_recipe(recipe: dict, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(recipe, sort_keys=False))
