"""ConVIRT / CLIP image-report pretraining end to end: data sources, the method, the engine, the CLI."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import brightness_pairs, require_text_model
from PIL import Image

from medrep.data import build_dataset
from medrep.data.datasets.image_text_dataset import ImageTextDataset
from medrep.engine import pretrain
from medrep.engine.module import param_groups
from medrep.engine.train import _write_skipped, build_loader
from medrep.errors import DataError, RecipeError
from medrep.recipe import load_recipe

require_text_model()

torch.set_num_threads(1)


def _png(path: Path, value: int, size: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.clip(value + rng.integers(-20, 21, (size, size)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def convirt_recipe(data_path: Path, out: Path, **sections) -> dict:
    recipe = {
        "method": {"name": "convirt", "embed_dim": 32, "proj_hidden_dim": 32, "max_length": 16},
        "model": {"name": "resnet10", "spatial_dims": 2, "conv1_t_size": 3, "conv1_t_stride": 1},
        "data": {"source": "image_text", "path": str(data_path), "batch_size": 8},
        "augment": {"crop_scale": [0.8, 1.0], "rotate_deg": 0.0, "flip": False, "blur_prob": 0.0},
        "trainer": {"max_steps": 3, "checkpoint_every_n_steps": 2, "output_dir": str(out), "progress_bar": False,
                    "log_every_n_steps": 1, "accelerator": "cpu"},
    }
    for name, values in sections.items():
        recipe.setdefault(name, {}).update(values)
    return recipe


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return brightness_pairs(tmp_path_factory.mktemp("pairs"))


@pytest.fixture(scope="module")
def method(pairs):
    from medrep.methods import build_method

    return build_method(load_recipe(convirt_recipe(pairs, Path("unused"))))


@pytest.mark.slow
def test_pretrain_exports_encoder_and_load_method_rebuilds_convirt(pairs, tmp_path):
    from medrep.checkpoint import load_encoder, load_method

    run = pretrain(load_recipe(convirt_recipe(pairs, tmp_path / "run")))
    rows = list(csv.DictReader((run / "logs" / "version_0" / "metrics.csv").open()))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert all(0 <= float(r["train/i2t_acc"]) <= 1 for r in rows if r.get("train/i2t_acc"))
    assert not (run / "skipped.txt").exists()
    encoder = load_encoder(run)  # the image tower only
    assert encoder.config["name"] == "resnet10" and encoder(torch.rand(2, 1, 32, 32)).shape == (2, encoder.out_dim)

    method = load_method(run)
    assert method.name == "convirt" and not method.training
    with torch.no_grad():
        img = method.encode_image(torch.rand(3, 1, 32, 32))
        txt = method.encode_text(["a bright image", "a dark image", "nothing"])
    assert img.shape == txt.shape == (3, 32)
    assert torch.allclose(img.norm(dim=1), torch.ones(3), atol=1e-5) and torch.allclose(txt.norm(dim=1), torch.ones(3), atol=1e-5)
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(method.logit_scale, state["method.logit_scale"])
    assert torch.equal(encoder.state_dict()["net.conv1.weight"], method.encoder.state_dict()["net.conv1.weight"])


def test_every_trainable_parameter_gets_a_gradient_and_logit_scale_is_not_decayed(method, pairs):
    loader = build_loader(load_recipe(convirt_recipe(pairs, Path("unused"))))
    batch = next(iter(loader))
    assert isinstance(batch["text"][0], str) and batch["image"].shape == (8, 1, 32, 32)
    method.train()
    method.zero_grad()
    out = method.training_step(batch)
    out["loss"].backward()
    trainable = {n: p for n, p in method.named_parameters() if p.requires_grad}
    assert [n for n, p in trainable.items() if p.grad is None] == []  # DDP needs no unused parameters
    assert any(n.startswith("text_encoder.model.encoder.layer.5.") for n in trainable)
    assert not any(n.startswith("text_encoder.model.encoder.layer.3.") for n in trainable)  # text_trainable_layers: 2
    assert set(out) == {"loss", "i2t_acc", "logit_scale"}
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)
    no_decay = param_groups(method, 1e-4)[1]["params"]
    assert any(p is method.logit_scale for p in no_decay)


def test_sentence_sampling_draws_one_sentence_of_each_report(method):
    method.text_sampling = "sentence"
    try:
        batch = {"text": ["One. Two.", "Three."], "sentences": [["One.", "Two."], []]}
        drawn = {tuple(method._texts(batch)) for _ in range(20)}
    finally:
        method.text_sampling = "report"
    assert drawn == {("One.", "Three."), ("Two.", "Three.")}
    with pytest.raises(DataError, match="data.source"):
        method._texts({"image": torch.rand(2, 1, 8, 8)})


def test_fixed_temperature_is_a_buffer(pairs):
    from medrep.methods import build_method

    fixed = build_method(load_recipe(convirt_recipe(
        pairs, Path("unused"), method={"temperature": 0.1, "learn_temperature": False, "i2t_weight": 0.75, "proj_layers": 1})))
    assert "logit_scale" not in dict(fixed.named_parameters()) and "logit_scale" in fixed.state_dict()
    assert fixed.logit_scale.exp().item() == pytest.approx(10.0)


@pytest.mark.parametrize(
    "override, where",
    [
        ("method.temperature=0", "method.temperature"),
        ("method.i2t_weight=1.5", "method.i2t_weight"),
        ("method.text_sampling=word", "method.text_sampling"),
        ("method.embed_dim=0", "method.embed_dim"),
        ("method.gather=yes please", "method.gather"),
        ("method.text_trainable_layers=-1", "method.text_trainable_layers"),
        ("method.text_pooling=max", "method.text_pooling"),
        ("method.max_length=1", "method.max_length"),
        ("method.text_model=./no/such/model", "method.text_model"),
        ("method.tau=0.1", "method.tau"),
    ],
)
def test_bad_method_options_name_the_field(pairs, override, where):
    from medrep.methods import build_method

    with pytest.raises(RecipeError, match=f"^{where}"):
        build_method(load_recipe(convirt_recipe(pairs, Path("unused")), [override]))


@pytest.mark.parametrize(
    "override, where",
    [
        ("data.source=web", "data.source"),
        ("data.text_field=abstract", "data.text_field"),
        ("data.image_root=5", "data.image_root"),
        ("data.crops={k: 2}", "data.crops"),
    ],
)
def test_bad_data_options_name_the_field(pairs, override, where):
    with pytest.raises(RecipeError, match=f"^{where}"):
        load_recipe(convirt_recipe(pairs, Path("unused")), [override])


def test_missing_split_and_path_name_the_field(pairs, tmp_path, monkeypatch):
    cfg = load_recipe(convirt_recipe(pairs, tmp_path))["data"]
    with pytest.raises(DataError, match="^data.split: .*splits present: train"):
        build_dataset({**cfg, "split": "test"})
    monkeypatch.delenv("MEDREP_DATA", raising=False)
    with pytest.raises(DataError, match=r"^data.path: .*MEDREP_DATA"):
        build_dataset({**cfg, "source": "medpix2", "path": None})
    every = build_dataset({**cfg, "split": None}, train=False)
    assert len(every) == 16 and every[0]["images"].shape == (1, 1, 32, 32)


def test_iu_xray_skip_bad_is_reported_in_skipped_txt(tmp_path):
    """R2Gen layout; images relative to the annotation's folder unless data.image_root says otherwise."""
    entries = {"train": [], "test": []}
    for i in range(6):
        images = [f"CXR{i}/0.png", f"CXR{i}/1.png"]
        if i != 5:  # study 5's images are missing
            for name in images:
                _png(tmp_path / "images" / name, 100, seed=i)
        entries["train" if i < 4 else "test"].append({"id": f"CXR{i}", "report": "The heart is normal. No effusion.",
                                                      "image_path": images, "split": "train" if i < 4 else "test"})
    (tmp_path / "annotation.json").write_text(json.dumps(entries))
    data = {"source": "iu_xray", "path": str(tmp_path / "annotation.json"), "image_root": str(tmp_path / "images"),
            "skip_bad": True, "batch_size": 2}
    recipe = load_recipe(convirt_recipe(tmp_path, tmp_path / "run", data=data))
    loader = build_loader(recipe)
    assert isinstance(loader.dataset, ImageTextDataset) and len(loader.dataset) == 4
    assert loader.dataset.reader_report["skipped"] == {"image file is missing": 1}
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 1, 32, 32) and batch["text"][0] == "The heart is normal. No effusion."
    _write_skipped(loader.dataset, tmp_path)
    assert (tmp_path / "skipped.txt").read_text() == "image file is missing\t1\tCXR5\n"
    with pytest.raises(DataError, match="CXR5"):
        build_dataset({**recipe["data"], "skip_bad": False})
    with pytest.raises(DataError, match="missing"):  # default image root: the annotation's folder
        build_dataset({**recipe["data"], "image_root": None, "skip_bad": False})


