"""Feature extraction: eval mode inside, training flags restored after, no autograd graph,
labels checked, and .npz round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medrep.errors import MedrepError
from medrep.evaluate import extract_features, load_features, save_features


class Recorder(nn.Module):
    """Flatten and remember whether it ran in training mode and with grad enabled."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return x.flatten(1)


def make_encoder(in_features: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(Recorder(), nn.Linear(in_features, 5), nn.BatchNorm1d(5), nn.Dropout(0.5))


def make_dataset(n: int, shape=(1, 4, 4), label_shape=()):
    g = torch.Generator().manual_seed(0)
    return [
        {"image": torch.rand(shape, generator=g), "label": torch.tensor(i % 3).reshape(label_shape), "path": f"img{i}.png"}
        for i in range(n)
    ]


def test_features_match_eval_forward_and_modes_are_restored():
    enc = make_encoder(16)
    enc.train()
    enc[3].eval()  # a mixed state must come back exactly
    stats = enc[2].running_mean.clone()
    data = make_dataset(10)
    feats, labels = extract_features(enc, data, batch_size=4, progress=False)
    assert feats.dtype == np.float32 and feats.shape == (10, 5)
    assert labels.dtype == np.int64 and labels.tolist() == [i % 3 for i in range(10)]
    assert enc.training and enc[0].training and enc[2].training and not enc[3].training
    assert enc[0].calls == [(False, False)] * 3  # eval mode, no grad, 3 batches
    assert torch.equal(enc[2].running_mean, stats)  # batch-norm statistics untouched
    enc.eval()
    with torch.no_grad():
        expected = enc(torch.stack([d["image"] for d in data])).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)


def test_volumes_and_label_of_shape_one():
    enc = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.AdaptiveAvgPool3d(1))  # (B, 2, 1, 1, 1)
    feats, labels = extract_features(enc, make_dataset(5, shape=(1, 4, 4, 4), label_shape=(1,)), progress=False)
    assert feats.shape == (5, 2) and labels.shape == (5,)


def test_missing_label_raises_and_restores_mode():
    enc = make_encoder(16)
    enc.train()
    data = make_dataset(6)
    del data[4]["label"]
    with pytest.raises(MedrepError) as err:
        extract_features(enc, data, batch_size=2, progress=False)
    assert err.value.where == "label"
    assert enc.training and enc[2].training
    data[4]["label"] = None
    with pytest.raises(MedrepError, match="label"):
        extract_features(enc, data, progress=False)


def test_bad_encoder_output_and_batch_size():
    with pytest.raises(MedrepError) as err:
        extract_features(nn.Flatten(0), make_dataset(3), progress=False)
    assert err.value.where == "encoder"
    with pytest.raises(MedrepError) as err:
        extract_features(nn.Flatten(), make_dataset(3), batch_size=0)
    assert err.value.where == "batch_size"


def test_save_load_round_trip(tmp_path):
    feats = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    labels = np.arange(7)
    path = save_features(tmp_path / "sub" / "train.feats", feats, labels)
    assert path.exists() and path.name == "train.feats"
    f2, l2 = load_features(path)
    assert f2.dtype == np.float32 and l2.dtype == np.int64
    np.testing.assert_array_equal(f2, feats)
    np.testing.assert_array_equal(l2, labels)
    with pytest.raises(MedrepError) as err:
        save_features(tmp_path / "x.npz", feats, labels[:3])
    assert err.value.where == "labels"
    with pytest.raises(MedrepError):
        load_features(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(MedrepError, match="missing"):
        load_features(tmp_path / "other.npz")
