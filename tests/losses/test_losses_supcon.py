"""TaCo's multi-positive SupCon: values and gradients against a naive loop, failure samples as
negatives only, and a 2-process gloo DDP check (ranks with different numbers of valid anchors).

The distributed workers are this file run as a script (``--worker ...``)."""

from __future__ import annotations

import pytest
import torch
from helpers import WORLD, run_workers, worker_main

from medrep.errors import MedrepError
from medrep.losses import supcon


def naive_supcon(z, labels, neg, t):
    """Khosla et al.'s L_out with loops: anchors are non-failure samples with a positive."""
    n = z.shape[0]
    z = torch.nn.functional.normalize(z, dim=1)
    total, count = z.new_zeros(()), 0
    for i in range(n):
        if neg[i]:
            continue
        pos = [p for p in range(n) if p != i and labels[p] == labels[i] and not neg[p]]
        if not pos:
            continue
        denom = sum(torch.exp(z[i] @ z[a] / t) for a in range(n) if a != i)
        total = total - sum(torch.log(torch.exp(z[i] @ z[p] / t) / denom) for p in pos) / len(pos)
        count += 1
    return total / max(count, 1)


def batch(n=10, d=6, classes=3, seed=0, failures=0.3):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, classes, (n,), generator=g)
    neg = torch.rand(n, generator=g) < failures
    return z, labels, neg


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("t", [0.07, 0.1, 0.5])
def test_matches_naive(seed, t):
    z, labels, neg = batch(seed=seed)
    torch.testing.assert_close(supcon(z, labels, neg, t), naive_supcon(z, labels, neg, t))


def test_gradient_matches_naive():
    z, labels, neg = batch(n=8, seed=3)
    a, b = z.clone().requires_grad_(), z.clone().requires_grad_()
    supcon(a, labels, neg, 0.2).backward()
    naive_supcon(b, labels, neg, 0.2).backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_failures_only_push():
    """A failure sample never pulls: moving it onto an anchor's class centre raises the loss."""
    z = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.0, -1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 0])
    neg = torch.tensor([False, False, False, False, True])
    far = supcon(z, labels, neg, 0.1)
    z_near = z.clone()
    z_near[4] = torch.tensor([1.0, 0.05])
    assert supcon(z_near, labels, neg, 0.1) > far
    # as a positive (not negative-only) the same move would lower the loss
    none = torch.zeros(5, dtype=torch.bool)
    assert supcon(z_near, labels, none, 0.1) < supcon(z, labels, none, 0.1)


def test_no_anchor_with_a_positive_gives_zero_with_a_graph():
    z = torch.randn(3, 4, requires_grad=True)
    loss = supcon(z, torch.tensor([0, 1, 2]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_bf16_autocast_computes_in_float32():
    z, labels, neg = batch(seed=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = supcon(z.float().bfloat16(), labels, neg, 0.1)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), naive_supcon(z.float().bfloat16().double(), labels, neg, 0.1), atol=1e-4, rtol=0)


@pytest.mark.parametrize("args,match", [((torch.zeros(0, 3), torch.zeros(0)), "non-empty"),
                                        ((torch.zeros(4, 3), torch.zeros(3)), "labels"),
                                        ((torch.zeros(4, 3), torch.zeros(4), torch.zeros(2, dtype=torch.bool)), "negative_only")])
def test_bad_shapes_name_the_argument(args, match):
    with pytest.raises(MedrepError, match=match):
        supcon(*args)


def test_bad_temperature():
    with pytest.raises(MedrepError, match="temperature"):
        supcon(torch.zeros(4, 3), torch.zeros(4), temperature=0.0)


# ---------------------------------------------------------------- 2-process gloo / DDP

LOCAL_N, IN_DIM, OUT_DIM = 5, 6, 4


def _global():
    g = torch.Generator().manual_seed(99)
    x = torch.randn(WORLD * LOCAL_N, IN_DIM, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 2, 1, 1, 2, 0, 3, 2])[: WORLD * LOCAL_N]
    # rank 0 holds two failures, rank 1 none, and class 3 is a singleton: ranks differ in valid anchors
    neg = torch.tensor([True, False, True, False, False, False, False, False, False, False])[: WORLD * LOCAL_N]
    return x, labels, neg


def _model():
    torch.manual_seed(0)
    return torch.nn.Linear(IN_DIM, OUT_DIM).double()


def _loss_and_grads(model, x, labels, neg, gather):
    loss = supcon(model(x), labels, neg, 0.2, gather=gather)
    loss.backward()
    return {"loss": loss.item(), "grads": {k.removeprefix("module."): p.grad.tolist() for k, p in model.named_parameters()}}


def _worker(r: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    x, labels, neg = _global()
    sl = slice(r * LOCAL_N, (r + 1) * LOCAL_N)
    return {str(g): _loss_and_grads(DDP(_model()), x[sl], labels[sl], neg[sl], g) for g in (True, False)}


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    return run_workers(__file__, tmp_path_factory.mktemp("gloo"))


@pytest.mark.slow
def test_gloo_gathered_equals_single_process(ddp_results):
    x, labels, neg = _global()
    ref = _loss_and_grads(_model(), x, labels, neg, True)
    assert sum(r["True"]["loss"] for r in ddp_results) / WORLD == pytest.approx(ref["loss"], abs=1e-10)
    for res in ddp_results:
        for k, want in ref["grads"].items():
            torch.testing.assert_close(torch.tensor(res["True"]["grads"][k]), torch.tensor(want), atol=1e-8, rtol=0)
    # the check can fail: local-only candidates give another loss
    assert abs(sum(r["False"]["loss"] for r in ddp_results) / WORLD - ref["loss"]) > 1e-3


if __name__ == "__main__":
    worker_main(_worker)
