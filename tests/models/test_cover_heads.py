"""COVER's heads: the vector embedding unit against explicit loops over positions and offsets, shift
recovery, memory independent of the neighbourhood, head/pyramid shapes, and the pyramid's
composition against a naive bilinear reference."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from medrep.errors import MedrepError, RecipeError
from medrep.models.cover import MultiVectorHead, VectorPyramid, upsample_flow, vector_embedding
from medrep.transforms.displacement import warp

# ---------------------------------------------------------------- naive references


def naive_vector_embedding(q, k, radius, tau=None):
    """Softmax over offsets of q(p) . k(p + o) / tau (outside: -1000), expected offset; all loops."""
    b_size, c, *spatial = q.shape
    n = len(spatial)
    tau = math.sqrt(c) if tau is None else tau
    offsets = list(itertools.product(range(-radius, radius + 1), repeat=n))
    vectors = torch.tensor(offsets, dtype=q.dtype)
    out = torch.zeros(b_size, n, *spatial, dtype=q.dtype)
    for b in range(b_size):
        for p in itertools.product(*(range(s) for s in spatial)):
            logits = []
            for o in offsets:
                t = tuple(pi + oi for pi, oi in zip(p, o))
                if all(0 <= ti < si for ti, si in zip(t, spatial)):
                    logits.append((q[(b, slice(None), *p)] * k[(b, slice(None), *t)]).sum() / tau)
                else:
                    logits.append(q.new_tensor(-1000.0))
            out[(b, slice(None), *p)] = torch.softmax(torch.stack(logits), 0) @ vectors
    return out


def naive_sample(field, point):
    """Bilinear value of ``field`` (C, H, W) at ``point`` (y, x), zero outside (grid_sample zeros)."""
    y, x = point
    y0, x0 = math.floor(y), math.floor(x)
    value = torch.zeros(field.shape[0], dtype=field.dtype)
    for dy, dx in itertools.product((0, 1), repeat=2):
        yy, xx = y0 + dy, x0 + dx
        weight = (1 - abs(y - yy)) * (1 - abs(x - xx))
        if 0 <= yy < field.shape[1] and 0 <= xx < field.shape[2] and weight > 0:
            value = value + weight * field[:, yy, xx]
    return value


def naive_upsample(flow, size):
    """Corner-aligned bilinear resize of a (2, h, w) field to ``size``, vectors scaled per axis."""
    h, w = flow.shape[1:]
    ratio = [(size[0] - 1) / max(h - 1, 1), (size[1] - 1) / max(w - 1, 1)]
    out = torch.zeros(2, *size, dtype=flow.dtype)
    for i, j in itertools.product(range(size[0]), range(size[1])):
        src = (i * (h - 1) / max(size[0] - 1, 1), j * (w - 1) / max(size[1] - 1, 1))
        v = naive_sample(flow, src)
        out[:, i, j] = torch.stack([v[0] * ratio[0], v[1] * ratio[1]])
    return out


def naive_warp(x, flow):
    out = torch.zeros_like(x)
    for i, j in itertools.product(range(x.shape[1]), range(x.shape[2])):
        out[:, i, j] = naive_sample(x, (i + float(flow[0, i, j]), j + float(flow[1, i, j])))
    return out


# ---------------------------------------------------------------- vector embedding unit

CASES = [  # (shape, radius, tau): borders everywhere at these sizes, and radii wider than the image
    ((2, 3, 4, 5), 1, None),
    ((1, 4, 5, 4), 2, None),
    ((1, 2, 3, 4), 3, 0.5),
    ((1, 3, 3, 4, 3), 1, None),
    ((2, 2, 2, 3, 2), 2, 2.0),
]


@pytest.mark.parametrize("shape,radius,tau", CASES)
def test_vector_embedding_matches_naive(shape, radius, tau):
    g = torch.Generator().manual_seed(sum(shape) + radius)
    q = (torch.randn(shape, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    k = (torch.randn(shape, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    weights = torch.randn(shape[0], len(shape) - 2, *shape[2:], generator=g, dtype=torch.float64)
    got = vector_embedding(q, k, radius, tau)
    want = naive_vector_embedding(q, k, radius, tau)
    assert got.shape == (shape[0], len(shape) - 2, *shape[2:]) and got.dtype == torch.float64
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)
    g_got = torch.autograd.grad((got * weights).sum(), (q, k))
    g_want = torch.autograd.grad((want * weights).sum(), (q, k))
    for a, b in zip(g_got, g_want):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("shape,radius", [((1, 2, 4, 3), 2), ((1, 2, 2, 3, 2), 1)])
def test_vector_embedding_gradcheck(shape, radius):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: vector_embedding(a, b, radius), (q, k))


@pytest.mark.parametrize("shift", [(1, -2), (1, -2, 1)])
def test_vector_embedding_recovers_translation(shift):
    """k(p + shift) = q(p): with sharp logits the expected offset is the shift in the interior, and
    warping k by it gives back q (same convention as :mod:`medrep.transforms.displacement`)."""
    n, radius = len(shift), 3
    spatial = (10, 11) if n == 2 else (8, 9, 8)
    g = torch.Generator().manual_seed(0)
    q = nn.functional.normalize(torch.randn(2, 16, *spatial, generator=g), dim=1) * 20
    k = torch.roll(q, shifts=shift, dims=tuple(range(2, 2 + n)))
    flow = vector_embedding(q, k, radius)
    interior = (slice(None), slice(None)) + (slice(radius, -radius),) * n
    want = torch.tensor(shift, dtype=flow.dtype).view(1, n, *([1] * n)).expand_as(flow[interior])
    torch.testing.assert_close(flow[interior], want, atol=1e-4, rtol=0)
    torch.testing.assert_close(warp(k, flow)[interior], q[interior], atol=1e-3, rtol=0)  # the shared flow convention


def test_saved_memory_does_not_grow_with_neighbourhood():
    """The backward recomputes logits: what autograd keeps is the same for 9 and 343 offsets."""

    def saved_bytes(radius, n):
        total = []
        q = torch.randn(1, 4, *([6] * n), requires_grad=True)
        k = torch.randn(1, 4, *([6] * n), requires_grad=True)
        pack = lambda t: total.append(t.numel() * t.element_size()) or t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            vector_embedding(q, k, radius)
        return sum(total)

    for n in (2, 3):
        assert saved_bytes(1, n) == saved_bytes(3, n) <= 4 * (4 + 4 + n + 1) * 6**n


def test_vector_embedding_dtypes_and_errors():
    q, k = torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert vector_embedding(q.bfloat16(), k.bfloat16(), 1).dtype == torch.float32
    flow = vector_embedding(q, k, 1)
    assert flow.dtype == torch.float32 and flow.abs().max() <= 1
    with pytest.raises(MedrepError, match="radius"):
        vector_embedding(q, k, 0)
    with pytest.raises(MedrepError, match="equal"):
        vector_embedding(q, k[..., :4], 1)
    with pytest.raises(MedrepError, match="tau"):
        vector_embedding(q, k, 1, tau=0.0)


# ---------------------------------------------------------------- multi-vector head


@pytest.mark.parametrize("spatial", [(5, 6), (3, 4, 5)])
def test_multi_vector_head_is_mean_of_heads(spatial):
    torch.manual_seed(0)
    n = len(spatial)
    head = MultiVectorHead(n, in_channels=5, heads=3, head_dim=2, radius=1)
    fb, fa = torch.randn(2, 5, *spatial), torch.randn(2, 5, *spatial)
    flow = head(fb, fa)
    assert flow.shape == (2, n, *spatial)
    q, k = head.project(fb), head.project(fa)
    want = sum(vector_embedding(q[:, 2 * h : 2 * h + 2], k[:, 2 * h : 2 * h + 2], 1, tau=math.sqrt(2)) for h in range(3)) / 3
    torch.testing.assert_close(flow, want, atol=1e-6, rtol=1e-5)
    flow.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())


def test_multi_vector_head_errors():
    with pytest.raises(MedrepError, match="groups"):
        MultiVectorHead(2, 4, heads=3, head_dim=2, groups=4)
    with pytest.raises(MedrepError, match="spatial_dims"):
        MultiVectorHead(1, 4, heads=1)
    assert MultiVectorHead(2, 4, heads=2, head_dim=4, groups=2).norm.num_groups == 2


# ---------------------------------------------------------------- vector pyramid

TINY = {"level_channels": (6, 5, 4, 3, 2), "heads": (2, 2, 2, 1, 1), "head_dim": 2, "neighbourhood": 3}


def _levels(sizes, channels, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, *s, generator=g) for c, s in zip(channels, sizes)]


@pytest.mark.parametrize("sizes", [
    [(2, 2), (4, 4), (8, 8), (16, 16), (32, 32)],
    [(3, 2), (5, 4), (9, 7), (17, 13), (33, 25)],
    [(1, 1, 1), (2, 2, 2), (4, 4, 4), (8, 8, 8), (16, 16, 16)],
    [(1, 2, 2), (3, 3, 4), (5, 6, 7), (9, 11, 13), (17, 21, 25)],
])
def test_pyramid_shapes_and_gradients(sizes):
    torch.manual_seed(0)
    n = len(sizes[0])
    pyramid = VectorPyramid(n, **TINY)
    fb, fa = _levels(sizes, TINY["level_channels"]), _levels(sizes, TINY["level_channels"], seed=1)
    for f in fb + fa:
        f.requires_grad_(True)
    flow, flows = pyramid(fb, fa)
    assert flow.shape == (2, n, *sizes[-1])
    assert [tuple(f.shape) for f in flows] == [(2, n, *s) for s in sizes] and flows[-1] is flow
    assert torch.isfinite(flow).all()
    flow.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in pyramid.parameters())
    assert fb[-1].grad.abs().sum() > 0 and fa[-1].grad.abs().sum() > 0


class FixedHead(nn.Module):
    """Returns a known field and records what it was given."""

    def __init__(self, field):
        super().__init__()
        self.field = field
        self.inputs = None

    def forward(self, fb, fa):
        self.inputs = (fb, fa)
        return self.field


def test_pyramid_composition_matches_naive_reference():
    """With heads returning known fields, every level equals w(p) + up(p + w(p)) computed with a
    pointwise bilinear sampler, and each head sees the moving features warped by ``up``."""
    sizes = [(2, 3), (3, 5), (6, 9), (11, 17), (21, 33)]
    channels = (3, 3, 2, 2, 1)
    g = torch.Generator().manual_seed(0)
    fields = [torch.randn(1, 2, *s, generator=g, dtype=torch.float64) * 0.8 for s in sizes]
    pyramid = VectorPyramid(2, level_channels=channels, heads=(1,) * 5, head_dim=2, neighbourhood=3)
    pyramid.heads = nn.ModuleList(FixedHead(f) for f in fields)
    fb = _levels(sizes, channels, batch=1)
    fa = [f.double() for f in _levels(sizes, channels, batch=1, seed=1)]
    flow, flows = pyramid([f.double() for f in fb], fa)

    ref = fields[0][0]
    torch.testing.assert_close(flows[0][0], ref)
    for level in range(1, 5):
        up = naive_upsample(ref, sizes[level])
        torch.testing.assert_close(upsample_flow(ref[None], sizes[level])[0], up, atol=1e-12, rtol=0)
        torch.testing.assert_close(pyramid.heads[level].inputs[1][0], naive_warp(fa[level][0], up), atol=1e-12, rtol=0)
        w = fields[level][0]
        ref = w + naive_warp(up, w)
        torch.testing.assert_close(flows[level][0], ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(flow[0], ref)


def test_upsample_flow_keeps_affine_fields_exact():
    """A linear field resized with corner alignment and the (size-1) ratio stays the same map."""
    grid = lambda h, w: torch.stack(torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                                   indexing="ij"))
    fine = upsample_flow(grid(4, 6)[None] * 0.1, (10, 11))
    torch.testing.assert_close(fine[0], grid(10, 11) * 0.1, atol=1e-12, rtol=0)


def test_pyramid_recipe_errors():
    for bad in (4, 1, 5.0, True):
        with pytest.raises(RecipeError, match="method.neighbourhood"):
            VectorPyramid(2, neighbourhood=bad)
    with pytest.raises(RecipeError, match="method.heads"):
        VectorPyramid(2, heads=(4, 4, 4, 1))
    with pytest.raises(RecipeError, match="method.heads"):
        VectorPyramid(2, level_channels=(8, 4, 2, 1), heads=(1, 1, 1, 1))
    with pytest.raises(RecipeError, match="method.heads"):
        VectorPyramid(2, heads=(4, 4, 0, 1, 1))
    pyramid = VectorPyramid(3)
    assert [h.heads for h in pyramid.heads] == [4, 4, 4, 1, 1] and pyramid.heads[0].radius == 3
    with pytest.raises(MedrepError, match="levels"):
        pyramid([torch.zeros(1, 512, 1, 1, 1)], [torch.zeros(1, 512, 1, 1, 1)])
