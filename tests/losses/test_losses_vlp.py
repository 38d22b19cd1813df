"""Vision-language losses (CLIP/ConVIRT, GLoRIA local, MGCA token and prototype): values and
gradients against naive loops, padding invariance, Sinkhorn marginals, and a 2-process gloo DDP
check. The distributed workers are this file run as a script (see ``helpers.run_workers``).
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import WORLD, naive_cos, naive_dot, naive_norm, run_workers, worker_main

from medrep.losses import (
    clip_loss,
    gloria_local_loss,
    info_nce,
    mgca_prototype_loss,
    mgca_token_loss,
    mgca_token_weights,
    sinkhorn_knopp,
)

F64 = torch.float64

# ---------------------------------------------------------------- naive references (loops)





def _softmax(xs: list[torch.Tensor]) -> list[torch.Tensor]:
    denom = sum(torch.exp(x) for x in xs)
    return [torch.exp(x) / denom for x in xs]


def _ce(logits: list[torch.Tensor], target: int) -> torch.Tensor:
    return -torch.log(_softmax(logits)[target])


def naive_clip(img: torch.Tensor, txt: torch.Tensor, scale: float, lam: float = 0.5) -> torch.Tensor:
    n = img.shape[0]
    i2t = sum(_ce([scale * naive_cos(img[i], txt[j]) for j in range(n)], i) for i in range(n)) / n
    t2i = sum(_ce([scale * naive_cos(txt[i], img[j]) for j in range(n)], i) for i in range(n)) / n
    return lam * i2t + (1 - lam) * t2i


def naive_gloria(words: list[torch.Tensor], regions: torch.Tensor, t1: float, t2: float, t3: float,
                 agg: str = "sum", paper: bool = False) -> torch.Tensor:
    """``words[i]`` holds report i's real words only ``(W_i, D)`` (the official cap_lens slicing)."""
    n, r_len = len(words), regions.shape[1]
    z = [[None] * n for _ in range(n)]  # z[j][i]: image j, report i
    for i in range(n):
        w_i = words[i]
        for j in range(n):
            # softmax over words for each region, then temp1 * that, softmax over regions per word
            a1 = [[None] * r_len for _ in range(w_i.shape[0])]
            for r in range(r_len):
                col = _softmax([naive_dot(regions[j, r], w_i[w]) for w in range(w_i.shape[0])])
                for w in range(w_i.shape[0]):
                    a1[w][r] = col[w]
            terms = []
            for w in range(w_i.shape[0]):
                a2 = _softmax([t1 * a1[w][r] for r in range(r_len)])
                ctx = sum(a2[r] * regions[j, r] for r in range(r_len))
                terms.append(torch.exp(t2 * naive_cos(w_i[w], ctx)))
            s = sum(terms)
            if agg == "mean":
                s = s / len(terms)
            z[j][i] = torch.log(s) / (t2 if paper else 1.0)
    l0 = sum(_ce([t3 * z[j][i] for i in range(n)], j) for j in range(n)) / n  # images -> reports
    l1 = sum(_ce([t3 * z[j][i] for j in range(n)], i) for i in range(n)) / n  # reports -> images
    return (l0 + l1) / 2


def _naive_token_side(queries: torch.Tensor, keys: torch.Tensor, weights: list[float] | torch.Tensor, tau: float) -> torch.Tensor:
    """One pair, one side of MGCA's token loss: queries attend over keys, CE both ways, weighted."""
    qs = [q / naive_norm(q) for q in queries]
    ks = [k / naive_norm(k) for k in keys]
    ctx = []
    for q in qs:
        att = _softmax([naive_dot(q, k) / tau for k in ks])
        c = sum(a * k for a, k in zip(att, ks))
        ctx.append(c / naive_norm(c))
    t = len(qs)
    total = queries.new_zeros(())
    for a in range(t):
        total = total + weights[a] * _ce([naive_dot(qs[a], ctx[c]) / tau for c in range(t)], a) / 2  # word -> contexts
        total = total + weights[a] * _ce([naive_dot(qs[q], ctx[a]) / tau for q in range(t)], a) / 2  # context -> words
    return total


