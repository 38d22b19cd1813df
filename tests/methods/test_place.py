"""PLACE: sentences from one text pass, the token grid, switches, gradients, training through the engine, bad input."""

import csv
import math
from pathlib import Path

import pytest
import torch
from helpers import brightness_pairs, image_text_recipe, require_text_model

from medrep.engine import pretrain
from medrep.errors import DataError, RecipeError
from medrep.methods.place import SentenceBatch, token_grid
from medrep.recipe import load_recipe

require_text_model()

torch.set_num_threads(1)
RESNET = {"name": "resnet10", "spatial_dims": 2, "conv1_t_size": 3, "conv1_t_stride": 1}
VIT = dict(name="vit", spatial_dims=2, img_size=32, patch_size=8, hidden_size=32, mlp_dim=64, num_layers=2, num_heads=2)
TINY = {"embed_dim": 32, "proj_hidden_dim": 32, "max_length": 32, "queries": 4, "decoder_width": 32, "decoder_heads": 4,
        "observation_dim": 16}
REPORTS = [["A bright image.", "No effusion."], ["Hyperintensity of the left caudate nucleus."],
           ["Dark.", "Case 3: T2 hyperintense lesion.", "Stable."], ["Normal study."]]


def raw_recipe(data: Path, out: Path, model: dict | None = None, **method) -> dict:
    return image_text_recipe({"name": "place", **TINY, **method}, model or RESNET, data, out, steps=2)


def build(model: dict | None = None, **method):
    from medrep.methods import build_method

    return build_method(load_recipe(raw_recipe(Path("unused.csv"), Path("unused"), model, **method)))


def batch(reports=REPORTS, spatial=(32, 32)) -> dict:
    return {"image": torch.rand(len(reports), 1, *spatial), "text": [" ".join(r) for r in reports], "sentences": reports,
            "study": [f"s{i}" for i in range(len(reports))]}


@pytest.fixture(scope="module")
def place():
    return build()


def test_sentence_vectors_average_exactly_their_own_tokens(place):
    enc = place.text_encoder
    report = SentenceBatch(enc, REPORTS, ["a", "b", "c", "d"], max_sentences=16)
    assert report.mask.tolist() == [[True, True, False], [True, False, False], [True, True, True], [True, False, False]]
    assert report.cut == 0 and report.count == 7
    assert torch.allclose(report.matrix.sum(2), report.mask.float())
    ids = report.tokens["input_ids"]
    for b, sentences in enumerate(REPORTS):
        for k, sentence in enumerate(sentences):  # the tokens of sentence k spell sentence k, nothing else
            tokens = ids[b][report.matrix[b, k] > 0]
            assert enc.tokenizer.decode(tokens).replace(" ", "") == sentence.lower().replace(" ", "")
    # one pass over the joined report: a sentence vector is the mean of those token states
    out = enc(report.tokens)
    vectors = report.matrix @ out["tokens"]
    first = ids[2][report.matrix[2, 1] > 0]
    positions = (report.matrix[2, 1] > 0).nonzero().flatten()
    assert len(first) == len(positions)
    assert torch.allclose(vectors[2, 1], out["tokens"][2, positions].mean(0), atol=1e-6)


def test_sentences_over_the_limit_or_truncated_are_cut_and_counted(place):
    enc = place.text_encoder
    report = SentenceBatch(enc, REPORTS, ["a", "b", "c", "d"], max_sentences=2)
    assert report.cut == 1 and report.mask.shape == (4, 2) and report.count == 6
    long = [[f"Finding number {i} is here." for i in range(10)]]
    report = SentenceBatch(enc, long, ["x"], max_sentences=16)  # max_length 32 tokens keeps ~4 of the 10
    assert 0 < report.count < 10 and report.cut == 10 - report.count


@pytest.mark.parametrize("sentences", [[], ["   "]])
def test_report_without_sentences_names_the_study(place, sentences):
    with pytest.raises(DataError, match="study s9: the report has no sentence"):
        SentenceBatch(place.text_encoder, [["Fine."], sentences], ["s0", "s9"], max_sentences=4)


@pytest.mark.parametrize("spatial, tokens, grid", [((128, 128), 16, (4, 4)), ((128, 96), 12, (4, 3)), ((32, 32, 32), 8, (2, 2, 2)),
                                                   ((32, 32), 16, (4, 4))])
def test_token_grid(spatial, tokens, grid):
    assert token_grid(spatial, tokens) == grid


def test_token_grid_refuses_what_does_not_fit():
    with pytest.raises(DataError, match="data.size"):
        token_grid((100, 100), 7)


@pytest.mark.parametrize("model, options", [(None, {}), (VIT, {}), (None, {"match": "hungarian"}), (None, {"alignment": False}),
                                            (None, {"correlation": False})])
