"""Fine-tuning evaluation: label subsets, the training loop, early stopping, multi-label, 3D, errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from medrep.errors import MedrepError
from medrep.evaluate import nested_subsamples, stratified_subsample
from medrep.evaluate.finetune import FinetuneOptions, Split, finetune, holdout
from medrep.models import build_backbone


class MeanBrightness(nn.Module):
    """A parameter-free 'encoder': the mean of each quadrant, so brightness classes are linearly separable."""

    out_dim = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        return torch.stack([x[..., :h, :w].mean((1, 2, 3)), x[..., :h, w:].mean((1, 2, 3)),
                            x[..., h:, :w].mean((1, 2, 3)), x[..., h:, w:].mean((1, 2, 3))], dim=1)


def _brightness(n: int, seed: int, side: int = 8) -> Split:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 1, side, side, generator=g) * 0.5 + 0.5 * y.view(n, 1, 1, 1)
    return Split(x, y)


def _splits(n: int = 60) -> dict[str, Split]:
    return {"train": _brightness(n, 0), "val": _brightness(20, 1), "test": _brightness(30, 2)}


def test_subsets_are_nested_stratified_and_seeded():
    y = np.array([0] * 90 + [1] * 9 + [2] * 1)
    subsets = nested_subsamples(y, [1.0, 0.01, 0.1, 0.5], seed=3)
    assert list(subsets) == [0.01, 0.1, 0.5, 1.0]
    for small, large in zip(list(subsets.values()), list(subsets.values())[1:]):
        assert set(small) <= set(large)
    assert set(y[subsets[0.01]]) == {0, 1, 2}  # every class, even at 1 %
    assert np.bincount(y[subsets[0.1]]).tolist() == [9, 1, 1]  # 10 % of each, at least one per class
    assert np.array_equal(subsets[1.0], np.arange(100))
    assert np.array_equal(nested_subsamples(y, [0.1], seed=3)[0.1], subsets[0.1])  # a fraction's subset does not depend on the others
    assert not np.array_equal(nested_subsamples(y, [0.1], seed=4)[0.1], subsets[0.1])
    assert np.array_equal(stratified_subsample(y, 0.5, seed=3), subsets[0.5])


def test_multilabel_subsets_cover_every_label_with_a_positive():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 5)) < [0.5, 0.2, 0.05, 0.01, 0.0]).astype(np.int64)
    subsets = nested_subsamples(y, [0.01, 0.1, 1.0], seed=0)
    for f, idx in subsets.items():
        has = y[idx].any(axis=0)
        assert has[:4].all() if y[:, 3].any() else has[:3].all(), f
        assert not has[4]
    assert set(subsets[0.01]) <= set(subsets[0.1]) <= set(subsets[1.0])
    assert subsets[0.1].size >= 20


@pytest.mark.slow
def test_frozen_head_learns_separable_features_and_restores_the_best_epoch():
    opts = FinetuneOptions(fractions=(0.1, 1.0), seeds=(0, 1), epochs=30, patience=5, frozen=True, augment="none",
                           lr=5e-2, progress=False)
    result = finetune(lambda seed: MeanBrightness(), _splits(), opts)
    assert result["probe"] == "frozen head" and result["task"] == "binary" and result["n_test"] == 30
    full = result["fractions"]["1"]
    assert full["n_train"] == 60 and full["auroc"]["mean"] > 0.95
    for run in full["per_seed"]:
        losses = [h["val_loss"] for h in run["history"]]
        assert run["best_epoch"] == int(np.argmin(losses)) + 1
        assert run["epochs"] == len(losses) and (run["epochs"] == 30 or run["epochs"] - run["best_epoch"] == 5)


def test_multiclass_labels_keep_their_ids():
    """Class ids need not be 0..n-1: the head predicts indices, the metrics report the ids."""
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([3, 5, 9] * 20)
    x = torch.rand(60, 1, 8, 8, generator=g) * 0.2 + (y.float().view(-1, 1, 1, 1) - 3) / 7
    splits = {"train": Split(x, y), "val": Split(x[:15], y[:15]), "test": Split(x[15:], y[15:])}
    opts = FinetuneOptions(fractions=(1.0,), seeds=(0,), epochs=40, frozen=True, augment="none", lr=5e-2, progress=False)
    result = finetune(lambda seed: MeanBrightness(), splits, opts)
    assert result["task"] == "multiclass" and result["classes"] == [3, 5, 9]
    assert result["fractions"]["1"]["auroc"]["mean"] > 0.9


def test_cached_frozen_features_give_the_same_numbers_as_running_the_encoder():
    """augment=none + frozen computes features once; the encoder-in-the-loop path must agree (same seeds)."""
    from medrep.evaluate.finetune import Classifier, _Task, train_once

    splits = _splits(40)
    opts = FinetuneOptions(fractions=(1.0,), seeds=(0,), epochs=6, patience=6, frozen=True, augment="none", lr=1e-2,
                           progress=False)
    cached = finetune(lambda seed: MeanBrightness(), splits, opts)["fractions"]["1"]["per_seed"][0]
    torch.manual_seed(0)
    model = Classifier(MeanBrightness(), 4, 2)
    task = _Task(splits["train"], {"val": splits["val"], "test": splits["test"]})
    direct = train_once(model, task, splits["train"], splits["val"], splits["test"], opts, 0, torch.device("cpu"))
    assert direct["auroc"] == pytest.approx(cached["auroc"], abs=1e-6)
    assert [h["val_loss"] for h in direct["history"]] == pytest.approx([h["val_loss"] for h in cached["history"]], abs=1e-5)


def _resnet(spatial_dims: int = 2) -> nn.Module:
    return build_backbone({"name": "resnet10", "spatial_dims": spatial_dims, "in_channels": 1, "conv1_t_size": 3,
                           "conv1_t_stride": 1})


@pytest.mark.slow
def test_end_to_end_finetuning_is_deterministic_and_trains_the_encoder():
    splits = _splits(24)
    opts = FinetuneOptions(fractions=(1.0,), seeds=(0,), epochs=1, batch_size=12, min_batches_per_epoch=1, progress=False)
    encoder = _resnet()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    kept = []

    def make(seed):
        kept.append(copy.deepcopy(encoder))
        return kept[-1]

    a = finetune(make, splits, opts)
    b = finetune(make, splits, opts)
    assert a["fractions"]["1"]["per_seed"][0]["auroc"] == b["fractions"]["1"]["per_seed"][0]["auroc"]
    assert any(not torch.equal(before[k], v) for k, v in kept[0].state_dict().items() if v.dtype.is_floating_point)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # the caller's encoder is untouched


@pytest.mark.slow
def test_multilabel_and_3d():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (24, 2), generator=g)
    x = torch.rand(24, 1, 8, 8, 8, generator=g) * 0.5
    x[:, :, :4] += 0.5 * y[:, 0].view(-1, 1, 1, 1, 1)
    x[:, :, 4:] += 0.5 * y[:, 1].view(-1, 1, 1, 1, 1)
    splits = {"train": Split(x[:16], y[:16]), "val": Split(x[16:20], y[16:20]), "test": Split(x[16:], y[16:])}
    opts = FinetuneOptions(fractions=(1.0,), seeds=(0,), epochs=1, batch_size=8, min_batches_per_epoch=1, progress=False)
    result = finetune(lambda seed: _resnet(3), splits, opts)
    run = result["fractions"]["1"]["per_seed"][0]
    assert result["task"] == "multilabel" and result["classes"] == [0, 1]
    assert 0.0 <= run["auroc"] <= 1.0 and 0.0 <= run["accuracy"] <= 1.0


def test_an_epoch_of_a_small_subset_repeats_it_to_the_minimum_batches():
    from medrep.evaluate.finetune import _batches

    g = torch.Generator().manual_seed(0)
    small = _batches(47, 48, g, min_batches=10)
    assert sum(b.numel() for b in small) == 47 * 11 and len(small) == 11  # 11 passes: 10 full batches and one of 37
    assert torch.bincount(torch.cat(small)).tolist() == [11] * 47  # every example equally often
    large = _batches(101, 10, g, min_batches=10)
    assert len(large) == 10 and large[-1].numel() == 11  # one pass; the batch of one joined the last


def test_holdout_is_stratified_and_disjoint():
    split = _brightness(50, 0)
    rest, held = holdout(split)
    assert len(rest) + len(held) == 50 and len(held) == 5
    assert set(held.targets.tolist()) == {0, 1}


def test_bad_options_and_unseen_classes_are_named():
    with pytest.raises(MedrepError, match="epochs"):
        FinetuneOptions(epochs=0)
    with pytest.raises(MedrepError, match="fractions"):
        FinetuneOptions(fractions=(0.5, 1.5))
    with pytest.raises(MedrepError, match="optimizer"):
        FinetuneOptions(optimizer="lbfgs")
    with pytest.raises(MedrepError, match="seeds"):
        FinetuneOptions(seeds=())
    splits = _splits(20)
    splits["test"] = Split(splits["test"].images, torch.full((30,), 7))
    with pytest.raises(MedrepError, match=r"test.*\[7\]"):
        finetune(lambda seed: MeanBrightness(), splits, FinetuneOptions(progress=False))
