"""PLACE's losses: sentence-observation matching (max, and Hungarian against a brute-force search),
PCMA and CCE values and gradients against naive loops, same-image pairs kept out of the
denominators, padding invariance, and a 2-process gloo DDP check with unequal images, padded
lengths and valid sentences per rank. The distributed workers are this file run as a script.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from helpers import WORLD, naive_cos, run_workers, worker_main

from medrep.errors import MedrepError
from medrep.losses import cce_loss, match_observations, patch_correlation, pcma_loss

F64 = torch.float64

# ---------------------------------------------------------------- naive references (loops)




def naive_match_max(sent, mask, obs) -> list[list[int]]:
    b_n, s_n, q_n = sent.shape[0], sent.shape[1], obs.shape[1]
    out = [[0] * s_n for _ in range(b_n)]
    for b in range(b_n):
        for s in range(s_n):
            if mask[b, s]:
                cos = [float(naive_cos(sent[b, s], obs[b, q])) for q in range(q_n)]
                out[b][s] = max(range(q_n), key=cos.__getitem__)
    return out


def brute_force_hungarian(sent, mask, obs) -> list[list[int]]:
    """Every assignment of an image's n sentences to its Q observations in which no observation
    serves more than ceil(n / Q) sentences (distinct ones when n <= Q); the largest total cosine."""
    b_n, s_n, q_n = sent.shape[0], sent.shape[1], obs.shape[1]
    out = [[0] * s_n for _ in range(b_n)]
    for b in range(b_n):
        rows = [s for s in range(s_n) if mask[b, s]]
        if not rows:
            continue
        cap = math.ceil(len(rows) / q_n)
        cos = [[float(naive_cos(sent[b, s], obs[b, q])) for q in range(q_n)] for s in rows]
        best = max((a for a in itertools.product(range(q_n), repeat=len(rows)) if max(a.count(q) for q in a) <= cap),
                   key=lambda a: sum(cos[i][q] for i, q in enumerate(a)))
        for s, q in zip(rows, best):
            out[b][s] = q
    return out


def naive_pcma(sent, mask, obs, idx, t):
    """Mean over pairs of the two directions' CE; candidates: the pair itself and other images' pairs."""
    pairs = [(b, sent[b, s], obs[b, idx[b][s]]) for b in range(sent.shape[0]) for s in range(sent.shape[1]) if mask[b, s]]
    total = sent.new_zeros(())
    for i, (bi, si, vi) in enumerate(pairs):
        cand = [j for j, (bj, _, _) in enumerate(pairs) if j == i or bj != bi]
        s2v = -torch.log(torch.exp(naive_cos(si, vi) / t) / sum(torch.exp(naive_cos(si, pairs[j][2]) / t) for j in cand))
        v2s = -torch.log(torch.exp(naive_cos(vi, si) / t) / sum(torch.exp(naive_cos(vi, pairs[j][1]) / t) for j in cand))
        total = total + (s2v + v2s) / 2
    return total / max(len(pairs), 1)


def naive_correlation(tokens):
    b_n, n, _ = tokens.shape
    return torch.stack([torch.stack([torch.stack([naive_cos(tokens[b, i], tokens[b, j]) for j in range(n)]) for i in range(n)])
                        for b in range(b_n)])


def naive_cce(pred, target):
    b_n, n, _ = pred.shape
    terms = [(pred[b, i, j] - target[b, i, j]) ** 2 for b in range(b_n) for i in range(n) for j in range(n) if i != j]
    return sum(terms) / len(terms)


def batch(seed: int, b=None, s=None, q=None, d=None, empty_image=True):
    """Random sentences, mask and observations (float64); shapes drawn from ``seed`` unless given.
    Image 0 has no valid sentence when ``empty_image``."""
    g = torch.Generator().manual_seed(seed)
    draw = lambda lo, hi: int(torch.randint(lo, hi + 1, (), generator=g))  # noqa: E731
    b, s, q, d = b or draw(2, 4), s or draw(1, 4), q or draw(2, 4), d or draw(3, 5)
    sent = torch.randn(b, s, d, generator=g, dtype=F64)
    obs = torch.randn(b, q, d, generator=g, dtype=F64)
    lens = torch.randint(1, s + 1, (b,), generator=g)
    if empty_image:
        lens[0] = 0
    mask = torch.arange(s)[None, :] < lens[:, None]
    return sent, mask, obs


# ---------------------------------------------------------------- matching


@pytest.mark.parametrize("seed", range(6))
def test_max_matches_naive(seed):
    sent, mask, obs = batch(seed)
    assert match_observations(sent, mask, obs, "max").tolist() == naive_match_max(sent, mask, obs)


@pytest.mark.parametrize("seed", range(8))
def test_hungarian_matches_brute_force(seed):
    sent, mask, obs = batch(100 + seed, s=5, q=[2, 3, 4, 5][seed % 4], d=4)  # some reports longer than Q
    got = match_observations(sent, mask, obs, "hungarian")
    assert got.dtype == torch.long and got.tolist() == brute_force_hungarian(sent, mask, obs)
    q = obs.shape[1]
    for b in range(sent.shape[0]):
        picked = got[b][mask[b]].tolist()
        assert max((picked.count(i) for i in picked), default=0) <= math.ceil(len(picked) / q)


def test_hungarian_with_more_sentences_than_observations_spreads_them():
    """Five sentences all closest to observation 0 of two: max piles them on 0, the capacity rule 3 + 2."""
    obs = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=F64)
    sent = torch.tensor([[[1.0, 0.1], [1.0, 0.2], [1.0, 0.3], [1.0, 0.4], [1.0, 0.5]]], dtype=F64)
    mask = torch.ones(1, 5, dtype=torch.bool)
    assert match_observations(sent, mask, obs, "max").tolist() == [[0, 0, 0, 0, 0]]
    assert match_observations(sent, mask, obs, "hungarian").tolist() == [[0, 0, 0, 1, 1]]


def test_max_allows_duplicates_hungarian_does_not():
    obs = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]], dtype=F64)
    sent = torch.tensor([[[1.0, 0.2, 0.0], [1.0, 0.0, 0.3]]], dtype=F64)  # both closest to observation 0
    mask = torch.ones(1, 2, dtype=torch.bool)
    assert match_observations(sent, mask, obs, "max").tolist() == [[0, 0]]
    assert match_observations(sent, mask, obs, "hungarian").tolist() == [[0, 2]]  # 0.981 + 0.287 beats 0.196 + 0.958


@pytest.mark.parametrize("how", ["max", "hungarian"])
def test_padded_sentences_get_index_zero_and_do_not_change_matches(how):
    sent, mask, obs = batch(7, b=3, s=4, q=3)
    got = match_observations(sent, mask, obs, how)
    assert (got[~mask] == 0).all()
    noisy = sent.masked_fill(~mask[..., None], float("nan"))
    assert torch.equal(match_observations(noisy, mask, obs, how), got)


# ---------------------------------------------------------------- PCMA


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("how", ["max", "hungarian"])
@pytest.mark.parametrize("t", [0.1, 0.5])
def test_pcma_matches_naive(seed, how, t):
    sent, mask, obs = batch(seed)
    idx = naive_match_max(sent, mask, obs) if how == "max" else brute_force_hungarian(sent, mask, obs)
    torch.testing.assert_close(pcma_loss(sent, mask, obs, t, how), naive_pcma(sent, mask, obs, idx, t))


@pytest.mark.parametrize("how", ["max", "hungarian"])
def test_pcma_gradient_matches_naive(how):
    sent, mask, obs = batch(11, b=3, s=3, q=2, d=4)
    idx = naive_match_max(sent, mask, obs) if how == "max" else brute_force_hungarian(sent, mask, obs)
    a_s, a_o, b_s, b_o = (x.clone().requires_grad_() for x in (sent, obs, sent, obs))
    pcma_loss(a_s, mask, a_o, 0.2, how).backward()
    naive_pcma(b_s, mask, b_o, idx, 0.2).backward()
    torch.testing.assert_close(a_s.grad, b_s.grad)
    torch.testing.assert_close(a_o.grad, b_o.grad)


def test_pcma_duplicate_matches_under_max_match_naive():
    """Two sentences of image 1 matched to the same observation (checked), values and gradients."""
    sent, mask, obs = batch(5, b=3, s=3, q=3, d=3, empty_image=False)
    sent[1, 1] = sent[1, 0] + 0.05
    idx = naive_match_max(sent, mask, obs)
    assert mask[1, 1] and idx[1][0] == idx[1][1]
    a_s, a_o, b_s, b_o = (x.clone().requires_grad_() for x in (sent, obs, sent, obs))
    got, want = pcma_loss(a_s, mask, a_o, 0.1), naive_pcma(b_s, mask, b_o, idx, 0.1)
    torch.testing.assert_close(got, want)
    got.backward()
    want.backward()
    torch.testing.assert_close(a_s.grad, b_s.grad)
    torch.testing.assert_close(a_o.grad, b_o.grad)


def test_same_finding_twice_is_not_a_negative():
    """Image 0 states one finding twice; both sentences match observation 0. If the two pairs were
    each other's negatives every anchor of image 0 would pay log 2; kept out, the aligned batch costs ~0."""
    sent = torch.tensor([[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]], dtype=F64)
    mask = torch.tensor([[True, True], [True, False]])
    obs = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]], dtype=F64)
    assert match_observations(sent, mask, obs).tolist() == [[0, 0], [0, 0]]
    assert pcma_loss(sent, mask, obs, 0.05).item() < 1e-6


