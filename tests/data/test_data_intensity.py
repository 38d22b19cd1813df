"""Intensity normalisation: known values in, known values out."""

from __future__ import annotations

import pytest
import torch

from medrep.data import ct_window, minmax_scale, percentile_scale
from medrep.errors import DataError


def test_ct_window_known_values():
    hu = torch.tensor([[-1100.0, -1000.0, 0.0, 400.0, 500.0]])
    out = ct_window(hu, -1000, 400)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0, 1000 / 1400, 1.0, 1.0]]))
    assert out.dtype == torch.float32 and type(out) is torch.Tensor


def test_percentile_scale_known_values():
    x = torch.arange(101, dtype=torch.float32).reshape(1, 101)  # percentile q of 0..100 is q
    out = percentile_scale(x, 10, 90)
    assert out[0, 50].item() == pytest.approx(0.5)
    assert out[0, 5].item() == 0.0 and out[0, 95].item() == 1.0
    assert out[0, 30].item() == pytest.approx(0.25)


def test_percentile_scale_large_volume_and_outlier():
    x = torch.zeros(1, 110, 110, 110)
    x[0, :55] = 1.0
    x[0, 0, 0, 0] = 1e6  # a hot voxel does not squash the rest
    out = percentile_scale(x)
    assert out.shape == x.shape and out.max().item() == 1.0
    assert out[0, 10, 5, 5].item() == 1.0 and out[0, 100, 5, 5].item() == 0.0


def test_minmax_and_constant_images():
    torch.testing.assert_close(minmax_scale(torch.tensor([2.0, 4.0, 6.0])), torch.tensor([0.0, 0.5, 1.0]))
    for fn in (minmax_scale, percentile_scale, lambda t: ct_window(t, 5, 10)):
        out = fn(torch.full((1, 3, 3), 7.0))
        assert torch.isfinite(out).all()
    assert minmax_scale(torch.full((1, 3, 3), 7.0)).abs().sum() == 0


def test_bad_window_and_percentiles_name_the_field():
    with pytest.raises(DataError, match="data.window"):
        ct_window(torch.zeros(2), 400, -1000)
    with pytest.raises(DataError, match="data.percentiles"):
        percentile_scale(torch.zeros(2), 99, 1)
