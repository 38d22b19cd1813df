"""Vision-language evaluation: retrieval scores against naive loops (multi-match queries, ties), case
pooling, zero-shot with prompt ensembling, and the CLI's errors, with a fake method whose image and
text embeddings are known, so nothing depends on a trained model."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_recipe
from PIL import Image

from medrep.cli import main
from medrep.data.datasets.image_text import ImageTextRow
from medrep.errors import MedrepError
from medrep.evaluate import retrieval as retrieval_mod
from medrep.evaluate.retrieval import evaluate_retrieval, pool, retrieval_scores
from medrep.evaluate.zeroshot import (
    PHRASES,
    TEMPLATES,
    check_templates,
    class_embeddings,
    class_prompts,
    evaluate_zeroshot,
    medpix_rows,
    zeroshot_classify,
    zeroshot_scores,
)

CFG = {"intensity": "minmax", "size": None, "spatial_dims": 2}


class FakeVLP(torch.nn.Module):
    """Image embedding: mean intensity of each of ``len(vocab)`` horizontal bands; text embedding: the
    counts of the vocabulary's words. An image bright in band i and a text naming ``vocab[i]`` match."""

    name = "fake"

    def __init__(self, vocab, random_text: bool = False):
        super().__init__()
        self.vocab = [w.lower() for w in vocab]
        self.random_text = random_text

    def encode_image(self, images):
        bands = torch.tensor_split(images[:, 0], len(self.vocab), dim=1)
        return F.normalize(torch.stack([b.mean((1, 2)) for b in bands], 1), dim=1)

    def encode_text(self, texts):
        if self.random_text:
            g = torch.Generator().manual_seed(sum(map(ord, "".join(texts))))
            return F.normalize(torch.randn(len(texts), len(self.vocab), generator=g), dim=1)
        words = [re.findall(r"[a-z0-9]+", t.lower()) for t in texts]
        counts = torch.tensor([[w.count(v) for v in self.vocab] for w in words], dtype=torch.float32)
        return F.normalize(counts + 1e-3, dim=1)


def _band_png(path: Path, band: int, n_bands: int, size: int = 12) -> str:
    arr = np.zeros((size, size), np.uint8)
    step = size // n_bands
    arr[band * step : (band + 1) * step] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return str(path)


