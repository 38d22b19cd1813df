"""UniMedI: the teacher's selection, the losses each switch turns on, reports missing by part, the EMA
teacher, training through the engine on a mixed 2D + 3D tree, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import require_text_model

from medrep.checkpoint import load_method
from medrep.data.sources.mixed import mixed_example
from medrep.engine import pretrain
from medrep.errors import DataError, RecipeError
from medrep.evaluate.retrieval import run_data_config
from medrep.methods import build_method
from medrep.recipe import load_recipe

require_text_model()
torch.set_num_threads(1)
VIT = {"name": "vit2d3d", "spatial_dims": 3, "img_size": 32, "depth": 8, "patch_size": 8, "hidden_size": 16, "mlp_dim": 32,
       "num_layers": 2, "num_heads": 2, "select_k": 2}
TINY = {"dino_out": 32, "dino_hidden_dim": 16, "dino_bottleneck_dim": 8, "embed_dim": 16, "proj_hidden_dim": 16, "max_length": 32}
WEIGHT_OF = {"clip": "clip_weight", "dino_cls": "cls_weight", "dino_patch": "patch_weight"}
NO_AUGMENT = {"crop_scale": [1.0, 1.0], "rotate_deg": 0.0, "flip": False, "brightness": 0.0, "contrast": 0.0, "gamma": 0.0,
              "noise_std": 0.0, "blur_prob": 0.0}


def build(model: dict | None = None, **method):
    torch.manual_seed(0)
    recipe = load_recipe({"method": {"name": "unimedi", **TINY, **method}, "model": model or VIT, "augment": NO_AUGMENT})
    return build_method(recipe)


def batch(volume_text: bool = True, image_text: bool = True) -> dict:
    return {"parts": [
        {"name": "flat", "image": torch.rand(3, 1, 32, 32), "text": ["A bright image.", "A dark image.", "Grey."] if image_text else None},
        {"name": "vol", "image": torch.rand(2, 1, 16, 16, 8), "text": ["A bright CT volume.", "A dark one."] if volume_text else None},
    ]}


def test_attentive_selection_is_the_teachers_and_the_ablations_differ():
    m = build()
    volumes = torch.rand(3, 1, 16, 16, 8)
    with torch.no_grad():
        m.teacher.net.pos_z.add_(torch.randn_like(m.teacher.net.pos_z))  # teacher and student differ
    slabs, scores = m.choose_slices(volumes)
    assert torch.equal(scores, m.teacher.net.slice_scores(volumes))
    assert torch.equal(slabs, scores.topk(2, dim=1).indices.sort(dim=1).values)
    assert not torch.equal(scores, m.encoder.net.slice_scores(volumes))
    central = build(selection="central").choose_slices(volumes)[0]
    assert central.tolist() == [[3, 4]] * 3
    random = build(selection="random")
    draws = {tuple(random.choose_slices(volumes)[0][0].tolist()) for _ in range(20)}
    assert len(draws) > 1


def test_unmasked_student_at_init_distils_its_own_copy():
    """With no tokens removed the student and the teacher (its copy) give the same [CLS], so the
    [CLS] loss is the entropy-like H(p_t, p_s) of identical logits at the two temperatures."""
    m = build(mask_ratio=0.0, clip_weight=0.0, patch_weight=0.0)
    images = torch.rand(4, 1, 32, 32)
    out = m._part(images)
    assert torch.allclose(out["cls"], out["teacher_cls"], atol=1e-5)
    logits = m.cls_head(out["cls"]).detach()
    p_t = torch.softmax(logits / 0.04, dim=1)
    want = -(p_t * torch.log_softmax(logits / 0.1, dim=1)).sum(1).mean()
    got = m.training_step({"parts": [{"name": "x", "image": images, "text": None}]})["dino_cls"]
    assert got.item() == pytest.approx(want.item(), rel=1e-4)


def test_mask_ratio_removes_tokens_from_the_student_only():
    m = build(mask_ratio=0.75)
    out = m._part(torch.rand(2, 1, 16, 16, 8))  # 2*2*8 volume tokens + 2 slices * 4 = 40 tokens
    assert out["patches"].shape[1] == 10 and out["teacher_patches"].shape[1] == 10
    assert not out["teacher_patches"].requires_grad and out["patches"].requires_grad


@pytest.mark.parametrize("weights, logged", [
    ({}, {"clip", "dino_cls", "dino_patch"}),
    ({"clip_weight": 0.0}, {"dino_cls", "dino_patch"}),
    ({"cls_weight": 0.0, "patch_weight": 0.0}, {"clip"}),
])
def test_each_switch_turns_its_loss_on_and_every_parameter_gets_a_gradient(weights, logged):
    m = build(**weights)
    out = m.training_step(batch(image_text=("clip_weight" not in weights)))
    assert logged <= set(out) and not ({"clip", "dino_cls", "dino_patch"} - logged) & set(out)
    total = sum(weights.get(WEIGHT_OF[k], 1.0) * out[k] for k in logged)
    assert out["loss"].item() == pytest.approx(float(total), rel=1e-5)
    out["loss"].backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing  # DDP without find_unused_parameters


def test_volumes_without_reports_distil_only_and_texts_count_per_part(monkeypatch):
    m = build()
    seen = []
    monkeypatch.setattr(m, "_embed_texts", lambda texts: seen.append(list(texts)) or torch.randn(len(texts), 16, requires_grad=True))
    out = m.training_step(batch(volume_text=False))
    assert seen == [["A bright image.", "A dark image.", "Grey."]] and math.isfinite(out["clip"].item())
    with pytest.raises(DataError, match="part 'vol' has volumes without a report") as info:
        build(volumes_without_report="error").training_step(batch(volume_text=False))
    assert info.value.where == "data.parts"


def test_a_2d_image_without_report_is_refused_while_clip_is_on():
    with pytest.raises(DataError, match="part 'flat' has 2D images without a report") as info:
        build().training_step(batch(image_text=False))
    assert info.value.where == "data.parts"
    build(clip_weight=0.0).training_step(batch(image_text=False))  # distillation alone needs no text


def test_the_teacher_follows_the_student_by_ema():
    m = build(ema=0.9)
    with torch.no_grad():
        for p in m.encoder.parameters():
            p.add_(1.0)
    before = [t.clone() for t in m.teacher.parameters()]
    m.on_train_batch_end(0, 10)
    assert m.momentum == pytest.approx(0.9)
    for b, t, s in zip(before, m.teacher.parameters(), m.encoder.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * s, atol=1e-6)
    m.on_train_batch_end(0, 10)  # once per optimiser step (gradient accumulation calls it again)
    assert all(torch.allclose(t, 0.9 * b + 0.1 * s, atol=1e-6) for b, t, s in zip(before, m.teacher.parameters(), m.encoder.parameters()))
    assert m.momentum_at(10, 10) == pytest.approx(1.0)


def test_a_volume_with_fewer_slices_than_k_names_select_k():
    with pytest.raises(DataError, match="fewer than the 2 slices to select") as info:
        build().training_step({"parts": [{"name": "thin", "image": torch.rand(2, 1, 16, 16, 1), "text": ["a", "b"]}]})
    assert info.value.where == "model.select_k"


@pytest.mark.parametrize("recipe, where", [
    ({"model": {"name": "vit", "spatial_dims": 2, "img_size": 32, "patch_size": 8, "hidden_size": 16, "mlp_dim": 32, "num_layers": 1,
                "num_heads": 2}}, "model.name"),
    ({"method": {"clip_weight": 0.0, "cls_weight": 0.0, "patch_weight": 0.0}}, "method.clip_weight"),
    ({"method": {"selection": "best"}}, "method.selection"),
    ({"method": {"mask_ratio": 1.5}}, "method.mask_ratio"),
])
def test_bad_recipes_name_the_field(recipe, where):
    raw = {"method": {"name": "unimedi", **TINY, **recipe.get("method", {})}, "model": recipe.get("model", VIT)}
    with pytest.raises(RecipeError) as info:
        build_method(load_recipe(raw))
    assert info.value.where == where


@pytest.mark.slow
def test_pretrains_on_a_mixed_tree_and_reloads(tmp_path):
    data = mixed_example(tmp_path / "data") | {"batch_size": 4}
    run = pretrain(load_recipe({
        "method": {"name": "unimedi", **TINY}, "model": VIT, "data": data, "augment": NO_AUGMENT,
        "trainer": {"max_steps": 2, "output_dir": str(tmp_path / "run"), "progress_bar": False, "log_every_n_steps": 1,
                    "accelerator": "cpu", "checkpoint_every_n_steps": 2},
    }))
    method = load_method(run).eval()
    with torch.no_grad():
        assert method.encode_image(torch.rand(2, 1, 32, 32)).shape == (2, 16)
        assert method.encode_image(torch.rand(2, 1, 16, 16, 8)).shape == (2, 16)
        assert method.encode_text(["A bright CT volume."]).shape == (1, 16)
    data = run_data_config(run)  # what the CLI's 2D evaluations read: a mixed run's first part (or the part of --data)
    assert data["spatial_dims"] == 2 and data["size"] == [32, 32]
    log = (run / "logs" / "version_0" / "metrics.csv").read_text()
    assert "train/clip" in log and "train/dino_patch" in log