def test_every_trainable_parameter_gets_a_gradient(model, options):
    method = build(model, **options).train()
    out = method.training_step(batch())
    out["loss"].backward()
    trainable = {n: p for n, p in method.named_parameters() if p.requires_grad}
    assert [n for n, p in trainable.items() if p.grad is None] == []  # DDP needs no unused parameters
    assert all(torch.isfinite(p.grad).all() for p in trainable.values())
    assert all(torch.isfinite(v) for v in out.values())
    parts = {"loss_global"} | ({"loss_pcma"} if options.get("alignment", True) else set()) | \
            ({"loss_cce"} if options.get("correlation", True) else set())
    assert parts == {k for k in out if k.startswith("loss_")}
    assert out["sentences"] == 7 / 4 and out["sentences_cut"] == 0


def test_switches_remove_the_modules():
    method = build(alignment=False, correlation=False)
    assert not hasattr(method, "extractor") and not hasattr(method, "correlator") and not hasattr(method, "sentence_projector")


def test_loss_is_the_weighted_sum_of_its_terms():
    torch.manual_seed(0)
    method = build(global_weight=0.5, alignment_weight=2.0, correlation_weight=3.0).eval()
    torch.manual_seed(1)  # the same mask in both calls
    out = method.training_step(batch())
    expected = 0.5 * out["loss_global"] + 2.0 * out["loss_pcma"] + 3.0 * out["loss_cce"]
    assert torch.allclose(out["loss"].detach(), expected, atol=1e-5)


def test_the_observations_are_the_queries_reading_local_tokens(place):
    place.eval()
    with torch.no_grad():
        _, local = place.encoder.forward_with_local(torch.rand(2, 1, 32, 32))
        obs, attention = place.observations(local)
    assert obs.shape == (2, 4, 16) and attention.shape == (2, 4, local.shape[1])
    assert (attention >= 0).all() and torch.allclose(attention.sum(2), torch.ones(2, 4), atol=1e-5)


def test_3d_volumes_train():
    method = build({"name": "resnet10", "spatial_dims": 3, "conv1_t_size": 3, "conv1_t_stride": 1}).train()
    out = method.training_step(batch(spatial=(32, 32, 32)))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and {"loss_pcma", "loss_cce"} <= set(out)


@pytest.mark.slow
def test_pretrain_and_load_method(tmp_path):
    from medrep.checkpoint import load_method

    pairs = brightness_pairs(tmp_path / "pairs")
    run = pretrain(load_recipe(raw_recipe(pairs, tmp_path / "run")))
    rows = list(csv.DictReader((run / "logs" / "version_0" / "metrics.csv").open()))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert any(r.get("train/loss_pcma") for r in rows) and any(r.get("train/loss_cce") for r in rows)
    method = load_method(run)
    assert method.name == "place" and not method.training
    with torch.no_grad():
        img = method.encode_image(torch.rand(3, 1, 32, 32))
        txt = method.encode_text(["a bright image", "a dark image", "nothing"])
    assert img.shape == txt.shape == (3, 32)


def test_recipe_is_convirts_but_for_the_method_and_the_text():
    convirt, place = load_recipe("convirt_medpix"), load_recipe("place_medpix")
    assert place["data"]["text_field"] == "caption+findings"
    assert {**place["data"], "text_field": "caption"} == convirt["data"]
    for section in ("model", "augment", "optim"):
        assert place[section] == convirt[section], section
    assert {k: v for k, v in place["trainer"].items() if k != "output_dir"} == \
           {k: v for k, v in convirt["trainer"].items() if k != "output_dir"}
    from medrep.methods import method_options

    assert set(place["method"]) - {"name"} == set(method_options("place"))
    shared = set(method_options("convirt")) - {"text_sampling"}
    assert {k: place["method"][k] for k in shared} == {k: convirt["method"][k] for k in shared}


@pytest.mark.parametrize("override, where", [
    ("method.queries=0", "method.queries"),
    ("method.max_sentences=0", "method.max_sentences"),
    ("method.mask_ratio=1.5", "method.mask_ratio"),
    ("method.match=greedy", "method.match"),
    ("method.alignment_weight=-1", "method.alignment_weight"),
    ("method.text_sampling=sentence", "method.text_sampling"),
    ("method.pcma_temperature=0", "method.pcma_temperature"),
])
def test_bad_method_options_name_the_field(override, where):
    from medrep.methods import build_method

    with pytest.raises(RecipeError, match=f"^{where}"):
        build_method(load_recipe(raw_recipe(Path("unused.csv"), Path("unused")), [override]))


def test_an_image_tower_without_local_tokens_names_model_name():
    with pytest.raises(RecipeError, match="^model.name"):
        build({"name": "unet", "channels": [8, 8, 8, 8, 8]})


def test_one_local_token_is_too_few_for_the_correlation_proxy():
    method = build({"name": "resnet10", "spatial_dims": 2}).train()  # 32 px through a stride-32 ResNet: one cell
    with pytest.raises(DataError, match="^data.size: the correlation proxy needs at least 2 local tokens"):
        method.training_step(batch())