def test_gradient_on_a_sentence_ignores_its_report_mates_observations():
    """The gradient on sentence (0, 0) must not depend on the observation matched by sentence (0, 1)
    of the same image: that pair is no negative of it (in neither direction)."""
    g = torch.Generator().manual_seed(3)
    obs = torch.randn(2, 2, 4, generator=g, dtype=F64)
    sent = torch.stack([obs[0], obs[1, :1].expand(2, 4)]) + 0.1 * torch.randn(2, 2, 4, generator=g, dtype=F64)
    mask = torch.tensor([[True, True], [True, False]])

    def grad_and_loss(o):
        s = sent.clone().requires_grad_()
        loss = pcma_loss(s, mask, o, 0.2)
        loss.backward()
        return s.grad[0, 0], loss.item(), match_observations(sent, mask, o)

    grad, loss, idx = grad_and_loss(obs)
    moved = obs.clone()
    moved[0, 1] += 0.3 * torch.randn(4, generator=g, dtype=F64)
    grad2, loss2, idx2 = grad_and_loss(moved)
    assert idx.tolist() == [[0, 1], [0, 0]] and torch.equal(idx, idx2)
    assert abs(loss2 - loss) > 1e-3  # the move matters to the loss ...
    torch.testing.assert_close(grad2, grad, atol=1e-14, rtol=0)  # ... but not to this sentence


