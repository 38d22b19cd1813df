import pytest

from medrep.errors import RecipeError
from medrep.recipe import bundled_recipes, load_recipe, parse_override


def test_overrides_are_typed_and_nested():
    recipe = load_recipe("simclr_pneumoniamnist", ["optim.lr=3e-4", "trainer.max_steps=7", "data.size=[32, 32]", "method.temperature=0.5"])
    assert recipe["optim"]["lr"] == pytest.approx(3e-4)
    assert recipe["trainer"]["max_steps"] == 7
    assert recipe["data"]["size"] == [32, 32]
    assert recipe["method"]["temperature"] == 0.5
    assert recipe["data"]["spatial_dims"] == 2


def test_every_bundled_recipe_resolves():
    names = bundled_recipes()
    assert {"simclr_pneumoniamnist", "demo_simclr_pneumoniamnist", "simclr_3d_volumes"} <= set(names)
    for name in names:
        assert load_recipe(name)["method"]["name"]


@pytest.mark.parametrize(
    "override, field",
    [
        ("optim.lrr=1", "optim.lrr"),
        ("trainr.max_steps=1", "trainr"),
        ("trainer.precision=8", "trainer.precision"),
        ("data.batch_size=0", "data.batch_size"),
        ("data.batch_size=abc", "data.batch_size"),
        ("optim.lr=-1", "optim.lr"),
        ("data.source=web", "data.source"),
        ("model.spatial_dims=4", "model.spatial_dims"),
        ("trainer.accumulate_grad_batches=1.5", "trainer.accumulate_grad_batches"),
    ],
)
def test_bad_values_name_the_field(override, field):
    with pytest.raises(RecipeError) as err:
        load_recipe("simclr_pneumoniamnist", [override])
    assert field in str(err.value)


def test_bad_override_syntax():
    with pytest.raises(RecipeError, match="section.key=value"):
        parse_override("lr")
    with pytest.raises(RecipeError):
        parse_override("lr=3")


def test_missing_recipe_file_is_named(tmp_path):
    with pytest.raises(RecipeError, match="nope.yaml"):
        load_recipe(tmp_path / "nope.yaml")


def test_recipe_must_name_a_method():
    with pytest.raises(RecipeError, match="method.name"):
        load_recipe({"model": {"name": "resnet18"}})


def test_invalid_yaml_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: [unclosed")
    with pytest.raises(RecipeError, match="bad.yaml"):
        load_recipe(bad)


def test_closed_sections_are_checked_by_their_declared_types():
    from medrep.recipe import load_recipe

    for override, field in (("optim.lr=0", "optim.lr"), ("optim.weight_decay=-1", "optim.weight_decay"),
                            ("optim.name=lars", "optim.name"), ("trainer.precision=33", "trainer.precision"),
                            ("trainer.progress_bar=maybe", "trainer.progress_bar"), ("trainer.seed=1.5", "trainer.seed"),
                            ("data.batch_size=0", "data.batch_size"), ("data.num_workers=-1", "data.num_workers"),
                            ("data.intensity=foo", "data.intensity"), ("data.size=[8, 0]", "data.size"),
                            ("data.spatial_dims=4", "data.spatial_dims"), ("data.cache=1", "data.cache")):
        with pytest.raises(RecipeError, match="^" + field.replace(".", r"\.") + ":"):
            load_recipe("simclr_pneumoniamnist", [override])
    recipe = load_recipe("simclr_pneumoniamnist", ["trainer.precision=32", "optim.lr=1", "trainer.devices=[0, 1]"])
    assert recipe["trainer"]["precision"] == "32" and recipe["optim"]["lr"] == 1.0 and recipe["trainer"]["devices"] == [0, 1]


def test_augment_defaults_are_view_augments_own():
    from medrep.options import options_of
    from medrep.recipe import DEFAULTS
    from medrep.transforms import ViewAugment

    own = {name: list(o.default) if isinstance(o.default, tuple) else o.default for name, o in options_of(ViewAugment).items()}
    assert DEFAULTS["augment"] == own
