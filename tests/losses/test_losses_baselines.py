"""BYOL / Barlow Twins / VICReg losses: values and gradients against naive loops, and a
2-process gloo DDP check that the gathered global-batch losses give single-process gradients.

The distributed workers are this file run as a script (``python test_losses_baselines.py
--worker ...``), as in ``test_losses_ntxent.py``.
"""

from __future__ import annotations

import pytest
import torch
from helpers import WORLD, run_workers, worker_main

from medrep.losses import barlow_twins_loss, byol_loss, vicreg_loss

# ---------------------------------------------------------------- naive references (loops)


def naive_byol(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    n = p.shape[0]
    total = p.new_zeros(())
    for i in range(n):
        cos = torch.dot(p[i], z[i]) / (p[i].norm() * z[i].norm())
        total = total + 2 - 2 * cos
    return total / n


def _column_stats(z: torch.Tensor, j: int, ddof: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance (divisor ``n - ddof``) of column ``j``, with loops."""
    n = z.shape[0]
    mean = sum(z[b, j] for b in range(n)) / n
    var = sum((z[b, j] - mean) ** 2 for b in range(n)) / (n - ddof)
    return mean, var


def naive_barlow(z1: torch.Tensor, z2: torch.Tensor, lam: float, eps: float = 1e-5) -> torch.Tensor:
    n, d = z1.shape

    def standardise(z):  # s[j][b], population variance as BatchNorm1d
        out = []
        for j in range(d):
            mean, var = _column_stats(z, j, ddof=0)
            out.append([(z[b, j] - mean) / torch.sqrt(var + eps) for b in range(n)])
        return out

    a, b = standardise(z1), standardise(z2)
    loss = z1.new_zeros(())
    for i in range(d):
        for j in range(d):
            c_ij = sum(a[i][k] * b[j][k] for k in range(n)) / n
            loss = loss + ((1 - c_ij) ** 2 if i == j else lam * c_ij**2)
    return loss


def naive_vicreg(z1, z2, sim_w=25.0, var_w=25.0, cov_w=1.0, eps=1e-4) -> dict[str, torch.Tensor]:
    n, d = z1.shape
    inv = sum((z1[b, k] - z2[b, k]) ** 2 for b in range(n) for k in range(d)) / (n * d)

    def variance(z):
        total = z.new_zeros(())
        for j in range(d):
            std = torch.sqrt(_column_stats(z, j, ddof=1)[1] + eps)
            total = total + torch.clamp(1 - std, min=0)
        return total / d

    def covariance(z):
        means = [_column_stats(z, j, ddof=1)[0] for j in range(d)]
        total = z.new_zeros(())
        for i in range(d):
            for j in range(d):
                if i != j:
                    c = sum((z[b, i] - means[i]) * (z[b, j] - means[j]) for b in range(n)) / (n - 1)
                    total = total + c**2
        return total / d

    var = (variance(z1) + variance(z2)) / 2
    cov = covariance(z1) + covariance(z2)
    return {"loss": sim_w * inv + var_w * var + cov_w * cov, "invariance": inv, "variance": var, "covariance": cov}


def _pair(n: int, d: int, seed: int, requires_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64) * 0.7
    z2 = z1 + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64) + 0.2
    return z1.requires_grad_(requires_grad), z2.requires_grad_(requires_grad)


SHAPES = [(2, 3), (5, 4), (8, 6), (16, 5)]
WIDE = [(3, 8), (4, 10)]  # d >= 2n: Barlow Twins takes sum C_ij^2 from the n x n Gram matrices

# ---------------------------------------------------------------- single-process values


@pytest.mark.parametrize("n,d", [(1, 3), *SHAPES])
def test_byol_matches_naive(n: int, d: int) -> None:
    p, z = _pair(n, d, seed=n * 10 + d)
    got = byol_loss(p, z)
    assert got.ndim == 0 and got.dtype == torch.float64
    assert got.item() == pytest.approx(naive_byol(p, z).item(), rel=1e-12, abs=1e-12)
    assert byol_loss(z, z).item() == pytest.approx(0.0, abs=1e-12)
    assert byol_loss(z, -3 * z).item() == pytest.approx(4.0, abs=1e-12)


@pytest.mark.parametrize("n,d", [*SHAPES, *WIDE])
@pytest.mark.parametrize("lam", [0.0, 5e-3, 0.5])
def test_barlow_matches_naive(n: int, d: int, lam: float) -> None:
    z1, z2 = _pair(n, d, seed=n * 10 + d)
    got = barlow_twins_loss(z1, z2, lambda_offdiag=lam)
    assert got.ndim == 0 and got.dtype == torch.float64
    assert got.item() == pytest.approx(naive_barlow(z1, z2, lam).item(), rel=1e-10, abs=1e-12)
    assert barlow_twins_loss(z1, z2, lam, gather=False).item() == pytest.approx(got.item(), rel=1e-12)


@pytest.mark.parametrize("n,d", SHAPES)
@pytest.mark.parametrize("weights", [(25.0, 25.0, 1.0), (1.0, 0.0, 3.0)])
def test_vicreg_matches_naive(n: int, d: int, weights: tuple[float, float, float]) -> None:
    z1, z2 = _pair(n, d, seed=n * 10 + d)
    got = vicreg_loss(z1, z2, *weights)
    want = naive_vicreg(z1, z2, *weights)
    assert set(got) == {"loss", "invariance", "variance", "covariance"}
    for key in got:
        assert got[key].ndim == 0 and got[key].dtype == torch.float64
        assert got[key].item() == pytest.approx(want[key].item(), rel=1e-10, abs=1e-12), key
    assert got["variance"] > 0  # the test data have std < 1 in some dimension: the hinge is active


def _decorrelated(n: int, d: int) -> torch.Tensor:
    """Zero-mean columns, orthogonal to each other, each with population variance 1."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(x - x.mean(0))
    return q * n**0.5


def test_minimum_is_zero_for_identical_decorrelated_views() -> None:
    z = _decorrelated(16, 5)
    assert barlow_twins_loss(z, z).item() == pytest.approx(0.0, abs=1e-8)
    terms = vicreg_loss(z, z)
    for key in terms:
        assert terms[key].item() == pytest.approx(0.0, abs=1e-12), key


def test_collapse_is_penalised() -> None:
    z1, z2 = _pair(8, 4, seed=3)
    collapsed = torch.ones(8, 4, dtype=torch.float64)
    assert barlow_twins_loss(collapsed, collapsed).item() == pytest.approx(4.0)  # C = 0: every (1 - C_ii)^2 = 1
    assert vicreg_loss(collapsed, collapsed)["variance"].item() == pytest.approx(1 - 1e-2)
    assert vicreg_loss(collapsed, collapsed)["loss"] > vicreg_loss(z1, z1)["loss"]


@pytest.mark.parametrize("n,d", [(64, 16), (16, 64)], ids=["cross-correlation", "gram"])
def test_barlow_float32_keeps_float_precision(n: int, d: int) -> None:
    """``sum C^2 - sum diag C^2`` loses nothing that matters in float32, also when ``C`` is the identity."""
    z1, z2 = _pair(n, d, seed=5)
    assert barlow_twins_loss(z1.float(), z2.float()).item() == pytest.approx(barlow_twins_loss(z1, z2).item(), rel=1e-5)
    if n > d:  # identical decorrelated views: C = I, loss 0
        z = _decorrelated(n, d).float()
        assert barlow_twins_loss(z, z).item() == pytest.approx(0.0, abs=5e-3 * d * 2**-20)


# ---------------------------------------------------------------- gradients


def test_gradcheck() -> None:
    z1, z2 = _pair(5, 4, seed=11, requires_grad=True)
    assert torch.autograd.gradcheck(byol_loss, (z1, z2))
    assert torch.autograd.gradcheck(lambda a, b: barlow_twins_loss(a, b, 0.1), (z1, z2))
    assert torch.autograd.gradcheck(lambda a, b: vicreg_loss(a, b)["loss"], (z1, z2))


@pytest.mark.parametrize(
    "fn,ref",
    [
        (byol_loss, naive_byol),
        (lambda a, b: barlow_twins_loss(a, b, 0.05), lambda a, b: naive_barlow(a, b, 0.05)),
        (lambda a, b: vicreg_loss(a, b)["loss"], lambda a, b: naive_vicreg(a, b)["loss"]),
    ],
    ids=["byol", "barlow", "vicreg"],
)
@pytest.mark.parametrize("n,d", [(6, 4), WIDE[0]])
def test_gradient_matches_autograd_of_naive(fn, ref, n: int, d: int) -> None:
    z1, z2 = _pair(n, d, seed=12, requires_grad=True)
    got = torch.autograd.grad(fn(z1, z2), (z1, z2))
    want = torch.autograd.grad(ref(z1, z2), (z1, z2))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


# ---------------------------------------------------------------- dtypes / autocast


def test_bf16_and_autocast_compute_in_float32() -> None:
    g = torch.Generator().manual_seed(6)
    lin = torch.nn.Linear(16, 8)
    x1, x2 = torch.randn(2, 12, 16, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        e1, e2 = lin(x1), lin(x2)
        assert e1.dtype == torch.bfloat16
        losses = [byol_loss(e1, e2), barlow_twins_loss(e1, e2), vicreg_loss(e1, e2)["loss"]]
    refs = [byol_loss(e1.float(), e2.float()), barlow_twins_loss(e1.float(), e2.float()),
            vicreg_loss(e1.float(), e2.float())["loss"]]
    for loss, ref in zip(losses, refs):
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss, ref)
    sum(losses).backward()
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("fn", [byol_loss, barlow_twins_loss, vicreg_loss])
def test_bad_shapes_raise(fn) -> None:
    with pytest.raises(ValueError, match="same shape"):
        fn(torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match="2D"):
        fn(torch.randn(4, 8, 2), torch.randn(4, 8, 2))
    with pytest.raises(ValueError, match="empty"):
        fn(torch.randn(0, 8), torch.randn(0, 8))


def test_batch_statistics_need_two_samples_and_weights_are_checked() -> None:
    z = torch.randn(1, 4)
    with pytest.raises(ValueError, match="at least 2"):
        barlow_twins_loss(z, z)
    with pytest.raises(ValueError, match="at least 2"):
        vicreg_loss(z, z)
    z = torch.randn(4, 4)
    with pytest.raises(ValueError, match="lambda_offdiag"):
        barlow_twins_loss(z, z, lambda_offdiag=-1.0)
    with pytest.raises(ValueError, match="var_weight"):
        vicreg_loss(z, z, var_weight=float("nan"))


# ---------------------------------------------------------------- 2-process gloo / DDP

LOCAL_N = 4  # samples per rank
IN_DIM, OUT_DIM = 6, 5


def _barlow(z1, z2, gather_: bool) -> dict[str, torch.Tensor]:
    return {"loss": barlow_twins_loss(z1, z2, 0.1, gather=gather_)}


def _vicreg(z1, z2, gather_: bool) -> dict[str, torch.Tensor]:
    return vicreg_loss(z1, z2, gather=gather_)


LOSSES = {"barlow": _barlow, "vicreg": _vicreg}


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    x1 = torch.randn(WORLD * LOCAL_N, IN_DIM, generator=g, dtype=torch.float64)
    x2 = x1 + 0.3 * torch.randn(WORLD * LOCAL_N, IN_DIM, generator=g, dtype=torch.float64)
    x1[LOCAL_N:] += 0.5  # the ranks' halves differ in mean, so local statistics differ from global ones
    x2[LOCAL_N:] += 0.5
    return x1, x2


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(IN_DIM, OUT_DIM).double()


def _loss_and_grads(model: torch.nn.Module, name: str, x1, x2, gather_: bool) -> dict:
    terms = LOSSES[name](model(x1), model(x2), gather_)
    terms["loss"].backward()
    grads = {k.removeprefix("module."): p.grad.tolist() for k, p in model.named_parameters()}
    return {"terms": {k: v.item() for k, v in terms.items()}, "grads": grads}


def _worker(r: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    x1, x2 = _global_batch()
    sl = slice(r * LOCAL_N, (r + 1) * LOCAL_N)
    out: dict = {}
    for name in LOSSES:
        for gather_ in (True, False):
            out[f"{name}/{gather_}"] = _loss_and_grads(DDP(_model()), name, x1[sl], x2[sl], gather_)
    return out


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> list[dict]:
    return run_workers(__file__, tmp_path_factory.mktemp("gloo"))


def _single_process(name: str) -> dict:
    x1, x2 = _global_batch()
    return _loss_and_grads(_model(), name, x1, x2, gather_=True)  # no process group: identity


def _mean_terms(results: list[dict], key: str) -> dict[str, float]:
    terms = [res[key]["terms"] for res in results]
    return {k: sum(t[k] for t in terms) / WORLD for k in terms[0]}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LOSSES))
def test_gloo_gathered_loss_and_grads_equal_single_process(ddp_results: list[dict], name: str) -> None:
    ref = _single_process(name)
    mean = _mean_terms(ddp_results, f"{name}/True")
    for k, want in ref["terms"].items():
        assert mean[k] == pytest.approx(want, abs=1e-10), k
    # the global-statistics terms are the same global value on every rank
    for k in ("variance", "covariance") if name == "vicreg" else ("loss",):
        for res in ddp_results:
            assert res[f"{name}/True"]["terms"][k] == pytest.approx(ref["terms"][k], abs=1e-10), k
    for res in ddp_results:
        for k, want in ref["grads"].items():
            torch.testing.assert_close(
                torch.tensor(res[f"{name}/True"]["grads"][k], dtype=torch.float64),
                torch.tensor(want, dtype=torch.float64), atol=1e-9, rtol=1e-7,
            )


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LOSSES))
def test_gloo_without_gather_differs(ddp_results: list[dict], name: str) -> None:
    """Proves the check above can fail: per-rank batch statistics give another loss and gradient."""
    ref = _single_process(name)
    mean = _mean_terms(ddp_results, f"{name}/False")
    assert abs(mean["loss"] - ref["terms"]["loss"]) > 1e-3
    got = torch.tensor(ddp_results[0][f"{name}/False"]["grads"]["weight"], dtype=torch.float64)
    want = torch.tensor(ref["grads"]["weight"], dtype=torch.float64)
    assert not torch.allclose(got, want, atol=1e-6, rtol=0)


if __name__ == "__main__":
    worker_main(_worker)
