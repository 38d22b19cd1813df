"""GLoRIA and MGCA: local image features, word pooling, training through the engine, reloading, options."""

import csv
import math
from pathlib import Path

import pytest
import torch
from helpers import brightness_pairs, image_text_recipe, require_text_model

from medrep.engine import pretrain
from medrep.errors import RecipeError
from medrep.models import build_backbone
from medrep.recipe import load_recipe

require_text_model()

torch.set_num_threads(1)
VIT = dict(name="vit", spatial_dims=2, img_size=32, patch_size=8, hidden_size=32, mlp_dim=64, num_layers=2, num_heads=2)
RESNET = {"name": "resnet10", "spatial_dims": 2, "conv1_t_size": 3, "conv1_t_stride": 1}
TINY = {
    "gloria": {"embed_dim": 32, "max_length": 16},
    "mgca": {"embed_dim": 32, "proj_hidden_dim": 32, "max_length": 16, "num_prototypes": 8},
}
TEXTS = ["A bright image.", "Hyperintensity of the left caudate nucleus.", "dark", "Case 3: T2 hyperintense lesion."]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return brightness_pairs(tmp_path_factory.mktemp("pairs"))


def raw_recipe(name: str, data: Path, out: Path, model: dict | None = None, **method) -> dict:
    return image_text_recipe({"name": name, **TINY[name], **method}, model or RESNET, data, out, steps=2)


def build(name: str, model: dict | None = None, **method):
    from medrep.methods import build_method

    return build_method(load_recipe(raw_recipe(name, Path("unused.csv"), Path("unused"), model, **method)))


@pytest.mark.parametrize("config, shape, n", [
    (dict(RESNET), (2, 1, 32, 32), 4),  # 3x3 stride-1 stem, max-pool, three stride-2 stages: 2x2
    (dict(name="resnet18", spatial_dims=2), (2, 1, 64, 64), 4),
    (dict(name="resnet10", spatial_dims=3), (2, 1, 32, 32, 32), 1),
    (dict(name="resnet18", spatial_dims=3, conv1_t_stride=1), (2, 1, 32, 32, 32), 8),
    (VIT, (2, 1, 32, 32), 16),
    (dict(name="densenet121", spatial_dims=2), (2, 1, 64, 64), 4),
])
def test_backbone_local_features_come_from_the_same_pass(config, shape, n):
    net = build_backbone(config).eval()
    x = torch.rand(shape)
    with torch.no_grad():
        pooled, local = net.forward_with_local(x)
        assert local.shape == (2, n, net.local_dim) and net.local_dim == net.out_dim
        assert torch.allclose(pooled, net(x), atol=1e-5) and torch.equal(net.local(x), local)
    if config["name"].startswith("resnet"):  # the map, flattened row-major, averages to the pooled vector
        assert torch.allclose(local.mean(1), pooled, atol=1e-5)


def test_backbone_without_local_features_names_model_name():
    net = build_backbone({"name": "unet", "channels": [8, 8, 8, 8, 8]})
    assert net.local_dim is None
    with pytest.raises(RecipeError, match="^model.name"):
        net.local(torch.rand(1, 1, 16, 16))
    with pytest.raises(RecipeError, match="^model.name"):
        build("gloria", {"name": "unet", "channels": [8, 8, 8, 8, 8]})


@pytest.fixture(scope="module")
def mgca():
    return build("mgca")


def test_word_pooling_is_the_mean_of_each_words_tokens(mgca):
    from medrep.methods.gloria import text_features

    encoder = mgca.text_encoder.eval()
    with torch.no_grad():
        out = text_features(encoder, TEXTS)
    spans = encoder.word_spans(TEXTS)
    assert any(len(span.tokens) > 1 for words in spans for span in words)  # some words are split into pieces
    assert out["words"].shape == (4, max(map(len, spans)), encoder.out_dim)
    for b, words in enumerate(spans):
        assert out["word_mask"][b].sum() == len(words) and not out["word_mask"][b, len(words):].any()
        for w, span in enumerate(words):
            assert torch.allclose(out["words"][b, w], out["tokens"][b, list(span.tokens)].mean(0), atol=1e-6)
        assert not out["words"][b, len(words):].any()
    assert 0 not in {t for words in spans for s in words for t in s.tokens}  # [CLS] belongs to no word


def test_text_cls_attention_equals_the_models_own(mgca):
    encoder = mgca.text_encoder.eval()
    tokens = encoder.tokenize(TEXTS)
    with torch.no_grad():
        out = encoder(tokens)
        ours = mgca._text_cls_attention(out["mask"])
        model = encoder.model
        previous = model.config._attn_implementation
        model.set_attn_implementation("eager")
        try:
            theirs = model(**tokens, output_attentions=True).attentions[-1][:, :, 0].mean(1)
        finally:
            model.set_attn_implementation(previous)
    assert torch.allclose(ours, theirs, atol=1e-5) and torch.allclose(ours.sum(1), torch.ones(4))