@pytest.mark.parametrize("how", ["max", "hungarian"])
def test_padding_never_changes_the_loss_and_gets_zero_gradient(how):
    sent, mask, obs = batch(9, b=3, s=4, q=3)
    clean = pcma_loss(sent, mask, obs, 0.1, how)
    noisy = sent.masked_fill(~mask[..., None], float("nan")).requires_grad_()
    loss = pcma_loss(noisy, mask, obs, 0.1, how)
    torch.testing.assert_close(loss, clean)
    loss.backward()
    assert torch.equal(noisy.grad[~mask], torch.zeros_like(noisy.grad[~mask]))
    # and one more padded column changes nothing either
    wider = torch.cat([sent, torch.randn(3, 1, sent.shape[2], dtype=F64)], dim=1)
    torch.testing.assert_close(pcma_loss(wider, torch.cat([mask, torch.zeros(3, 1, dtype=torch.bool)], 1), obs, 0.1, how), clean)


def test_no_valid_sentence_gives_zero_with_a_graph():
    sent = torch.randn(3, 2, 4, dtype=F64, requires_grad=True)
    obs = torch.randn(3, 2, 4, dtype=F64, requires_grad=True)
    loss = pcma_loss(sent, torch.zeros(3, 2, dtype=torch.bool), obs)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(sent.grad, torch.zeros_like(sent)) and torch.equal(obs.grad, torch.zeros_like(obs))


def test_single_image_has_no_negatives_and_zero_loss():
    sent, mask, obs = batch(2, b=1, s=3, q=2, empty_image=False)
    assert pcma_loss(sent, mask, obs).item() == 0.0


