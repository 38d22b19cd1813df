"""medrep.options: one checker for method, backbone and augment options, and its use at load time."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal

import pytest

from medrep.errors import RecipeError
from medrep.options import (
    Fraction,
    MinMax,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Range,
    check_options,
    check_value,
    checked,
    options_of,
)
from medrep.recipe import bundled_recipes, load_recipe


@pytest.mark.parametrize("value, annotation, expected", [
    (True, bool, True),
    (3, int, 3),
    (3, float, 3.0),
    (2.5, PositiveFloat, 2.5),
    (0, NonNegativeInt, 0),
    (0.0, NonNegativeFloat, 0.0),
    (1, Fraction, 1.0),
    (None, PositiveInt | None, None),
    (4, PositiveInt | None, 4),
    ("all", NonNegativeInt | Literal["all", "none"], "all"),
    ("x", str | None, "x"),
    ([1, 2], Sequence[PositiveInt], [1, 2]),
    ((1, 2), Sequence[PositiveInt], (1, 2)),
    ([1, 2.5], list[float], [1.0, 2.5]),
    ({"a": 1}, dict | None, {"a": 1}),
    ([0.2, 0.5], Annotated[Sequence[float], MinMax(gt=0, le=1)], (0.2, 0.5)),
    (0.5, Annotated[float | Sequence[float], MinMax(gt=0, scalar=True)], (0.5, 0.5)),
    (179, Annotated[float, Range(ge=0, le=180)], 179.0),
])
def test_values_that_fit(value, annotation, expected):
    out = check_value(value, annotation, "method.x")
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize("value, annotation, message", [
    (1, bool, "must be true or false, got 1"),
    ("yes", bool, "must be true or false"),
    (True, int, "must be an integer, got True"),
    (2.0, int, "must be an integer"),
    (True, float, "must be a number"),
    (float("nan"), float, "must be a number, got nan"),
    (float("inf"), PositiveFloat, "must be a positive number"),
    (0, PositiveInt, "must be a positive integer, got 0"),
    (-1, NonNegativeInt, "must be an integer >= 0, got -1"),
    (-0.1, NonNegativeFloat, "must be a number >= 0"),
    (1.5, Fraction, r"must be a number in \[0, 1\], got 1.5"),
    (0, PositiveInt | None, "must be a positive integer or null, got 0"),
    ("max", Literal["mean", "cls"], "must be one of mean, cls, got 'max'"),
    (True, Literal[2, 3], "must be one of 2, 3"),
    ("abc", Sequence[int], "must be a list, each an integer"),
    ([1, 0], Sequence[PositiveInt], "must be a list, each a positive integer"),
    ([0.0, 1.0], Annotated[Sequence[float], MinMax(gt=0, le=1)],
     r"must be a \[min, max\] pair of numbers within \(0, 1\], got \[0.0, 1.0\]"),
    ([0.8, 0.5], Annotated[Sequence[float], MinMax(gt=0, le=1)], "min 0.8 is larger than max 0.5"),
    (0.5, Annotated[Sequence[float], MinMax(gt=0, le=1)], r"must be a \[min, max\] pair"),
    ([1], dict | None, "must be a mapping or null"),
])
def test_values_that_do_not_fit_name_the_field(value, annotation, message):
    with pytest.raises(RecipeError, match=f"^method.x: {message}") as err:
        check_value(value, annotation, "method.x")
    assert err.value.where == "method.x"


def test_unsupported_annotation_is_the_authors_error():
    with pytest.raises(TypeError, match="unsupported"):
        check_value(1, set[int], "method.x")


@dataclass(frozen=True, kw_only=True)
class _Base:
    size: PositiveInt = 4
    rate: Fraction = 0.5


@dataclass(frozen=True, kw_only=True)
class _Child(_Base):
    size: PositiveInt = 8
    rate: float = field(default=0.25, init=False)
    mode: Literal["a", "b"] = "a"


def test_dataclass_options_inherit_change_defaults_and_fix_fields():
    assert {k: o.default for k, o in options_of(_Child).items()} == {"size": 8, "mode": "a"}
    assert check_options(_Child, {"mode": "b"}, "method.") == {"size": 8, "mode": "b"}
    assert _Child(**check_options(_Child, {}, "method.")).rate == 0.25
    with pytest.raises(RecipeError, match=r"^method.rate: child takes no option 'rate'; options: size, mode"):
        check_options(_Child, {"rate": 0.1}, "method.", "child")
    with pytest.raises(RecipeError, match="^method.size: must be a positive integer"):
        check_options(_Child, {"size": 0}, "method.")


def test_checked_functions_check_their_options_on_every_call():
    @checked("model.")
    def build(spatial_dims: int, width: PositiveInt = 2, scale: PositiveFloat = 1.0):
        return spatial_dims, width, scale

    assert build(3, width=4, scale=2) == (3, 4, 2.0)
    assert list(options_of(build)) == ["width", "scale"]  # parameters without a default are arguments
    with pytest.raises(RecipeError, match="^model.width"):
        build(2, width=0)
    with pytest.raises(TypeError):
        build(2, depth=3)


def test_an_undecorated_or_unannotated_options_subclass_is_refused():
    from medrep.methods.convirt import ConVIRT
    from medrep.methods.registry import register_method

    class Undecorated(ConVIRT):
        class Options(ConVIRT.Options):
            extra: int = 1

    with pytest.raises(TypeError, match="must be decorated"):
        register_method("undecorated_test")(Undecorated)

    class Unannotated(ConVIRT):
        @dataclass(frozen=True, kw_only=True)
        class Options(ConVIRT.Options):
            embed_dim = 64

    with pytest.raises(TypeError, match="without its annotation"):
        register_method("unannotated_test")(Unannotated)


#: the options and defaults GLoRIA and MGCA had before they were declared as ConVIRT.Options subclasses
GLORIA_DEFAULTS = dict(
    embed_dim=768, proj_hidden_dim=512, proj_layers=1, text_model=None, text_trainable_layers=2, text_pooling="mean",
    max_length=128, temperature=0.1, learn_temperature=False, gather=True, text_sampling="report", local_weight=1.0,
    temp_attention=4.0, temp_similarity=5.0, temp_local=10.0, local_agg="sum",
)
MGCA_DEFAULTS = dict(
    embed_dim=128, proj_hidden_dim=2048, proj_layers=2, last_bn=True, text_model=None, text_trainable_layers=2,
    text_pooling="mean", max_length=128, temperature=0.07, learn_temperature=False, gather=True, text_sampling="report",
    local_temperature=0.1, bidirectional=True, word_weights="attention", patch_weights="attention", num_prototypes=500,
    epsilon=0.05, sinkhorn_iters=3, proto_temperature=0.2, freeze_prototypes_steps=0, instance_weight=1.0,
    token_weight=1.0, prototype_weight=1.0,
)


def test_gloria_and_mgca_defaults_are_unchanged():
    from medrep.methods import get_method, method_options

    assert method_options("gloria") == GLORIA_DEFAULTS
    assert method_options("mgca") == MGCA_DEFAULTS
    for name in ("gloria", "mgca"):  # ConVIRT's i2t_weight is fixed at 0.5, not an option
        options = get_method(name).Options()
        assert options.i2t_weight == 0.5 and "i2t_weight" not in method_options(name)
    assert method_options("convirt")["i2t_weight"] == 0.5


def test_capabilities_are_declared_on_the_class():
    from medrep.methods import available_methods, get_method

    text = {name for name in available_methods() if get_method(name).needs_text}
    local = {name for name in available_methods() if get_method(name).needs_local_features}
    dense = {name for name in available_methods() if get_method(name).needs_dense}
    assert text == {"convirt", "gloria", "mgca", "place", "unimedi"} and local == {"gloria", "mgca", "place"} and dense == {"cover"}


def test_isimed_pairs_are_the_losses():
    from typing import get_args, get_type_hints

    from medrep.losses.isimed import PAIRS
    from medrep.methods.isimed import ISImed

    assert get_args(get_type_hints(ISImed.Options)["pairs"]) == PAIRS


@pytest.mark.parametrize("name", bundled_recipes())
def test_a_misspelled_method_option_fails_at_load(name):
    recipe = load_recipe(name)
    from medrep.methods import method_options

    option = next(iter(method_options(recipe["method"]["name"])), "temperature")
    with pytest.raises(RecipeError, match=rf"^method\.{option}x: {recipe['method']['name']} takes no option"):
        load_recipe(name, [f"method.{option}x=1"])
    with pytest.raises(RecipeError, match=r"^model\.depthh: "):
        load_recipe(name, ["model.depthh=1"])


@pytest.mark.parametrize("override, where", [
    ("method.temperature=warm", "method.temperature"),
    ("method.learn_temperature=1", "method.learn_temperature"),
    ("method.embed_dim=1.5", "method.embed_dim"),
    ("method.text_sampling=word", "method.text_sampling"),
    ("model.in_channels=true", "model.in_channels"),
    ("model.widen_factor=-1", "model.widen_factor"),
    ("model.name=resnet19", "model.name"),
    ("augment.flip=1", "augment.flip"),
    ("augment.blur_sigma=[2.0, 1.0]", "augment.blur_sigma"),
])
def test_wrong_values_fail_at_load_naming_the_field(override, where):
    with pytest.raises(RecipeError) as err:
        load_recipe("convirt_medpix", [override])
    assert err.value.where == where
