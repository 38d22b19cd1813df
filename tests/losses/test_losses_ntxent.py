"""NT-Xent / InfoNCE: values and gradients against naive loops, and a 2-process gloo DDP check.

The distributed workers are this file run as a script (``python test_losses_ntxent.py
--worker ...``), so they do not depend on how pytest imports test modules.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import WORLD, run_workers, worker_main

from medrep.losses import gather, info_nce, nt_xent, rank, rank_offset, world_size

# ---------------------------------------------------------------- naive references


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.dot(a, b) / (a.norm() * b.norm())


def naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """-log(exp(s_pos/t) / sum_{k != i} exp(s_ik/t)) averaged over the 2N anchors, with loops."""
    n = z1.shape[0]
    z = [z1[i] for i in range(n)] + [z2[i] for i in range(n)]
    total = z1.new_zeros(())
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        denom = z1.new_zeros(())
        for k in range(2 * n):
            if k != i:
                denom = denom + torch.exp(_cos(z[i], z[k]) / t)
        total = total - torch.log(torch.exp(_cos(z[i], z[pos]) / t) / denom)
    return total / (2 * n)


def naive_info_nce(q: torch.Tensor, k: torch.Tensor, t: float) -> torch.Tensor:
    n = q.shape[0]
    total = q.new_zeros(())
    for i in range(n):
        denom = q.new_zeros(())
        for j in range(n):
            denom = denom + torch.exp(_cos(q[i], k[j]) / t)
        total = total - torch.log(torch.exp(_cos(q[i], k[i]) / t) / denom)
    return total / n


# ---------------------------------------------------------------- single-process values


@pytest.mark.parametrize("n,d", [(1, 3), (2, 4), (5, 8), (8, 16)])
@pytest.mark.parametrize("t", [0.07, 0.1, 0.5, 1.0])
def test_nt_xent_matches_naive(n: int, d: int, t: float) -> None:
    g = torch.Generator().manual_seed(n * 100 + d)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64) * 3
    z2 = torch.randn(n, d, generator=g, dtype=torch.float64)
    got = nt_xent(z1, z2, temperature=t)
    assert got.ndim == 0 and got.dtype == torch.float64
    assert got.item() == pytest.approx(naive_nt_xent(z1, z2, t).item(), abs=1e-5, rel=1e-9)
    # gather=False is the same thing outside a process group
    assert nt_xent(z1, z2, temperature=t, gather=False).item() == pytest.approx(got.item(), rel=1e-12)


@pytest.mark.parametrize("n,d", [(1, 3), (3, 4), (8, 16)])
@pytest.mark.parametrize("t", [0.05, 0.2, 1.0])
def test_info_nce_matches_naive(n: int, d: int, t: float) -> None:
    g = torch.Generator().manual_seed(n * 100 + d)
    q = torch.randn(n, d, generator=g, dtype=torch.float64)
    k = torch.randn(n, d, generator=g, dtype=torch.float64) * 0.3
    got = info_nce(q, k, temperature=t)
    assert got.item() == pytest.approx(naive_info_nce(q, k, t).item(), abs=1e-5, rel=1e-9)


def test_info_nce_without_normalize_is_dot_product() -> None:
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    logits = q @ k.T / 0.5
    ref = torch.nn.functional.cross_entropy(logits, torch.arange(4))
    assert info_nce(q, k, 0.5, normalize=False).item() == pytest.approx(ref.item(), rel=1e-12)


def test_nt_xent_perfect_alignment_is_lower_than_random() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 8, generator=g)
    assert nt_xent(z, z) < nt_xent(z, torch.randn(6, 8, generator=g))


def test_numerically_stable_with_tiny_temperature() -> None:
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(2, 8, 16, generator=g)
    assert torch.isfinite(nt_xent(z1, z2, temperature=1e-4))
    assert torch.isfinite(info_nce(z1, z2, temperature=1e-4))


# ---------------------------------------------------------------- gradients


def test_nt_xent_gradcheck() -> None:
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: nt_xent(a, b, 0.2), (z1, z2))
    assert torch.autograd.gradcheck(lambda a, b: info_nce(a, b, 0.2), (z1, z2))


@pytest.mark.parametrize("fn,ref", [(nt_xent, naive_nt_xent), (info_nce, naive_info_nce)])
def test_gradient_matches_autograd_of_naive(fn, ref) -> None:
    g = torch.Generator().manual_seed(4)
    z1 = torch.randn(5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    got = torch.autograd.grad(fn(z1, z2, 0.1), (z1, z2))
    want = torch.autograd.grad(ref(z1, z2, 0.1), (z1, z2))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_learnable_tensor_temperature_gets_gradient() -> None:
    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(2, 4, 8, generator=g)
    t = torch.tensor(0.3, requires_grad=True)
    loss = nt_xent(z1, z2, t) + info_nce(z1, z2, t)
    loss.backward()
    assert t.grad is not None and torch.isfinite(t.grad)


# ---------------------------------------------------------------- dtypes / autocast


def test_bf16_inputs_and_autocast_compute_in_float32() -> None:
    g = torch.Generator().manual_seed(6)
    z1, z2 = torch.randn(2, 8, 16, generator=g)
    b1, b2 = z1.bfloat16(), z2.bfloat16()
    for fn in (nt_xent, info_nce):
        want = fn(b1.float(), b2.float())
        got = fn(b1, b2)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)

    lin = torch.nn.Linear(16, 8)
    x1, x2 = torch.randn(2, 8, 16, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        e1, e2 = lin(x1), lin(x2)
        assert e1.dtype == torch.bfloat16
        loss = nt_xent(e1, e2)
        loss_q = info_nce(e1, e2)
    assert loss.dtype == torch.float32 and loss_q.dtype == torch.float32
    torch.testing.assert_close(loss, nt_xent(e1.float(), e2.float()))
    loss.backward()
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("fn", [nt_xent, info_nce])
def test_shape_mismatch_raises(fn) -> None:
    with pytest.raises(ValueError, match="same shape"):
        fn(torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match="same shape"):
        fn(torch.randn(4, 8), torch.randn(4, 7))
    with pytest.raises(ValueError, match="2D"):
        fn(torch.randn(4, 8, 2), torch.randn(4, 8, 2))
    with pytest.raises(ValueError, match="empty"):
        fn(torch.randn(0, 8), torch.randn(0, 8))


@pytest.mark.parametrize("fn", [nt_xent, info_nce])
@pytest.mark.parametrize("t", [0.0, -0.1, math.inf, math.nan])
def test_bad_temperature_raises(fn, t: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        fn(torch.randn(4, 8), torch.randn(4, 8), temperature=t)


def test_distributed_helpers_outside_process_group() -> None:
    x = torch.randn(3, 2, requires_grad=True)
    assert world_size() == 1 and rank() == 0 and rank_offset(7) == 0
    assert gather(x) is x


# ---------------------------------------------------------------- 2-process gloo / DDP

LOCAL_N = 3  # samples per rank; global batch of 2 * LOCAL_N samples, two views each
IN_DIM, OUT_DIM = 6, 4
TEMPERATURE = 0.2
LOSSES = {"nt_xent": nt_xent, "info_nce": info_nce}


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    x1 = torch.randn(WORLD * LOCAL_N, IN_DIM, generator=g, dtype=torch.float64)
    x2 = x1 + 0.3 * torch.randn(WORLD * LOCAL_N, IN_DIM, generator=g, dtype=torch.float64)
    return x1, x2


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(IN_DIM, OUT_DIM).double()


def _loss_and_grads(model: torch.nn.Module, name: str, x1, x2, gather_: bool) -> dict:
    loss = LOSSES[name](model(x1), model(x2), TEMPERATURE, gather=gather_)
    loss.backward()
    grads = {k: p.grad.tolist() for k, p in model.named_parameters()}
    return {"loss": loss.item(), "grads": grads}


def _worker(r: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    x1, x2 = _global_batch()
    sl = slice(r * LOCAL_N, (r + 1) * LOCAL_N)
    out: dict = {"world_size": world_size(), "rank": rank(), "offset": rank_offset(LOCAL_N)}
    out["gathered"] = gather(torch.full((LOCAL_N, 1), float(r))).flatten().tolist()
    for name in LOSSES:
        for gather_ in (True, False):
            ddp = DDP(_model())
            res = _loss_and_grads(ddp, name, x1[sl], x2[sl], gather_)
            res["grads"] = {k.removeprefix("module."): v for k, v in res["grads"].items()}
            out[f"{name}/{gather_}"] = res
    return out


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> list[dict]:
    return run_workers(__file__, tmp_path_factory.mktemp("gloo"))


def _single_process(name: str) -> dict:
    x1, x2 = _global_batch()
    return _loss_and_grads(_model(), name, x1, x2, gather_=True)  # no process group: identity


@pytest.mark.slow
def test_gloo_helpers(ddp_results: list[dict]) -> None:
    for r, res in enumerate(ddp_results):
        assert res["world_size"] == WORLD and res["rank"] == r and res["offset"] == r * LOCAL_N
        assert res["gathered"] == [0.0] * LOCAL_N + [1.0] * LOCAL_N


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LOSSES))
def test_gloo_gathered_loss_and_grads_equal_single_process(ddp_results: list[dict], name: str) -> None:
    ref = _single_process(name)
    local = [res[f"{name}/True"] for res in ddp_results]
    mean_loss = sum(r["loss"] for r in local) / WORLD
    assert mean_loss == pytest.approx(ref["loss"], abs=1e-10)
    for res in local:
        for k, want in ref["grads"].items():
            torch.testing.assert_close(
                torch.tensor(res["grads"][k], dtype=torch.float64),
                torch.tensor(want, dtype=torch.float64), atol=1e-6, rtol=0,
            )


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LOSSES))
def test_gloo_without_gather_differs(ddp_results: list[dict], name: str) -> None:
    """Proves the check above can fail: local-only negatives give another loss and gradient."""
    ref = _single_process(name)
    local = [res[f"{name}/False"] for res in ddp_results]
    mean_loss = sum(r["loss"] for r in local) / WORLD
    assert abs(mean_loss - ref["loss"]) > 1e-3
    w_got = torch.tensor(local[0]["grads"]["weight"], dtype=torch.float64)
    w_want = torch.tensor(ref["grads"]["weight"], dtype=torch.float64)
    assert not torch.allclose(w_got, w_want, atol=1e-6, rtol=0)


if __name__ == "__main__":
    worker_main(_worker)
