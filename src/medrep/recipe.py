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
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .data.datasets.crop_config import CROP_DEFAULTS as CROP_DEFAULTS  # re-exported: recipe users read the crop keys here
from .data.datasets.crop_config import check_crops
from .data.sources import PRETRAIN_KINDS, check_source_options, source_names, source_options
from .errors import RecipeError

DEFAULTS: dict[str, Any] = {
    "method": {"name": None},
    "model": {"name": "resnet18", "spatial_dims": 2, "in_channels": 1},
    "data": {
        # a registered source (medrep.data.sources): images: medmnist | folder | manifest; image-report
        # pairs: image_text (a CSV/JSONL manifest) | medpix2 | iu_xray (R2Gen annotation.json) | mimic_cxr
        "source": "medmnist",
        "path": None,  # None: the source's default (packaged PneumoniaMNIST, $MEDREP_DATA/medpix2, ...)
        "split": "train",
        "size": None,  # resize every image to this spatial size; None keeps it
        "intensity": "minmax",  # minmax | percentile | ct_window | none
        "window": None,  # [low, high] HU for ct_window
        "percentiles": [1.0, 99.0],
        "spatial_dims": None,  # None: follow model.spatial_dims
        "batch_size": 256,
        "num_workers": 0,
        "cache": True,
        "skip_bad": False,  # image sources: leave out unreadable images; image-text readers: bad studies
        # each source's own keys, declared with the source (medpix2: text_field, iu_xray: image_root, folder: class_folders)
        **source_options(),
        # K random crops per image with their centres in mm (medrep.data.CropDataset), or
        # null for whole images. Keys and defaults: CROP_DEFAULTS (medrep.data.datasets.crop_config).
        "crops": None,
    },
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
    "optim": {
        "name": "adamw",  # adamw | sgd | lars-free adam variants only
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "momentum": 0.9,
        "schedule": "cosine",  # cosine | constant
        "warmup_steps": 0,
    },
    "trainer": {
        "max_steps": 1000,
        "max_epochs": None,
        "accelerator": "auto",
        "devices": 1,
        "num_nodes": 1,
        "strategy": "auto",
        "precision": "32",
        "accumulate_grad_batches": 1,
        "gradient_clip_val": None,
        "checkpoint_every_n_steps": 500,
        "log_every_n_steps": 10,
        "seed": 0,
        "output_dir": "runs/run",
        "progress_bar": True,
        "deterministic": False,
    },
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
PRECISIONS = ("32", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "64", "64-true")


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
    trainer, data, optim = recipe["trainer"], recipe["data"], recipe["optim"]
    trainer["precision"] = str(trainer["precision"])
    if trainer["precision"] not in PRECISIONS:
        raise RecipeError(f"must be one of {', '.join(PRECISIONS)}", "trainer.precision")
    for section, key in (("trainer", "accumulate_grad_batches"), ("data", "batch_size"), ("trainer", "num_nodes")):
        value = recipe[section][key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RecipeError(f"must be a positive integer, got {value!r}", f"{section}.{key}")
    for key in ("max_steps", "max_epochs", "checkpoint_every_n_steps"):
        value = trainer[key]
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise RecipeError(f"must be a positive integer or null, got {value!r}", f"trainer.{key}")
    if trainer["max_steps"] is None and trainer["max_epochs"] is None:
        raise RecipeError("set trainer.max_steps or trainer.max_epochs", "trainer")
    if not isinstance(optim["lr"], (int, float)) or optim["lr"] <= 0:
        raise RecipeError(f"must be a positive number, got {optim['lr']!r}", "optim.lr")
    if optim["name"] not in ("adamw", "adam", "sgd"):
        raise RecipeError("must be adamw, adam or sgd", "optim.name")
    if optim["schedule"] not in ("cosine", "constant"):
        raise RecipeError("must be cosine or constant", "optim.schedule")
    _check_source(data)
    if data["intensity"] not in ("minmax", "percentile", "ct_window", "none"):
        raise RecipeError("must be minmax, percentile, ct_window or none", "data.intensity")
    if data["intensity"] == "ct_window" and (not isinstance(data["window"], (list, tuple)) or len(data["window"]) != 2):
        raise RecipeError("ct_window needs data.window: [low, high] in HU", "data.window")
    if recipe["model"]["spatial_dims"] not in (2, 3):
        raise RecipeError(f"must be 2 or 3, got {recipe['model']['spatial_dims']!r}", "model.spatial_dims")
    if data["spatial_dims"] is None:
        data["spatial_dims"] = recipe["model"]["spatial_dims"]
    data["crops"] = check_crops(data.get("crops"), data["spatial_dims"])
    _check_options(recipe)
    return recipe


def _check_options(recipe: dict) -> None:
    """``method.*``, ``model.*`` and ``augment.*`` against the registered method's ``Options``, the
    backbone builder's and ViewAugment's parameters: names and single values, as the constructors
    check them. Checks across options (channels divisible by groups...) stay with the builder."""
    from .methods import get_method  # lazy: medrep.data imports this module, and the registries bring in torch
    from .models import BACKBONES
    from .options import check_options
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