def test_pcma_bf16_autocast_computes_in_float32():
    sent, mask, obs = batch(4, b=3, s=3, q=3, d=5)
    s16, o16 = sent.float().bfloat16(), obs.float().bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = pcma_loss(s16, mask, o16, 0.1)
    idx = match_observations(s16.double(), mask, o16.double()).tolist()
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), naive_pcma(s16.double(), mask, o16.double(), idx, 0.1), atol=1e-4, rtol=0)


SENT, MASK, OBS = torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), torch.zeros(2, 5, 4)


@pytest.mark.parametrize("fn", [pcma_loss, match_observations])
@pytest.mark.parametrize("args,match", [
    ((torch.zeros(2, 4), MASK, OBS), "sentences"),
    ((torch.zeros(0, 3, 4), MASK, OBS), "sentences"),
    ((SENT, MASK, torch.zeros(3, 5, 4)), "observations"),
    ((SENT, MASK, torch.zeros(2, 5, 3)), "observations"),
    ((SENT, MASK, torch.zeros(2, 0, 4)), "observations"),
    ((SENT, torch.ones(2, 4, dtype=torch.bool), OBS), "sentence_mask"),
    ((SENT, torch.ones(2, 3), OBS), "sentence_mask"),
])
def test_bad_shapes_name_the_argument(fn, args, match):
    with pytest.raises(MedrepError, match=match):
        fn(*args)


def test_bad_match_and_temperature():
    with pytest.raises(MedrepError, match="match_observations: match"):
        match_observations(SENT, MASK, OBS, "min")
    with pytest.raises(MedrepError, match="pcma_loss: match"):
        pcma_loss(SENT, MASK, OBS, match="min")
    for t in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(MedrepError, match="pcma_loss: temperature"):
            pcma_loss(SENT, MASK, OBS, temperature=t)


# ---------------------------------------------------------------- correlation and CCE


@pytest.mark.parametrize("shape", [(1, 2, 3), (2, 4, 5), (3, 3, 2)])
def test_patch_correlation_matches_naive(shape):
    tokens = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)), dtype=F64)
    a, b = tokens.clone().requires_grad_(), tokens.clone().requires_grad_()
    got, want = patch_correlation(a), naive_correlation(b)
    torch.testing.assert_close(got, want)
    w = torch.randn(shape[0], shape[1], shape[1], generator=torch.Generator().manual_seed(1), dtype=F64)
    (got * w).sum().backward()
    (want * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("shape", [(1, 2), (2, 4), (3, 5)])
def test_cce_matches_naive_and_stops_the_target_gradient(shape):
    g = torch.Generator().manual_seed(shape[1])
    pred = patch_correlation(torch.randn(shape[0], shape[1], 3, generator=g, dtype=F64)).detach()
    target = torch.randn(shape[0], shape[1], shape[1], generator=g, dtype=F64)
    a, b = pred.clone().requires_grad_(), pred.clone().requires_grad_()
    t = target.clone().requires_grad_()
    got, want = cce_loss(a, t), naive_cce(b, target)
    torch.testing.assert_close(got, want)
    got.backward()
    want.backward()
    torch.testing.assert_close(a.grad, b.grad)
    assert t.grad is None  # stop-gradient on the target


def test_cce_ignores_the_diagonal():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 4, 4, generator=g), torch.randn(2, 4, 4, generator=g)
    moved = pred + 5.0 * torch.eye(4)
    assert cce_loss(moved, target).item() == cce_loss(pred, target).item()
    assert cce_loss(target, target).item() == 0.0


def test_cce_bf16_autocast_computes_in_float32():
    pred, target = torch.rand(2, 3, 3).bfloat16(), torch.rand(2, 3, 3).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert cce_loss(pred, target).dtype == torch.float32
        assert patch_correlation(torch.randn(2, 3, 4).bfloat16()).dtype == torch.float32


