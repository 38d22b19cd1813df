"""explain: PLACE's sentence-query maps and GLoRIA's word-region maps of one pair, the PNG and JSON, the CLI."""

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import brightness_pairs, image_text_recipe, require_text_model, tiny_recipe

from medrep.cli import main
from medrep.data.io.reports import split_sentences
from medrep.errors import MedrepError
from medrep.evaluate.explain import explain_pair, plot_explanation
from medrep.recipe import dump_recipe, load_recipe

require_text_model()

torch.set_num_threads(1)
RESNET = {"name": "resnet10", "spatial_dims": 2, "conv1_t_size": 3, "conv1_t_stride": 1}
TINY = {
    "place": {"embed_dim": 32, "proj_hidden_dim": 32, "max_length": 32, "queries": 4, "decoder_width": 32, "decoder_heads": 4,
              "observation_dim": 16},
    "gloria": {"embed_dim": 32, "max_length": 32},
    "convirt": {"embed_dim": 32, "proj_hidden_dim": 32, "max_length": 32},
}
REPORT = "A bright image. No effusion.\n\nHyperintensity of the left caudate nucleus, which is long enough to wrap in a title."
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def raw_recipe(name: str, data: Path, out: Path, model: dict | None = None, **method) -> dict:
    return image_text_recipe({"name": name, **TINY[name], **method}, model or RESNET, data, out, steps=1)


def build(name: str, model: dict | None = None, **method):
    from medrep.methods import build_method

    return build_method(load_recipe(raw_recipe(name, Path("unused.csv"), Path("unused"), model, **method))).eval()


@pytest.fixture(scope="module")
def place():
    return build("place")


def _is_distribution(m) -> bool:
    return bool((m >= 0).all()) and math.isclose(float(m.sum()), 1.0, abs_tol=1e-5)


def test_place_maps_sentence_by_sentence_with_the_training_match(place):
    torch.manual_seed(0)
    out = explain_pair(place, torch.rand(1, 64, 64), REPORT)  # a stride-16 tiny ResNet: a 4x4 token grid
    assert out["kind"] == "sentences" and out["grid"] == [4, 4] and out["cut"] == [] and out["match"] == "max"
    assert [i["text"] for i in out["items"]] == split_sentences(REPORT) and len(out["items"]) == 3
    for item in out["items"]:
        assert item["map"].shape == (4, 4) and _is_distribution(item["map"])
        assert item["query"] == int(item["cosines"].argmax()) and item["cosine"] == pytest.approx(float(item["cosines"].max()))
        assert len(item["cosines"]) == 4 and item["slice"] is None
    assert -1 <= out["global_cosine"] <= 1


def test_place_maps_are_the_matched_queries_attention(place):
    image = torch.rand(1, 64, 64)
    out = explain_pair(place, image, REPORT)
    with torch.no_grad():
        _, local = place.encoder.forward_with_local(image[None])
        _, attention = place.observations(local)
    for item in out["items"]:
        assert torch.allclose(torch.as_tensor(item["map"]).flatten(), attention[0, item["query"]], atol=1e-6)


def test_place_cuts_at_max_sentences_and_hungarian_matches_one_to_one():
    out = explain_pair(build("place", max_sentences=2, match="hungarian"), torch.rand(1, 64, 64), REPORT)
    assert len(out["items"]) == 2 and out["cut"] == split_sentences(REPORT)[2:] and out["n_sentences"] == 3
    assert len({i["query"] for i in out["items"]}) == 2  # 2 sentences, 4 queries: one-to-one