def naive_mgca_token(patches: torch.Tensor, words: list[torch.Tensor], word_w: list[list[float]] | None,
                     patch_w: list[list[float]] | None, tau: float, bidirectional: bool = True) -> torch.Tensor:
    b = patches.shape[0]
    total = patches.new_zeros(())
    for i in range(b):
        ww = word_w[i] if word_w is not None else [1.0] * words[i].shape[0]
        ww = [x / sum(ww) for x in ww]
        total = total + _naive_token_side(words[i], patches[i], ww, tau)
        if bidirectional:
            pw = patch_w[i] if patch_w is not None else [1.0] * patches.shape[1]
            pw = [x / sum(pw) for x in pw]
            total = total + _naive_token_side(patches[i], words[i], pw, tau)
    return total / b


def naive_sinkhorn(scores: torch.Tensor, eps: float, iters: int) -> torch.Tensor:
    """MGCA's ``sinkhorn`` (Q = exp(s / eps).T, (K, B)) with loops; returns (B, K)."""
    b, k = scores.shape
    q = [[math.exp(scores[j, p].item() / eps) for j in range(b)] for p in range(k)]
    total = sum(sum(row) for row in q)
    q = [[x / total for x in row] for row in q]
    for _ in range(iters):
        for p in range(k):
            u = sum(q[p])
            q[p] = [x / u / k for x in q[p]]
        for j in range(b):
            c = sum(q[p][j] for p in range(k))
            for p in range(k):
                q[p][j] = q[p][j] / c / b
    out = [[q[p][j] / sum(q[pp][j] for pp in range(k)) for p in range(k)] for j in range(b)]
    return torch.tensor(out, dtype=F64)


def naive_proto(img: torch.Tensor, txt: torch.Tensor, protos: torch.Tensor, eps: float, iters: int, t: float) -> torch.Tensor:
    b, k = img.shape[0], protos.shape[0]
    s_img = torch.stack([torch.stack([naive_cos(img[j], protos[p]) for p in range(k)]) for j in range(b)])
    s_txt = torch.stack([torch.stack([naive_cos(txt[j], protos[p]) for p in range(k)]) for j in range(b)])
    c_img = naive_sinkhorn(s_img.detach(), eps, iters)
    c_txt = naive_sinkhorn(s_txt.detach(), eps, iters)
    total = img.new_zeros(())
    for j in range(b):
        p_txt = _softmax([s_txt[j, p] / t for p in range(k)])
        p_img = _softmax([s_img[j, p] / t for p in range(k)])
        for p in range(k):
            total = total - c_img[j, p] * torch.log(p_txt[p]) / 2 - c_txt[j, p] * torch.log(p_img[p]) / 2
    return total / b


# ---------------------------------------------------------------- helpers


def _padded(words: list[torch.Tensor], w_max: int, fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    d = words[0].shape[1]
    out = torch.full((len(words), w_max, d), fill, dtype=words[0].dtype)
    mask = torch.zeros(len(words), w_max, dtype=torch.bool)
    for i, w in enumerate(words):
        out[i, : w.shape[0]] = w
        mask[i, : w.shape[0]] = True
    return out, mask


def _rand(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64) * scale


def _grads_close(got, want, atol=1e-9) -> None:
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=atol, rtol=1e-7)


# ---------------------------------------------------------------- clip_loss


@pytest.mark.parametrize("n,d", [(1, 5), (3, 5), (4, 8)])
@pytest.mark.parametrize("logit_scale", [0.0, math.log(1 / 0.07), math.log(10)])
@pytest.mark.parametrize("lam", [0.5, 0.75, 1.0])
def test_clip_matches_naive(n: int, d: int, logit_scale: float, lam: float) -> None:
    img, txt = _rand(n, d, seed=n + d) * 2, _rand(n, d, seed=n * d + 7)
    got = clip_loss(img, txt, logit_scale, i2t_weight=lam)
    assert got.ndim == 0 and got.dtype == F64
    assert got.item() == pytest.approx(naive_clip(img, txt, math.exp(logit_scale), lam).item(), rel=1e-10, abs=1e-12)
    assert clip_loss(img, txt, torch.tensor(logit_scale, dtype=F64), i2t_weight=lam).item() == pytest.approx(got.item(), rel=1e-12)


def test_clip_equals_info_nce_formulation() -> None:
    img, txt = _rand(4, 6, seed=1), _rand(4, 6, seed=2)
    t = 0.07
    for lam in (0.5, 0.75):
        want = lam * info_nce(img, txt, t) + (1 - lam) * info_nce(txt, img, t)
        torch.testing.assert_close(clip_loss(img, txt, math.log(1 / t), i2t_weight=lam), want, rtol=1e-12, atol=1e-12)


