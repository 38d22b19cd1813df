"""vit2d3d: tokens of both tokenizers, positions, the attentive slice selection against a loop over
MONAI's own attention, sizes refused with the field named, export and reload."""

from __future__ import annotations

import pytest
import torch

from medrep.checkpoint import export_encoder, load_encoder
from medrep.errors import DataError
from medrep.models import build_backbone

torch.set_num_threads(1)
TINY = dict(name="vit2d3d", img_size=32, depth=8, patch_size=8, patch_depth=1, hidden_size=16, mlp_dim=32, num_layers=2,
            num_heads=2, select_k=2)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_backbone(TINY).eval()


def test_one_network_embeds_images_and_volumes(model):
    with torch.no_grad():
        assert model(torch.rand(3, 1, 32, 24)).shape == (3, 16)
        assert model(torch.rand(2, 1, 16, 32, 8)).shape == (2, 16)
        volume = torch.rand(2, 1, 16, 16, 8)
        cls, local = model.forward_with_local(volume)
        assert torch.allclose(cls, model(volume), atol=1e-6)  # one pass, the same [CLS]
    assert local.shape == (2, 2 * 2 * 8, 16)  # the volume's own tokens, selected slices left out


def test_tokens_carry_shared_in_plane_positions_and_a_type(model):
    net = model.net
    image = torch.zeros(1, 1, 16, 16)
    volume = torch.zeros(1, 1, 16, 16, 3)
    t2, t3 = net.tokens_2d(image), net.tokens_3d(volume)
    bias2, bias3 = net.embed2d.proj.bias, net.embed3d.proj.bias  # what a zero patch embeds to
    # token (i, j) of the image and token (i, j, k) of the volume share pos_x[i] + pos_y[j]
    for i in range(2):
        for j in range(2):
            want2 = bias2 + net.pos_x[i] + net.pos_y[j] + net.type_embed[0]
            assert torch.allclose(t2[0, i * 2 + j], want2, atol=1e-6)
            for k in range(3):
                want3 = bias3 + net.pos_x[i] + net.pos_y[j] + net.pos_z[k] + net.type_embed[1]
                assert torch.allclose(t3[0, (i * 2 + j) * 3 + k], want3, atol=1e-6)


def test_slice_tokens_are_the_2d_tokens_of_the_slab_centres_plus_their_depth(model):
    net = model.net
    volume = torch.rand(2, 1, 16, 16, 8)
    slabs = torch.tensor([[1, 5], [0, 7]])
    got = net.slice_tokens(volume, slabs)
    for b in range(2):
        for j, z in enumerate(slabs[b].tolist()):
            want = net.tokens_2d(volume[b : b + 1, ..., z]) + net.pos_z[z]
            assert torch.allclose(got[b, j * 4 : (j + 1) * 4], want[0], atol=1e-6)


def test_slice_scores_match_a_loop_over_monai_attention(model):
    """Mean over layers and heads of [CLS]'s softmax attention to each 3D token, then over each slab's tokens."""
    net = model.net
    volume = torch.rand(2, 1, 16, 16, 8)
    got = net.slice_scores(volume)
    x = torch.cat([net.cls_token.expand(2, -1, -1), net.tokens_3d(volume)], dim=1)
    per_layer = []
    with torch.no_grad():
        for block in net.blocks:
            block.attn.save_attn = True
            x = block(x)
            per_layer.append(block.attn.att_mat[:, :, 0, 1:].clone())
            block.attn.save_attn = False
    want = torch.zeros(2, 8)
    for b in range(2):
        for z in range(8):
            tokens = [(i * 2 + j) * 8 + z for i in range(2) for j in range(2)]
            want[b, z] = sum(m[b, h, t] for m in per_layer for h in range(2) for t in tokens) / (len(per_layer) * 2 * len(tokens))
    assert torch.allclose(got, want, atol=1e-6)
    assert not got.requires_grad
    chosen = net.select(volume, 3, got)
    assert chosen.tolist() == [sorted(row.topk(3).indices.tolist()) for row in got]


def test_slabs_of_several_slices_score_and_cut_per_slab():
    torch.manual_seed(0)
    net = build_backbone({**TINY, "patch_depth": 2}).net
    volume = torch.rand(1, 1, 16, 16, 8)
    assert net.slice_scores(volume).shape == (1, 4)
    tokens = net.slice_tokens(volume, torch.tensor([[2]]))  # slab 2 = slices 4, 5: its centre is slice 5
    assert torch.allclose(tokens[0], (net.tokens_2d(volume[..., 5]) + net.pos_z[2])[0], atol=1e-6)


@pytest.mark.parametrize("shape, match", [
    ((1, 1, 20, 16), r"axis 0 size 20 must be a multiple of the patch \(8\)"),
    ((1, 1, 40, 16), r"at most 32"),
    ((1, 1, 16, 16, 9), r"at most 8"),
])
def test_sizes_that_do_not_fit_the_patches_or_tables_name_data_size(model, shape, match):
    with pytest.raises(DataError, match=match) as info:
        model(torch.rand(shape))
    assert info.value.where == "data.size"


def test_a_volume_with_fewer_slices_than_k_is_refused(model):
    with pytest.raises(DataError, match="1 slabs of 1, fewer than the 2 slices to select") as info:
        model(torch.rand(1, 1, 16, 16, 1))
    assert info.value.where == "model.select_k"


@pytest.mark.parametrize("bad, field", [({"img_size": 30}, "model.img_size"), ({"depth": 9, "patch_depth": 2}, "model.depth"),
                                        ({"hidden_size": 15}, "model.num_heads")])
def test_bad_geometry_names_the_option(bad, field):
    with pytest.raises(DataError) as info:
        build_backbone({**TINY, **bad})
    assert info.value.where == field


def test_export_and_load_give_the_same_embeddings(model, tmp_path):
    export_encoder(model, tmp_path / "enc")
    again = load_encoder(tmp_path / "enc").eval()
    x2, x3 = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 16, 16, 8)
    with torch.no_grad():
        assert torch.allclose(again(x2), model(x2), atol=1e-6) and torch.allclose(again(x3), model(x3), atol=1e-6)