def test_gloria_word_maps_are_the_losss_attention():
    from medrep.losses.vlp_local import _gloria_scores
    from medrep.methods.gloria import text_features

    gloria = build("gloria", max_length=64)
    image = torch.rand(1, 64, 64)
    out = explain_pair(gloria, image, REPORT)
    words = [span.text for span in gloria.text_encoder.word_spans([out["report"]])[0]]
    assert out["kind"] == "words" and [i["text"] for i in out["items"]] == words and out["temp_attention"] == 4.0
    assert out["words_cut"] == 0 and out["n_words"] == len(words) == 24
    short = explain_pair(build("gloria", max_length=16), image, REPORT)  # 14 tokens between [CLS] and [SEP]
    assert short["n_words"] == 24 and 0 < short["words_cut"] == 24 - len(short["items"])
    for item in out["items"]:
        assert item["map"].shape == (4, 4) and _is_distribution(item["map"])
    # the word cosines aggregate to the loss's own image-report score
    with torch.no_grad():
        _, local = gloria.encoder.forward_with_local(image[None])
        text = text_features(gloria.text_encoder, [out["report"]])
        score = _gloria_scores(gloria.word_projector(text["words"]), text["word_mask"], gloria.region_projector(local),
                               4.0, 5.0, "sum", False)
    cos = torch.tensor([i["cosine"] for i in out["items"]])
    assert torch.allclose(score[0, 0], torch.logsumexp(5.0 * cos, 0), atol=1e-4)


def test_gloria_word_attention_is_the_double_softmax_and_zero_on_padding():
    from medrep.losses import gloria_word_attention

    torch.manual_seed(0)
    words, regions = torch.randn(2, 5, 8), torch.randn(2, 6, 8)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    attention, cosine = gloria_word_attention(words, mask, regions, temp_attention=4.0)
    for b in range(2):
        n = int(mask[b].sum())
        naive = (4.0 * (regions[b] @ words[b, :n].T).softmax(dim=1)).T.softmax(dim=1)  # (n words, R)
        assert torch.allclose(attention[b, :n], naive, atol=1e-6)
        context = naive @ regions[b]
        assert torch.allclose(cosine[b, :n], torch.nn.functional.cosine_similarity(context, words[b, :n]), atol=1e-5)
    assert (attention[1, 3:] == 0).all() and (cosine[1, 3:] == 0).all()
    assert torch.allclose(attention[mask].sum(-1), torch.ones(8), atol=1e-6)


def test_3d_maps_keep_the_grid_and_pick_a_slice(tmp_path):
    method = build("place", {"name": "resnet10", "spatial_dims": 3, "conv1_t_size": 3, "conv1_t_stride": 1})
    image = torch.rand(1, 32, 32, 32)
    out = explain_pair(method, image, "A lesion. Stable.")
    for item in out["items"]:
        assert item["map"].ndim == 3 and list(item["map"].shape) == out["grid"] and _is_distribution(item["map"])
        assert 0 <= item["slice"] < 32
    assert plot_explanation(tmp_path / "x3d.png", image, out).read_bytes()[:8] == PNG_MAGIC


def test_the_png_is_valid_and_capped(place, tmp_path):
    from PIL import Image

    image = torch.rand(1, 64, 64)
    out = explain_pair(place, image, REPORT)
    sizes = []
    for cap in (16, 1):
        path = plot_explanation(tmp_path / f"e{cap}.png", image, out, max_panels=cap)
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 0
        with Image.open(path) as png:
            png.verify()
            sizes.append(png.size)
    assert sizes[1][0] < sizes[0][0]  # 1 panel beside the image: a narrower figure
    with pytest.raises(MedrepError, match="^--max-panels"):
        plot_explanation(tmp_path / "bad.png", image, out, max_panels=0)


@pytest.mark.parametrize("report, match", [("", "^--report: the report is empty"), ("  \n ", "^--report: the report is empty"),
                                           ("XXXX. ___", "^--report: no sentence left after cleaning")])
def test_empty_reports_name_the_report(place, report, match):
    with pytest.raises(MedrepError, match=match):
        explain_pair(place, torch.rand(1, 64, 64), report)


def test_methods_without_maps_are_refused_naming_run():
    with pytest.raises(MedrepError, match="^--run: method 'convirt' has no observations"):
        explain_pair(build("convirt"), torch.rand(1, 64, 64), REPORT)
    with pytest.raises(MedrepError, match="^--run: this PLACE run was trained with method.alignment: false"):
        explain_pair(build("place", alignment=False), torch.rand(1, 64, 64), REPORT)