def test_mimic_cxr_layout(tmp_path):
    study = tmp_path / "files" / "p10" / "p10000032" / "s50414267"
    _png(study / "view1.png", 90)
    study.with_suffix(".txt").write_text("FINDINGS: Lungs are clear.\n\nIMPRESSION: No acute process.\n")
    data = {**load_recipe(convirt_recipe(tmp_path, tmp_path))["data"], "source": "mimic_cxr", "path": str(tmp_path)}
    dataset = build_dataset(data)
    assert len(dataset) == 1 and "Lungs are clear" in dataset[0]["text"] and dataset[0]["image"].shape == (1, 32, 32)


def _brightness_pairs(n: int, gen: torch.Generator) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    bright = torch.rand(n, generator=gen) < 0.5
    level = torch.where(bright, 0.75, 0.25) + 0.1 * torch.rand(n, generator=gen) - 0.05
    images = (level[:, None, None, None] + 0.1 * torch.randn(n, 1, 32, 32, generator=gen)).clamp(0, 1)
    return images, [f"A {'bright' if b else 'dark'} image." for b in bright], bright


@pytest.mark.slow
def test_loss_decreases_on_a_learnable_pairing():
    """Captions say whether an image is bright or dark; every step draws new pairs, so nothing can be
    memorised. With two distinct captions in a batch of 16 the loss cannot go below about log 8
    (2.08; chance is log 16 = 2.77). Held-out images must then rank by brightness against the two
    captions in eval mode (the margin, not the argmax: after 30 steps the BatchNorm running
    statistics still lag the weights and shift every score alike)."""
    from medrep.methods import build_method

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    no_jitter = {"crop_scale": [1.0, 1.0], "brightness": 0.0, "contrast": 0.0, "gamma": 0.0, "noise_std": 0.0}
    model = build_method(load_recipe(convirt_recipe(Path("unused.csv"), Path("unused"), augment=no_jitter)))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    losses = []
    for _ in range(30):
        images, texts, _ = _brightness_pairs(16, gen)
        loss = model.training_step({"image": images, "text": texts})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 2.3 and last < first
    images, _, bright = _brightness_pairs(64, gen)
    model.eval()
    with torch.no_grad():
        scores = model.encode_image(images) @ model.encode_text(["A bright image.", "A dark image."]).T
    margin = scores[:, 0] - scores[:, 1]
    assert (margin[bright][:, None] > margin[~bright][None, :]).float().mean() > 0.95


@pytest.mark.slow
def test_cli_pretrains_convirt_on_medpix_captions(tmp_path, real_data):
    from medrep.cli import main

    root = real_data.need("medpix2/Descriptions.json").parent
    out = tmp_path / "run"
    code = main(["pretrain", "--recipe", "convirt_medpix", "--data", str(root), "trainer.max_steps=1", "data.batch_size=4",
                 "data.size=64", "trainer.accelerator=cpu", "trainer.progress_bar=false", f"trainer.output_dir={out}"])
    assert code == 0 and (out / "encoder" / "encoder.safetensors").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    dataset = build_dataset(load_recipe(out / "recipe.yaml")["data"])
    assert len(dataset) > 1000 and dataset.reader_report["dataset"] == "medpix2"