def test_clip_gradients_match_naive() -> None:
    img = _rand(4, 5, seed=3).requires_grad_()
    txt = _rand(4, 5, seed=4).requires_grad_()
    ls = torch.tensor(1.3, dtype=F64, requires_grad=True)
    got = torch.autograd.grad(clip_loss(img, txt, ls, i2t_weight=0.75), (img, txt, ls))
    want = torch.autograd.grad(naive_clip(img, txt, torch.exp(ls), 0.75), (img, txt, ls))
    _grads_close(got, want)


def test_clip_logit_scale_clamped_at_100() -> None:
    img, txt = _rand(3, 5, seed=5), _rand(3, 5, seed=6)
    at_100 = clip_loss(img, txt, math.log(100))
    for big in (math.log(1000), 50.0, 1e6):
        assert clip_loss(img, txt, big).item() == pytest.approx(at_100.item(), rel=1e-12)
    ls = torch.tensor(math.log(1000), dtype=F64, requires_grad=True)
    clip_loss(img, txt, ls).backward()
    assert ls.grad.item() == 0.0  # clamped: CLIP's cap, no further growth from this loss
    ls = torch.tensor(1.0, dtype=F64, requires_grad=True)
    clip_loss(img, txt, ls).backward()
    assert ls.grad.item() != 0.0


