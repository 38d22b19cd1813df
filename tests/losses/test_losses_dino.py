"""DINO loss and centre against loops over rows and prototypes; the centre in 2 gloo processes with
unequal rows equals the centre of one process holding every row."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import WORLD, run_workers, worker_main

from medrep.errors import MedrepError
from medrep.losses.dino import dino_center, dino_loss

F64 = torch.float64


def naive_dino(student, teacher, center, ts, tt, weight=None) -> float:
    rows = []
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        t = [math.exp((v - c) / tt) for v, c in zip(t_row, center.tolist())]
        s = [math.exp(v / ts) for v in s_row]
        zt, zs = sum(t), sum(s)
        rows.append(-sum((a / zt) * math.log(b / zs) for a, b in zip(t, s)))
    if weight is None:
        return sum(rows) / len(rows)
    w = weight.tolist()
    return sum(r * x for r, x in zip(rows, w)) / max(sum(w), 1.0)


def naive_center(center, teacher, m) -> list[float]:
    n = len(teacher)
    return [m * c + (1 - m) * sum(row[k] for row in teacher.tolist()) / n for k, c in enumerate(center.tolist())]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("ts, tt", [(0.1, 0.04), (0.2, 0.07)])
def test_dino_loss_matches_naive(seed, ts, tt):
    g = torch.Generator().manual_seed(seed)
    s, t, c = torch.randn(5, 7, generator=g, dtype=F64), torch.randn(5, 7, generator=g, dtype=F64), torch.randn(7, generator=g, dtype=F64)
    assert dino_loss(s, t, c, ts, tt).item() == pytest.approx(naive_dino(s, t, c, ts, tt), rel=1e-6)
    w = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    assert dino_loss(s, t, c, ts, tt, weight=w).item() == pytest.approx(naive_dino(s, t, c, ts, tt, w), rel=1e-6)


def test_dino_gradient_flows_to_the_student_only():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 6, generator=g, dtype=F64, requires_grad=True)
    t = torch.randn(4, 6, generator=g, dtype=F64, requires_grad=True)
    dino_loss(s, t, torch.zeros(6, dtype=F64)).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None
    # d/ds of H(p_t, softmax(s / ts)) = (softmax(s / ts) - p_t) / (ts * N)
    p_t = torch.softmax(t.detach() / 0.04, dim=1)
    assert torch.allclose(s.grad, (torch.softmax(s.detach() / 0.1, dim=1) - p_t) / (0.1 * 4), atol=1e-6)


def test_centring_moves_the_target():
    t = torch.tensor([[2.0, 0.0, 0.0]])
    s = torch.tensor([[0.0, 1.0, 0.0]])
    assert dino_loss(s, t, torch.zeros(3)).item() != pytest.approx(dino_loss(s, t, torch.tensor([2.0, 0.0, 0.0])).item())


def test_zero_weights_give_zero_with_a_graph():
    s = torch.randn(3, 4, requires_grad=True)
    loss = dino_loss(s, torch.randn(3, 4), torch.zeros(4), weight=torch.zeros(3))
    assert loss.item() == 0.0 and loss.requires_grad


@pytest.mark.parametrize("m", [0.0, 0.9, 1.0])
def test_center_matches_naive(m):
    g = torch.Generator().manual_seed(1)
    c, t = torch.randn(5, generator=g), torch.randn(6, 5, generator=g)
    assert dino_center(c, t, m).tolist() == pytest.approx(naive_center(c, t, m), abs=1e-6)
    assert torch.equal(dino_center(c, t[:0], m), c)  # no row: the centre stays


@pytest.mark.parametrize("args, match", [
    ((torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(3)), "matching"),
    ((torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(4)), "center must be"),
    ((torch.zeros(3), torch.zeros(3), torch.zeros(3)), "matching"),
])
def test_bad_shapes_are_refused(args, match):
    with pytest.raises(ValueError, match=match):
        dino_loss(*args)
    with pytest.raises(MedrepError, match="student_temperature"):
        dino_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), student_temperature=0.0)
    with pytest.raises(ValueError, match="momentum"):
        dino_center(torch.zeros(3), torch.zeros(2, 3), 1.5)


# ---------------------------------------------------------------- 2-process gloo

ROWS = (2, 5)  # unequal rows per rank: the centre must weigh each row once, not each rank


def _rows(r: int) -> torch.Tensor:
    return torch.randn(ROWS[r], 4, generator=torch.Generator().manual_seed(10 + r), dtype=F64)


def _worker(r: int) -> dict:
    c = torch.linspace(-1, 1, 4, dtype=F64)
    return {"gathered": dino_center(c, _rows(r), 0.5).tolist(), "local": dino_center(c, _rows(r), 0.5, gather=False).tolist()}


@pytest.mark.slow
def test_gloo_center_equals_one_process_over_all_rows(tmp_path):
    results = run_workers(__file__, tmp_path)
    c = torch.linspace(-1, 1, 4, dtype=F64)
    want = dino_center(c, torch.cat([_rows(r) for r in range(WORLD)]), 0.5)
    for res in results:
        assert torch.allclose(torch.tensor(res["gathered"], dtype=F64), want.to(F64), atol=1e-6)
    # the check can fail: a rank's own rows give another centre
    assert not torch.allclose(torch.tensor(results[0]["local"], dtype=F64), want.to(F64), atol=1e-3)


if __name__ == "__main__":
    worker_main(_worker)