def _naive(sim: np.ndarray, match: np.ndarray, ks) -> dict:
    """Sort each query's candidates by score, wrong ones first among equals; the first true match's position."""
    ranks = []
    for q in range(sim.shape[0]):
        order = sorted(range(sim.shape[1]), key=lambda c: (-sim[q, c], bool(match[q, c])))
        ranks.append(next(pos for pos, c in enumerate(order, start=1) if match[q, c]))
    ranks = np.array(ranks)
    return {**{f"recall@{k}": float(np.mean(ranks <= k)) for k in ks}, "median_rank": float(np.median(ranks)),
            "mean_rank": float(ranks.mean()), "n_queries": len(ranks)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_naive_loops_with_ties_and_multi_matches(seed):
    rng = np.random.default_rng(seed)
    n, m = 23, 11
    img = rng.integers(-1, 2, size=(n, 3)).astype(float)  # coarse values: many exact ties
    img[img.sum(1) == 0] = 1.0
    txt = rng.integers(-1, 2, size=(m, 3)).astype(float)
    txt[np.abs(txt).sum(1) == 0] = 1.0
    targets = [{i % m} | ({int(rng.integers(m))} if rng.random() < 0.4 else set()) for i in range(n)]
    ks = (1, 3, 5)
    got = retrieval_scores(img, txt, targets, ks)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    sim = unit(img) @ unit(txt).T
    match = np.zeros((n, m), bool)
    for i, t in enumerate(targets):
        match[i, list(t)] = True
    for key, (s, mm) in {"image_to_text": (sim, match), "text_to_image": (sim.T, match.T)}.items():
        want = _naive(s, mm, ks)
        assert got[key] == pytest.approx(want), key
    assert got["n_images"] == n and got["n_texts"] == m


def test_ties_count_against_the_query_and_any_match_counts():
    same = retrieval_scores(np.ones((4, 2)), np.ones((4, 2)), [0, 1, 2, 3], ks=(1, 4))
    assert same["image_to_text"]["recall@1"] == 0.0 and same["image_to_text"]["median_rank"] == 4.0
    assert same["image_to_text"]["recall@4"] == 1.0
    img = np.array([[1.0, 0.0], [0.0, 1.0]])
    txt = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    r = retrieval_scores(img, txt, [{1, 0}, {1, 2}], ks=(1,))
    assert r["image_to_text"]["recall@1"] == 1.0
    # text 2 matches image 1 only, which ties with the wrong image 0: rank 2; texts 0 and 1 rank 1
    assert r["text_to_image"]["median_rank"] == 1.0 and r["text_to_image"]["mean_rank"] == pytest.approx(4 / 3)
    assert retrieval_scores(torch.eye(3), torch.eye(3), torch.arange(3))["image_to_text"]["recall@1"] == 1.0


def test_score_errors_name_the_input():
    with pytest.raises(MedrepError, match="match no image"):
        retrieval_scores(np.eye(2), np.eye(2)[[0, 1, 0]], [0, 1])
    with pytest.raises(MedrepError, match="text_emb"):
        retrieval_scores(np.eye(2), np.ones((2, 3)), [0, 1])
    with pytest.raises(MedrepError, match="--ks"):
        retrieval_scores(np.eye(2), np.eye(2), [0, 1], ks=(0,))
    with pytest.raises(MedrepError, match="no matching text"):
        retrieval_scores(np.eye(2), np.eye(2), [set(), {0, 1}])


def test_pool_is_the_renormalised_mean_of_normalised_members():
    emb = torch.tensor([[3.0, 0.0], [0.0, 0.5], [1.0, 1.0]])
    got = pool(emb, np.array([0, 0, 1]), 2)
    assert torch.allclose(got[0], F.normalize(torch.tensor([1.0, 1.0]), dim=0))
    assert torch.allclose(got[1], F.normalize(emb[2], dim=0))


def _pairs(tmp_path: Path, vocab, cases) -> list[ImageTextRow]:
    """One row per image; ``cases`` maps a patient to [(band, caption)]."""
    rows = []
    for patient, items in cases.items():
        for j, (band, caption) in enumerate(items):
            path = _band_png(tmp_path / f"{patient}_{j}.png", band, len(vocab))
            rows.append(ImageTextRow((path,), caption, f"{patient}_{j}", "dev", patient))
    return rows


def test_retrieval_end_to_end_with_a_fake_method(tmp_path, monkeypatch):
    vocab = ["alpha", "beta", "gamma", "delta"]
    cases = {"p0": [(0, "alpha here"), (0, "alpha  here")], "p1": [(1, "beta"), (2, "gamma seen")], "p2": [(3, "delta")]}
    rows = _pairs(tmp_path, vocab, cases)
    method = FakeVLP(vocab)
    out = evaluate_retrieval(method, rows, CFG, batch_size=2, device="cpu", ks=(1, 2), case_by="patient")
    assert out["n_images"] == 5 and out["n_distinct_texts"] == 4  # "alpha here" twice after whitespace cleaning
    assert out["image"]["image_to_text"]["recall@1"] == 1.0 and out["image"]["text_to_image"]["recall@1"] == 1.0
    assert out["image"]["n_texts"] == 4 and out["case"]["n_images"] == 3 and out["case"]["n_texts"] == 3
    assert out["case"]["image_to_text"]["recall@1"] == 1.0
    seen = []
    monkeypatch.setattr(retrieval_mod, "retrieval_scores", lambda *a: seen.append(a) or {})
    evaluate_retrieval(method, rows, CFG, device="cpu", levels=("case",), case_by="patient")
    case_img, case_txt, case_key, _ = seen[0]
    beta_gamma = F.normalize(method.encode_text(["beta"])[0] + method.encode_text(["gamma seen"])[0], dim=0)
    assert torch.allclose(case_txt[case_key[1]], beta_gamma, atol=1e-6)  # mean of the case's two captions
    assert torch.allclose(case_txt[case_key[0]], method.encode_text(["alpha here"])[0], atol=1e-6)  # its one distinct caption
    assert torch.allclose(case_img[1], F.normalize(torch.tensor([0.0, 1.0, 1.0, 0.0]), dim=0), atol=1e-6)
    seen.clear()
    evaluate_retrieval(method, rows, CFG, device="cpu", levels=("case",), case_by="study")
    assert len(seen[0][0]) == 5  # every row its own case
    with pytest.raises(MedrepError, match="--level"):
        evaluate_retrieval(method, rows, CFG, device="cpu", levels=("study",))
    with pytest.raises(MedrepError, match="encode_text"):
        evaluate_retrieval(torch.nn.Linear(2, 2), rows, CFG, device="cpu")


def test_prompts_and_ensembling():
    prompts = class_prompts(["CT", "MR"], TEMPLATES["modality"], PHRASES["modality"])
    assert prompts[0][1] == "a computed tomography (CT) image" and prompts[1][0] == "magnetic resonance (MR)"
    assert class_prompts(["Axial"], ["an image in the {} plane"]) == [["an image in the Axial plane"]]
    method = FakeVLP(["ct", "mr", "axial"])
    groups = [["ct", "ct axial"], ["mr"]]
    got = class_embeddings(method, groups, device="cpu")
    want = F.normalize(method.encode_text(["ct"]) + method.encode_text(["ct axial"]), dim=1)[0]
    assert torch.allclose(got[0], want, atol=1e-6) and torch.allclose(got[1], method.encode_text(["mr"])[0], atol=1e-6)
    for bad in ([], ["no slot"], ["{} and {}"]):
        with pytest.raises(MedrepError, match="--templates"):
            check_templates(bad)


def test_zeroshot_perfect_when_prompts_embed_like_their_class():
    classes = ["CT", "MR", "Axial"]
    method = FakeVLP(["ct", "mr", "axial"])
    labels = np.repeat(np.arange(3), 5)
    images = F.one_hot(torch.as_tensor(labels), 3).float() + 0.05 * torch.rand(15, 3, generator=torch.Generator().manual_seed(0))
    out = zeroshot_classify(method, images, [classes[i] for i in labels], classes, TEMPLATES["modality"], PHRASES["modality"], device="cpu")
    assert out["accuracy"] == 1.0 and out["auroc"] == 1.0
    assert np.array_equal(out["confusion"], np.diag([5, 5, 5]))
    assert out["per_class"]["MR"] == {"n": 5, "recall": 1.0, "auroc": 1.0}
    assert out["prompts"]["CT"][1] == "a computed tomography (CT) image"


def test_zeroshot_random_is_near_chance():
    g = torch.Generator().manual_seed(0)
    images, classes_emb = torch.randn(3000, 16, generator=g), torch.randn(3, 16, generator=g)
    labels = torch.randint(0, 3, (3000,), generator=g).numpy()
    out = zeroshot_scores(images, classes_emb, labels, ["a", "b", "c"])
    assert abs(out["accuracy"] - 1 / 3) < 0.05 and abs(out["auroc"] - 0.5) < 0.05
    with pytest.raises(MedrepError, match="--temperature"):
        zeroshot_scores(images, classes_emb, labels, ["a", "b", "c"], temperature=0)
    with pytest.raises(MedrepError, match="labels"):
        zeroshot_scores(images[:2], classes_emb, ["a", "z"], ["a", "b", "c"])


def test_evaluate_zeroshot_beside_the_linear_probe(tmp_path):
    vocab = ["ct", "mr"]
    rows = []
    for split, n in (("train", 6), ("dev", 4)):
        for i in range(n):
            label = vocab[i % 2].upper()
            path = _band_png(tmp_path / f"{split}{i}.png", i % 2, 2)
            rows.append(ImageTextRow((path,), label, f"{split}{i}", split, f"case{split}{i}", label))
    rows.append(ImageTextRow((rows[0].images[0],), "x", "other", "dev", None, "PET"))
    out = evaluate_zeroshot(FakeVLP(vocab), rows, CFG, ["CT", "MR"], TEMPLATES["modality"], PHRASES["modality"], device="cpu")
    assert out["zeroshot"]["accuracy"] == 1.0 and out["left_out"] == {"dev": 1} and out["counts"] == {"test": [2, 2], "train": [3, 3]}
    assert out["linear_probe"]["fractions"]["1"]["accuracy"]["mean"] == 1.0 and "linear probe" in out["table"]
    chance = evaluate_zeroshot(FakeVLP(vocab, random_text=True), rows, CFG, ["CT", "MR"], device="cpu", probe=False)
    assert "linear_probe" not in chance and chance["majority_accuracy"] == 0.5
    with pytest.raises(MedrepError, match="--split"):
        evaluate_zeroshot(FakeVLP(vocab), rows, CFG, ["CT", "MR"], test_split="test", device="cpu")


def test_medpix_rows_are_labelled_single_images(real_data):
    real_data.need("medpix2")
    rows, report = medpix_rows(real_data / "medpix2", "modality")
    assert report["classes"] == ["CT", "MR"] and len(rows) == sum(report["images"].values())
    assert all(len(r.images) == 1 and r.label in ("CT", "MR") and r.patient for r in rows)
    assert {r.split for r in rows} == {"train", "dev"}


@pytest.fixture(scope="module")
def simclr_run(tmp_path_factory):
    from helpers import make_npz

    from medrep.engine import pretrain
    from medrep.recipe import load_recipe

    tmp = tmp_path_factory.mktemp("simclr")
    return pretrain(load_recipe(tiny_recipe(make_npz(tmp / "tiny.npz"), tmp / "run", trainer={"max_steps": 1})))


def test_cli_errors_name_the_option(tmp_path, capsys, simclr_run, monkeypatch):
    monkeypatch.setenv("MEDREP_DATA", str(tmp_path))
    assert main(["evaluate", "zeroshot", "--run", str(tmp_path), "--target", "modality"]) == 2
    assert "--run" in capsys.readouterr().err
    assert main(["evaluate", "retrieval", "--run", str(tmp_path), "--data", "medpix2"]) == 2
    assert "--run: not a run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "zeroshot", "--run", str(simclr_run), "--target", "colour"])
    assert exc.value.code == 2 and "--target" in capsys.readouterr().err
    assert main(["evaluate", "zeroshot", "--run", str(simclr_run)]) == 2
    assert "--target" in capsys.readouterr().err
    assert main(["evaluate", "zeroshot", "--run", str(simclr_run), "--target", "modality"]) == 2
    err = capsys.readouterr().err
    assert "--run" in err and "encode_text" in err
    assert main(["evaluate", "zeroshot", "--run", str(simclr_run), "--target", "plane", "--templates", "no slot"]) == 2
    assert "--templates" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_end_to_end_on_a_convirt_run(tmp_path, capsys):
    from medrep.methods.registry import available_methods

    if "convirt" not in available_methods():
        pytest.skip("the convirt method is not available")
    from medrep.engine import pretrain
    from medrep.recipe import load_recipe

    lines = []
    for split, n in (("train", 8), ("test", 4)):
        for i in range(n):
            word = ["alpha", "beta"][i % 2]
            path = _band_png(tmp_path / "img" / f"{split}{i}.png", i % 2, 2, size=16)
            lines.append({"images": [path], "report": f"{word} finding {i}", "split": split, "label": word})
    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in lines))
    recipe = tiny_recipe(manifest, tmp_path / "run", method={"name": "convirt"}, data={"source": "image_text", "batch_size": 4},
                         trainer={"max_steps": 2})
    recipe["method"] = {"name": "convirt"}
    run = pretrain(load_recipe(recipe))
    assert main(["evaluate", "retrieval", "--run", str(run), "--data", str(manifest), "--ks", "1", "2",
                 "--out", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["image"]["n_images"] == 4 and "recall@2" in result["case"]["text_to_image"]
    assert "median_rank" in capsys.readouterr().out
    assert main(["evaluate", "zeroshot", "--run", str(run), "--data", str(manifest), "--split", "test",
                 "--out", str(tmp_path / "z.json")]) == 0
    z = json.loads((tmp_path / "z.json").read_text())
    assert z["classes"] == ["alpha", "beta"] and "linear_probe" in z