@pytest.mark.parametrize("pred,target,match", [
    (torch.zeros(4, 4), torch.zeros(4, 4), "predicted"),
    (torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), "predicted"),
    (torch.zeros(2, 1, 1), torch.zeros(2, 1, 1), "predicted"),
    (torch.zeros(0, 3, 3), torch.zeros(0, 3, 3), "predicted"),
    (torch.zeros(2, 3, 3), torch.zeros(1, 3, 3), "target"),
])
def test_cce_bad_shapes(pred, target, match):
    with pytest.raises(MedrepError, match=f"cce_loss: {match}"):
        cce_loss(pred, target)


def test_patch_correlation_bad_shape():
    with pytest.raises(MedrepError, match="patch_correlation: tokens"):
        patch_correlation(torch.zeros(3, 4))


# ---------------------------------------------------------------- 2-process gloo / DDP

IN_DIM, OUT_DIM, N_OBS = 5, 4, 3
# the global batch: rank 0 holds 2 images padded to 2 sentences (1 valid sentence in all), rank 1
# 3 images padded to 3 (6 valid): images, padded lengths and valid sentences all differ per rank
RANK_LENS = ((1, 0), (3, 2, 1))
RANK_S = (2, 3)
MATCHES = ("max", "hungarian")


class _Towers(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.txt = torch.nn.Linear(IN_DIM, OUT_DIM).double()
        self.img = torch.nn.Linear(IN_DIM, OUT_DIM).double()

    def forward(self, x_sent, mask, x_obs, how, gather_):
        return pcma_loss(self.txt(x_sent), mask, self.img(x_obs), 0.2, how, gather=gather_)


def _rank_batch(r: int):
    g = torch.Generator().manual_seed(2024 + r)
    lens, s = torch.tensor(RANK_LENS[r]), RANK_S[r]
    x_sent = torch.randn(len(lens), s, IN_DIM, generator=g, dtype=F64)
    x_obs = torch.randn(len(lens), N_OBS, IN_DIM, generator=g, dtype=F64)
    return x_sent, torch.arange(s)[None, :] < lens[:, None], x_obs


def _global_batch():
    """Both ranks' images in one batch, padded to the longest report."""
    parts = [_rank_batch(r) for r in range(WORLD)]
    s = max(RANK_S)
    x_sent = torch.cat([torch.nn.functional.pad(p[0], (0, 0, 0, s - p[0].shape[1])) for p in parts])
    mask = torch.cat([torch.nn.functional.pad(p[1], (0, s - p[1].shape[1]), value=False) for p in parts])
    return x_sent, mask, torch.cat([p[2] for p in parts])


def _loss_and_grads(model, batch_, how, gather_) -> dict:
    loss = model(*batch_[:2], batch_[2], how, gather_)
    loss.backward()
    return {"loss": loss.item(), "grads": {k.removeprefix("module."): p.grad.tolist() for k, p in model.named_parameters()}}


def _worker(r: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    return {f"{how}/{g}": _loss_and_grads(DDP(_Towers()), _rank_batch(r), how, g) for how in MATCHES for g in (True, False)}


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> list[dict]:
    return run_workers(__file__, tmp_path_factory.mktemp("gloo_place"))


@pytest.mark.slow
@pytest.mark.parametrize("how", MATCHES)
def test_gloo_gathered_loss_and_grads_equal_single_process(ddp_results, how):
    ref = _loss_and_grads(_Towers(), _global_batch(), how, True)  # no process group: the whole batch
    local = [res[f"{how}/True"] for res in ddp_results]
    assert sum(r["loss"] for r in local) / WORLD == pytest.approx(ref["loss"], abs=1e-10)
    for res in local:
        assert res["grads"].keys() == ref["grads"].keys()
        for k, want in ref["grads"].items():
            torch.testing.assert_close(torch.tensor(res["grads"][k], dtype=F64), torch.tensor(want, dtype=F64), atol=1e-9, rtol=0)
    # the check can fail: per-rank candidates give another loss and gradient
    alone = [res[f"{how}/False"] for res in ddp_results]
    assert abs(sum(r["loss"] for r in alone) / WORLD - ref["loss"]) > 1e-3
    assert not torch.allclose(torch.tensor(alone[0]["grads"]["txt.weight"], dtype=F64),
                              torch.tensor(ref["grads"]["txt.weight"], dtype=F64), atol=1e-6, rtol=0)


if __name__ == "__main__":
    worker_main(_worker)