@pytest.mark.parametrize("name, model", [("gloria", None), ("mgca", None), ("mgca", VIT)])
def test_every_trainable_parameter_gets_a_gradient(name, model):
    method = build(name, model).train()
    out = method.training_step({"image": torch.rand(4, 1, 32, 32), "text": TEXTS})
    out["loss"].backward()
    trainable = {n: p for n, p in method.named_parameters() if p.requires_grad}
    assert [n for n, p in trainable.items() if p.grad is None] == []  # DDP needs no unused parameters
    assert all(torch.isfinite(p.grad).all() for p in trainable.values() if p.grad is not None)
    assert any(n.startswith("text_encoder.model.encoder.layer.5.") for n in trainable)
    assert all(torch.isfinite(v) for v in out.values())
    parts = {"gloria": {"loss_global", "loss_local"}, "mgca": {"loss_instance", "loss_token", "loss_prototype"}}[name]
    assert parts <= set(out)
    if model is not None:  # the ViT's last block keeps its attention for the patch weights
        assert method._vit_attention[0].att_mat.shape == (4, 2, 17, 17)


def test_mgca_prototypes_get_zero_gradients_while_frozen():
    method = build("mgca", freeze_prototypes_steps=2).train()
    batch = {"image": torch.rand(4, 1, 32, 32), "text": TEXTS}
    for done, frozen in ((0, True), (1, True), (2, False)):  # optimiser steps done before the batch
        method.zero_grad()
        method.training_step(batch)["loss"].backward()
        grad = method.prototypes.weight.grad
        assert grad is not None and bool(grad.abs().sum() == 0) == frozen
        method.on_train_batch_end(done + 1, 10)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gloria", "mgca"])
def test_pretrain_and_load_method_rebuild_the_model(name, pairs, tmp_path):
    from medrep.checkpoint import load_method

    run = pretrain(load_recipe(raw_recipe(name, pairs, tmp_path / "run")))
    rows = list(csv.DictReader((run / "logs" / "version_0" / "metrics.csv").open()))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    method = load_method(run)
    assert method.name == name and not method.training
    with torch.no_grad():
        img = method.encode_image(torch.rand(3, 1, 32, 32))
        txt = method.encode_text(["a bright image", "a dark image", "nothing"])
    assert img.shape == txt.shape == (3, 32)
    assert torch.allclose(img.norm(dim=1), torch.ones(3), atol=1e-5) and torch.allclose(txt.norm(dim=1), torch.ones(3), atol=1e-5)


def test_recipes_differ_from_convirt_only_in_the_method():
    convirt = load_recipe("convirt_medpix")
    for name in ("gloria", "mgca"):
        other = load_recipe(f"{name}_medpix")
        assert other["method"]["name"] == name
        for section in ("model", "data", "augment", "optim"):
            assert other[section] == convirt[section], section
        assert {k: v for k, v in other["trainer"].items() if k != "output_dir"} == \
               {k: v for k, v in convirt["trainer"].items() if k != "output_dir"}
    from medrep.methods import method_options

    assert set(load_recipe("mgca_medpix")["method"]) - {"name"} == set(method_options("mgca"))
    assert set(load_recipe("gloria_medpix")["method"]) - {"name"} == set(method_options("gloria"))


@pytest.mark.parametrize("name, override, where", [
    ("gloria", "method.local_weight=-1", "method.local_weight"),
    ("gloria", "method.temp_attention=0", "method.temp_attention"),
    ("gloria", "method.local_agg=max", "method.local_agg"),
    ("gloria", "method.temperature=0", "method.temperature"),
    ("gloria", "method.i2t_weight=0.5", "method.i2t_weight"),
    ("gloria", "method.text_trainable_layers=-1", "method.text_trainable_layers"),
    ("mgca", "method.num_prototypes=0", "method.num_prototypes"),
    ("mgca", "method.epsilon=0", "method.epsilon"),
    ("mgca", "method.sinkhorn_iters=1.5", "method.sinkhorn_iters"),
    ("mgca", "method.word_weights=cls", "method.word_weights"),
    ("mgca", "method.patch_weights=none", "method.patch_weights"),
    ("mgca", "method.freeze_prototypes_steps=-1", "method.freeze_prototypes_steps"),
    ("mgca", "method.token_weight=-1", "method.token_weight"),
    ("mgca", "method.last_bn=yes please", "method.last_bn"),
    ("mgca", "method.local_temperature=0", "method.local_temperature"),
    ("mgca", "method.text_pooling=max", "method.text_pooling"),
])
def test_bad_method_options_name_the_field(name, override, where):
    from medrep.methods import build_method

    with pytest.raises(RecipeError, match=f"^{where}"):
        build_method(load_recipe(raw_recipe(name, Path("unused.csv"), Path("unused")), [override]))