def test_a_wrong_image_shape_is_refused(place):
    with pytest.raises(MedrepError, match="^image: must be one prepared image"):
        explain_pair(place, torch.rand(1, 1, 64, 64), REPORT)


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """A PLACE and a GLoRIA run of 1 step on brightness pairs, and a SimCLR recipe folder."""
    from medrep.engine import pretrain

    root = tmp_path_factory.mktemp("explain")
    pairs = brightness_pairs(root / "pairs", n=8)
    out = {name: pretrain(load_recipe(raw_recipe(name, pairs, root / name))) for name in ("place", "gloria")}
    (root / "simclr").mkdir()
    dump_recipe(load_recipe(tiny_recipe(root / "x.npz", root / "simclr")), root / "simclr" / "recipe.yaml")
    return out | {"simclr": root / "simclr", "image": pairs.parent / "img" / "0.png", "pairs": pairs}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["place", "gloria"])
def test_cli_writes_the_png_and_the_json(runs, name, tmp_path, capsys):
    report = tmp_path / "report.txt"
    report.write_text("A bright image.\nNo effusion.")
    out = tmp_path / "figs" / "pair.png"
    assert main(["explain", "--run", str(runs[name]), "--image", str(runs["image"]), "--report-file", str(report),
                 "--size", "64", "--device", "cpu", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["grid"] == [4, 4] and result["png"] == str(out) and result["preprocess"]["size"] == [64, 64]
    assert len(result["items"]) == (2 if name == "place" else 7)  # 2 sentences; 5 words and 2 full stops
    for item in result["items"]:
        m = torch.tensor(item["map"])
        assert m.shape == (4, 4) and bool((m >= 0).all()) and math.isclose(float(m.sum()), 1.0, abs_tol=1e-5)
    assert "written:" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_takes_a_row_of_the_runs_data(runs, tmp_path):
    from medrep.data.sources import read_pairs

    rows, _ = read_pairs({"source": "image_text", "path": str(runs["pairs"])})
    assert main(["explain", "--run", str(runs["place"]), "--row", rows[1].study, "--out", str(tmp_path / "row")]) == 0
    result = json.loads((tmp_path / "row.json").read_text())
    assert result["image"] == rows[1].images[0] and [i["text"] for i in result["items"]] == split_sentences(rows[1].report)
    assert result["grid"] == [2, 2] and (tmp_path / "row.png").stat().st_size > 0  # 32 px, as trained


@pytest.mark.slow
def test_cli_bad_input_exits_2_naming_the_option(runs, tmp_path, capsys):
    place, image = str(runs["place"]), str(runs["image"])
    cases = [
        (["--run", place, "--image", str(tmp_path / "none.png"), "--report", "A bright image."], "--image: no such file"),
        (["--run", place, "--image", image, "--report", ""], "--report: the report is empty"),
        (["--run", place, "--image", image, "--report", "XXXX."], "--report: no sentence left after cleaning"),
        (["--run", place, "--image", image, "--report-file", str(tmp_path / "none.txt")], "--report-file: no such file"),
        (["--run", place, "--image", image], "--report: give the report text"),
        (["--run", place, "--report", "A bright image."], "--image: give the image"),
        (["--run", place, "--row", "nope"], "--row: no study 'nope'"),
        (["--run", place, "--row", "0", "--image", image], "--row: takes the image and the report"),
        (["--run", str(runs["simclr"]), "--image", image, "--report", "A bright image."], "--run: method 'simclr' has no observations"),
        (["--run", str(tmp_path), "--image", image, "--report", "A bright image."], "--run: not a run folder"),
        (["--run", place, "--image", image, "--report", "A bright image.", "--max-panels", "0"], "--max-panels: must be positive"),
    ]
    for argv, message in cases:
        assert main(["explain", *argv, "--out", str(tmp_path / "bad")]) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not list(tmp_path.glob("bad*"))