def test_clip_bf16_and_autocast_compute_in_float32() -> None:
    img, txt = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(7))
    got = clip_loss(img.bfloat16(), txt.bfloat16(), 2.0)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, clip_loss(img.bfloat16().float(), txt.bfloat16().float(), 2.0))
    lin = torch.nn.Linear(8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = clip_loss(lin(img), lin(txt), torch.tensor(2.0))
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(lin.weight.grad).all()


def test_clip_validation() -> None:
    with pytest.raises(ValueError, match="same shape"):
        clip_loss(torch.randn(3, 4), torch.randn(2, 4), 1.0)
    with pytest.raises(ValueError, match="i2t_weight"):
        clip_loss(torch.randn(3, 4), torch.randn(3, 4), 1.0, i2t_weight=1.5)
    with pytest.raises(ValueError, match="logit_scale"):
        clip_loss(torch.randn(3, 4), torch.randn(3, 4), torch.ones(2))
    with pytest.raises(ValueError, match="logit_scale"):
        clip_loss(torch.randn(3, 4), torch.randn(3, 4), math.nan)


# ---------------------------------------------------------------- GLoRIA local


def _gloria_batch(seed: int, lens=(3, 1, 4), r: int = 3, d: int = 5) -> tuple[list[torch.Tensor], torch.Tensor]:
    words = [_rand(w, d, seed=seed + i, scale=0.7) for i, w in enumerate(lens)]
    return words, _rand(len(lens), r, d, seed=seed + 100, scale=0.7)


@pytest.mark.parametrize("temps", [(4.0, 5.0, 10.0), (1.0, 2.0, 3.0)])
@pytest.mark.parametrize("agg,paper", [("sum", False), ("mean", False), ("sum", True)])
def test_gloria_matches_naive(temps, agg: str, paper: bool) -> None:
    words, regions = _gloria_batch(10)
    padded, mask = _padded(words, 5)
    got = gloria_local_loss(padded, mask, regions, *temps, agg=agg, paper_aggregation=paper)
    want = naive_gloria(words, regions, *temps, agg=agg, paper=paper)
    assert got.item() == pytest.approx(want.item(), rel=1e-10, abs=1e-12)


def test_gloria_gradients_match_naive() -> None:
    words, regions = _gloria_batch(20, lens=(2, 3, 1, 2), r=3, d=4)
    words = [w.requires_grad_() for w in words]
    regions.requires_grad_()
    padded, mask = _padded([w.detach() for w in words], 3)
    padded.requires_grad_()
    got = torch.autograd.grad(gloria_local_loss(padded, mask, regions), (padded, regions))
    want = torch.autograd.grad(naive_gloria(words, regions, 4.0, 5.0, 10.0), (*words, regions))
    got_words = [got[0][i, : w.shape[0]] for i, w in enumerate(words)]
    _grads_close((*got_words, got[1]), want)
    assert (got[0][~mask] == 0).all()  # padding gets no gradient


def test_gloria_padding_does_not_change_loss() -> None:
    words, regions = _gloria_batch(30)
    a, mask_a = _padded(words, 4)
    b, mask_b = _padded(words, 7, fill=1e3)  # longer and with garbage in the padding
    torch.testing.assert_close(gloria_local_loss(a, mask_a, regions), gloria_local_loss(b, mask_b, regions), rtol=1e-12, atol=1e-12)


def test_gloria_float32_finite_and_validation() -> None:
    words, mask = _padded([w.float() for w in _gloria_batch(40)[0]], 4)
    regions = torch.randn(3, 6, 5)
    assert torch.isfinite(gloria_local_loss(words, mask, regions))
    with pytest.raises(ValueError, match="word_mask"):
        gloria_local_loss(words, mask.float(), regions)
    with pytest.raises(ValueError, match="regions"):
        gloria_local_loss(words, mask, torch.randn(2, 6, 5))
    with pytest.raises(ValueError, match="agg"):
        gloria_local_loss(words, mask, regions, agg="max")
    with pytest.raises(ValueError, match="temp_loss"):
        gloria_local_loss(words, mask, regions, temp_loss=0.0)


# ---------------------------------------------------------------- MGCA token loss


def _token_batch(seed: int, lens=(2, 4, 3), p: int = 3, d: int = 5):
    words = [_rand(w, d, seed=seed + i) for i, w in enumerate(lens)]
    patches = _rand(len(lens), p, d, seed=seed + 50)
    g = torch.Generator().manual_seed(seed + 99)
    word_w = [(torch.rand(w, generator=g, dtype=F64) + 0.1).tolist() for w in lens]
    patch_w = [(torch.rand(p, generator=g, dtype=F64) + 0.1).tolist() for _ in lens]
    return words, patches, word_w, patch_w


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_mgca_token_matches_naive(weighted: bool, bidirectional: bool, tau: float) -> None:
    words, patches, word_w, patch_w = _token_batch(60)
    padded, mask = _padded(words, 5)
    ww = _padded([torch.tensor(w, dtype=F64)[:, None] for w in word_w], 5)[0][..., 0] if weighted else None
    pw = torch.tensor(patch_w, dtype=F64) if weighted else None
    got = mgca_token_loss(patches, padded, mask, ww, pw, temperature=tau, bidirectional=bidirectional)
    want = naive_mgca_token(patches, words, word_w if weighted else None, patch_w if weighted else None, tau, bidirectional)
    assert got.item() == pytest.approx(want.item(), rel=1e-10, abs=1e-12)


def test_mgca_token_gradients_match_naive() -> None:
    words, patches, word_w, patch_w = _token_batch(70, lens=(3, 1, 2), p=4, d=4)
    words = [w.requires_grad_() for w in words]
    patches.requires_grad_()
    padded, mask = _padded([w.detach() for w in words], 4)
    padded.requires_grad_()
    ww = _padded([torch.tensor(w, dtype=F64)[:, None] for w in word_w], 4)[0][..., 0] * 7.0  # scale is normalised away
    pw = torch.tensor(patch_w, dtype=F64).requires_grad_()
    loss = mgca_token_loss(patches, padded, mask, ww, pw)
    got = torch.autograd.grad(loss, (padded, patches, pw), allow_unused=True)
    want = torch.autograd.grad(naive_mgca_token(patches, words, word_w, patch_w, 0.1), (*words, patches))
    _grads_close(([got[0][i, : w.shape[0]] for i, w in enumerate(words)] + [got[1]]), want)
    assert (got[0][~mask] == 0).all()
    assert got[2] is None  # weights are constants (MGCA computes them under no_grad)


def test_mgca_token_padding_does_not_change_loss() -> None:
    words, patches, word_w, _ = _token_batch(80)
    a, mask_a = _padded(words, 4)
    b, mask_b = _padded(words, 6, fill=-5.0)
    wa = _padded([torch.tensor(w, dtype=F64)[:, None] for w in word_w], 4)[0][..., 0]
    wb = _padded([torch.tensor(w, dtype=F64)[:, None] for w in word_w], 6, fill=3.0)[0][..., 0]  # weights on padding too
    torch.testing.assert_close(mgca_token_loss(patches, a, mask_a, wa), mgca_token_loss(patches, b, mask_b, wb), rtol=1e-12, atol=1e-12)


def test_mgca_token_weights_clip_and_normalise() -> None:
    g = torch.Generator().manual_seed(90)
    att = torch.rand(3, 12, generator=g, dtype=F64)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[1, 7:] = False
    got = mgca_token_weights(att, mask)
    for i in range(3):
        valid = att[i][mask[i]]
        lo, hi = torch.quantile(valid, 0.1), torch.quantile(valid, 0.9)
        want = valid.clip(lo, hi)
        torch.testing.assert_close(got[i][mask[i]], want / want.sum())
        assert (got[i][~mask[i]] == 0).all()
    torch.testing.assert_close(mgca_token_weights(att), mgca_token_weights(att, torch.ones_like(mask)))


def test_mgca_token_validation() -> None:
    p, w, m = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.ones(2, 5, dtype=torch.bool)
    assert torch.isfinite(mgca_token_loss(p, w, m))
    with pytest.raises(ValueError, match="words"):
        mgca_token_loss(p, torch.randn(2, 5, 3), m)
    with pytest.raises(ValueError, match="word_weights"):
        mgca_token_loss(p, w, m, word_weights=torch.ones(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        mgca_token_loss(p, w, m, temperature=-1.0)


# ---------------------------------------------------------------- Sinkhorn and prototypes


@pytest.mark.parametrize("iters", [0, 1, 3])
@pytest.mark.parametrize("eps", [0.05, 0.5])
def test_sinkhorn_matches_mgca_loops(iters: int, eps: float) -> None:
    scores = torch.nn.functional.normalize(_rand(6, 4, seed=iters), dim=1) * 0.9
    torch.testing.assert_close(sinkhorn_knopp(scores, eps, iters), naive_sinkhorn(scores, eps, iters), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("b,k", [(8, 4), (3, 6), (12, 3)])
def test_sinkhorn_marginals_uniform(b: int, k: int) -> None:
    scores = torch.nn.functional.normalize(_rand(b, k, seed=b * k), dim=1)
    codes = sinkhorn_knopp(scores, epsilon=0.2, iters=200)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(b, dtype=F64))
    torch.testing.assert_close(codes.sum(dim=0), torch.full((k,), b / k, dtype=F64), atol=1e-6, rtol=0)
    # with MGCA's 3 iterations, closer to uniform than the plain softmax (0 iterations)
    err = [(sinkhorn_knopp(scores, 0.2, it).sum(0) - b / k).abs().max() for it in (0, 3)]
    assert err[1] < err[0]


def test_sinkhorn_no_grad_and_stable_for_tiny_epsilon() -> None:
    scores = torch.randn(5, 7, requires_grad=True)
    codes = sinkhorn_knopp(scores, 1e-4, 3)
    assert not codes.requires_grad and torch.isfinite(codes).all()
    torch.testing.assert_close(sinkhorn_knopp(scores + 3.0, 0.05), sinkhorn_knopp(scores, 0.05))
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn_knopp(scores, 0.0)
    with pytest.raises(ValueError, match="iters"):
        sinkhorn_knopp(scores, 0.05, -1)


@pytest.mark.parametrize("iters,t", [(3, 0.2), (0, 0.1), (5, 1.0)])
def test_prototype_loss_matches_naive(iters: int, t: float) -> None:
    img, txt, protos = _rand(5, 6, seed=1), _rand(5, 6, seed=2), _rand(4, 6, seed=3) * 3
    got = mgca_prototype_loss(img, txt, protos, epsilon=0.05, sinkhorn_iters=iters, temperature=t)
    assert got.item() == pytest.approx(naive_proto(img, txt, protos, 0.05, iters, t).item(), rel=1e-9)


def test_prototype_loss_gradients_match_naive() -> None:
    img = _rand(4, 5, seed=11).requires_grad_()
    txt = _rand(4, 5, seed=12).requires_grad_()
    protos = _rand(3, 5, seed=13).requires_grad_()
    got = torch.autograd.grad(mgca_prototype_loss(img, txt, protos), (img, txt, protos))
    want = torch.autograd.grad(naive_proto(img, txt, protos, 0.05, 3, 0.2), (img, txt, protos))
    _grads_close(got, want)


def test_prototype_loss_validation_and_bf16() -> None:
    img, txt = torch.randn(2, 4, 6)
    with pytest.raises(ValueError, match="prototypes"):
        mgca_prototype_loss(img, txt, torch.randn(5, 4))
    with pytest.raises(ValueError, match="temperature"):
        mgca_prototype_loss(img, txt, torch.randn(5, 6), temperature=0.0)
    protos = torch.randn(5, 6)
    got = mgca_prototype_loss(img.bfloat16(), txt.bfloat16(), protos.bfloat16())
    assert got.dtype == torch.float32 and torch.isfinite(got)


# ---------------------------------------------------------------- 2-process gloo / DDP

LOCAL_N = 3
IN_DIM, OUT_DIM = 6, 4
N_REGIONS, N_PROTOS = 3, 5
# word counts of the global batch; rank 0's reports are at most 2 long, rank 1's up to 4, so
# rank 0 pads to 2 locally and the loss must pad across ranks
LENS = (2, 1, 2, 4, 3, 1)
LOSSES = ("clip", "gloria", "proto")


class _Towers(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.img = torch.nn.Linear(IN_DIM, OUT_DIM).double()
        self.txt = torch.nn.Linear(IN_DIM, OUT_DIM).double()
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07), dtype=F64))
        self.protos = torch.nn.Parameter(torch.randn(N_PROTOS, OUT_DIM, dtype=F64))

    def forward(self, name: str, x_img, x_txt, mask, gather_: bool) -> torch.Tensor:
        unused = 0.0 * (self.logit_scale + self.protos.sum())  # every parameter gets a gradient, as DDP needs
        if name == "clip":
            return clip_loss(self.img(x_img), self.txt(x_txt), self.logit_scale, gather=gather_, i2t_weight=0.75) + unused
        if name == "gloria":
            return gloria_local_loss(self.txt(x_txt), mask, self.img(x_img), gather=gather_) + unused
        return mgca_prototype_loss(self.img(x_img), self.txt(x_txt), self.protos, epsilon=0.3, gather=gather_) + unused


def _global_batch(name: str):
    g = torch.Generator().manual_seed(4321)
    n = WORLD * LOCAL_N
    if name == "gloria":
        words = torch.randn(n, max(LENS), IN_DIM, generator=g, dtype=F64)
        mask = torch.arange(max(LENS))[None, :] < torch.tensor(LENS)[:, None]
        return torch.randn(n, N_REGIONS, IN_DIM, generator=g, dtype=F64), words, mask
    x_img = torch.randn(n, IN_DIM, generator=g, dtype=F64)
    return x_img, x_img @ torch.randn(IN_DIM, IN_DIM, generator=g, dtype=F64) * 0.5, None


def _loss_and_grads(model: torch.nn.Module, name: str, sl: slice, gather_: bool) -> dict:
    x_img, x_txt, mask = _global_batch(name)
    if mask is not None:  # keep only this slice's own padding length
        w = int(mask[sl].sum(1).max())
        x_txt, mask = x_txt[sl, :w], mask[sl, :w]
    else:
        x_txt = x_txt[sl]
    loss = model(name, x_img[sl], x_txt, mask, gather_)
    loss.backward()
    grads = {k.removeprefix("module."): p.grad.tolist() for k, p in model.named_parameters() if p.grad is not None}
    return {"loss": loss.item(), "grads": grads}


def _worker(r: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    out: dict = {}
    sl = slice(r * LOCAL_N, (r + 1) * LOCAL_N)
    for name in LOSSES:
        for gather_ in (True, False):
            out[f"{name}/{gather_}"] = _loss_and_grads(DDP(_Towers()), name, sl, gather_)
    return out


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> list[dict]:
    return run_workers(__file__, tmp_path_factory.mktemp("gloo_vlp"))


def _single_process(name: str) -> dict:
    return _loss_and_grads(_Towers(), name, slice(0, WORLD * LOCAL_N), gather_=True)  # no process group


@pytest.mark.slow
@pytest.mark.parametrize("name", LOSSES)
def test_gloo_gathered_loss_and_grads_equal_single_process(ddp_results: list[dict], name: str) -> None:
    ref = _single_process(name)
    local = [res[f"{name}/True"] for res in ddp_results]
    assert sum(r["loss"] for r in local) / WORLD == pytest.approx(ref["loss"], abs=1e-10)
    for res in local:
        assert res["grads"].keys() == ref["grads"].keys()
        for k, want in ref["grads"].items():
            torch.testing.assert_close(torch.tensor(res["grads"][k], dtype=F64), torch.tensor(want, dtype=F64), atol=1e-9, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", LOSSES)
def test_gloo_without_gather_differs(ddp_results: list[dict], name: str) -> None:
    """Proves the check above can fail: per-rank negatives (or Sinkhorn sums) give another loss and gradient."""
    ref = _single_process(name)
    local = [res[f"{name}/False"] for res in ddp_results]
    assert abs(sum(r["loss"] for r in local) / WORLD - ref["loss"]) > 1e-4
    key = "txt.weight"
    got, want = torch.tensor(local[0]["grads"][key], dtype=F64), torch.tensor(ref["grads"][key], dtype=F64)
    assert not torch.allclose(got, want, atol=1e-6, rtol=0)


if __name__ == "__main__":
    worker_main(_worker)
