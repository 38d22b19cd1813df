"""ISImed's loss: against a naive double loop in float64, and a 2-process gloo DDP check.

The distributed workers are this file run as a script (``python test_isimed.py --worker ...``),
as in test_losses_ntxent.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import WORLD, run_workers, worker_main

from medrep.errors import MedrepError
from medrep.losses import isimed_loss, rank, world_size

# ---------------------------------------------------------------- naive reference


def naive_isimed(z, c, group, scale, pairs, var_weight=0.0, var_target=None, eps=1e-4):
    n, d = z.shape
    total, count = z.new_zeros(()), 0
    for i in range(n):
        for j in range(n):
            if i == j or (pairs == "same_image" and group[i] != group[j]):
                continue
            dz = torch.sqrt(((z[i] - z[j]) ** 2).sum())
            dc = math.sqrt(sum((float(c[i, k]) - float(c[j, k])) ** 2 for k in range(c.shape[1])))
            total = total + (dz - dc / scale) ** 2
            count += 1
    loss = total / count
    if var_weight:
        target = 1 / math.sqrt(d) if var_target is None else var_target
        hinge = z.new_zeros(())
        for k in range(d):
            col = z[:, k]
            var = ((col - col.mean()) ** 2).sum() / (n - 1)
            hinge = hinge + torch.relu(target - torch.sqrt(var + eps))
        loss = loss + var_weight * hinge / d
    return loss


def _data(n=9, d=5, dims=3, groups=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64) * 2
    c = torch.randn(n, dims, generator=g, dtype=torch.float64) * 40
    group = torch.arange(n) % groups
    return z, c, group


@pytest.mark.parametrize("pairs", ["same_image", "all"])
@pytest.mark.parametrize("scale", [1.0, 10.0, 50.0])
@pytest.mark.parametrize("var_weight,var_target", [(0.0, None), (2.0, None), (0.5, 3.0)])
def test_loss_matches_naive(pairs, scale, var_weight, var_target):
    z, c, group = _data(seed=int(scale))
    z.requires_grad_(True)
    got = isimed_loss(z, c, group, distance_scale=scale, pairs=pairs, var_weight=var_weight, var_target=var_target)
    want = naive_isimed(z, c, group, scale, pairs, var_weight, var_target)
    assert got["loss"].dtype == torch.float64
    assert got["loss"].item() == pytest.approx(want.item(), rel=1e-12, abs=1e-12)
    g1 = torch.autograd.grad(got["loss"], z)[0]
    g2 = torch.autograd.grad(want, z)[0]
    torch.testing.assert_close(g1, g2, atol=1e-10, rtol=1e-9)


def test_terms_and_error_mm():
    z, c, group = _data(dims=2)
    out = isimed_loss(z, c, group, distance_scale=10.0)
    assert set(out) == {"loss", "distance", "variance", "error_mm"}
    assert out["loss"].item() == pytest.approx(out["distance"].item())
    # perfect embedding: z = c / scale (an isometry) gives zero loss and zero error
    perfect = isimed_loss(c / 10.0, c, group, distance_scale=10.0, pairs="all")
    assert perfect["loss"].item() == pytest.approx(0.0, abs=1e-20) and perfect["error_mm"].item() < 1e-9
    # same_image ignores cross-image pairs: moving one image's crops far away costs nothing
    far = c.clone()
    far[group == 1] += 1000.0
    assert isimed_loss(c / 10.0, far, group, distance_scale=10.0)["loss"].item() == pytest.approx(0.0, abs=1e-20)
    assert isimed_loss(c / 10.0, far, group, distance_scale=10.0, pairs="all")["loss"].item() > 1.0


def test_identical_crops_have_finite_gradients():
    z = torch.zeros(4, 3, requires_grad=True)
    c = torch.tensor([[0.0, 0, 0], [0, 0, 0], [10, 0, 0], [0, 5, 0]])
    out = isimed_loss(z, c, torch.zeros(4, dtype=torch.long), var_weight=1.0)
    out["loss"].backward()
    assert torch.isfinite(z.grad).all()


def test_bf16_autocast_computes_in_float32():
    lin = torch.nn.Linear(6, 4)
    x, c = torch.randn(8, 6), torch.randn(8, 3) * 30
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = lin(x)
        out = isimed_loss(z, c, torch.arange(8) // 4)
    assert z.dtype == torch.bfloat16 and out["loss"].dtype == torch.float32
    out["loss"].backward()
    assert torch.isfinite(lin.weight.grad).all()


def test_bad_arguments():
    z, c, group = _data()
    with pytest.raises(MedrepError, match="no pair"):
        isimed_loss(z, c, torch.arange(9))  # one crop per image
    with pytest.raises(MedrepError, match="pairs"):
        isimed_loss(z, c, group, pairs="cross")
    with pytest.raises(MedrepError, match="group"):
        isimed_loss(z, c, None)
    with pytest.raises(MedrepError, match="coords"):
        isimed_loss(z, c[:4], group)
    with pytest.raises(MedrepError, match="distance_scale"):
        isimed_loss(z, c, group, distance_scale=0.0)
    assert isimed_loss(z, c, None, pairs="all")["loss"] > 0


# ---------------------------------------------------------------- 2-process gloo

LOCAL_N, IN_DIM, OUT_DIM = 6, 5, 4
CASES = [("same_image", True), ("all", True), ("all", False)]


def _global_batch():
    g = torch.Generator().manual_seed(99)
    x = torch.randn(WORLD * LOCAL_N, IN_DIM, generator=g, dtype=torch.float64)
    c = torch.randn(WORLD * LOCAL_N, 3, generator=g, dtype=torch.float64) * 30
    group = torch.arange(WORLD * LOCAL_N) // 3  # 3 crops per image; an image's crops are on one rank
    return x, c, group


def _model():
    torch.manual_seed(0)
    return torch.nn.Linear(IN_DIM, OUT_DIM).double()


def _loss_and_grads(model, x, c, group, pairs, gather):
    """The distance term only: the optional variance hinge is per rank by design."""
    loss = isimed_loss(model(x), c, group, distance_scale=10.0, pairs=pairs, gather=gather)["loss"]
    loss.backward()
    return {"loss": loss.item(), "grads": {k.removeprefix("module."): p.grad.tolist() for k, p in model.named_parameters()}}


def _worker(r: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    x, c, group = _global_batch()
    sl = slice(r * LOCAL_N, (r + 1) * LOCAL_N)
    out = {"world_size": world_size(), "rank": rank()}
    for pairs, gather in CASES:
        out[f"{pairs}/{gather}"] = _loss_and_grads(DDP(_model()), x[sl], c[sl], group[sl], pairs, gather)
    return out


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> list[dict]:
    return run_workers(__file__, tmp_path_factory.mktemp("gloo"))


def _single(pairs):
    x, c, group = _global_batch()
    return _loss_and_grads(_model(), x, c, group, pairs, gather=True)  # no process group: nothing gathered


def _grads_close(got, want):
    return all(torch.allclose(torch.tensor(got[k], dtype=torch.float64), torch.tensor(want[k], dtype=torch.float64),
                              atol=1e-8, rtol=0) for k in want)


@pytest.mark.slow
@pytest.mark.parametrize("pairs", ["same_image", "all"])
def test_gloo_loss_and_grads_equal_single_process(ddp_results, pairs):
    """same_image needs no gather (an image's crops share a rank); all gathers with gradients."""
    ref = _single(pairs)
    local = [res[f"{pairs}/True"] for res in ddp_results]
    assert [res["rank"] for res in ddp_results] == [0, 1] and ddp_results[0]["world_size"] == WORLD
    assert sum(r["loss"] for r in local) / WORLD == pytest.approx(ref["loss"], abs=1e-10)
    for res in local:
        assert _grads_close(res["grads"], ref["grads"])


@pytest.mark.slow
def test_gloo_all_pairs_without_gather_differ(ddp_results):
    """Proves the check above can fail: without the gather the cross-rank pairs are lost."""
    ref = _single("all")
    local = [res["all/False"] for res in ddp_results]
    assert abs(sum(r["loss"] for r in local) / WORLD - ref["loss"]) > 1e-3
    assert not _grads_close(local[0]["grads"], ref["grads"])


if __name__ == "__main__":
    worker_main(_worker)
