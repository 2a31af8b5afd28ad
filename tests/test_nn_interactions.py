"""Interaction layers checked against their formulas on tiny tensors."""

from __future__ import annotations

import itertools

import pytest
import torch

from recforge.nn.attention import AttentionalPooling, MultiHeadSelfAttention, pairwise_index
from recforge.nn.bi_interaction import BiInteraction
from recforge.nn.cin import CIN
from recforge.nn.cross import CrossNetwork, CrossNetworkV2

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_cross_v1_matches_formula():
    net = CrossNetwork(5, n_layers=2)
    with torch.no_grad():
        net.bias.normal_()
    x0 = torch.randn(3, 5)
    x = x0
    for layer in range(2):  # x_{l+1} = x0 * (w·x_l) + b + x_l, one row at a time
        w, b = net.weight[layer], net.bias[layer]
        x = torch.stack([x0[i] * torch.dot(w, x[i]) + b + x[i] for i in range(3)])
    torch.testing.assert_close(net(x0), x)


def test_cross_v1_with_zero_weights_adds_bias_only():
    net = CrossNetwork(4, n_layers=3)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.fill_(0.5)
    x0 = torch.randn(2, 4)
    torch.testing.assert_close(net(x0), x0 + 1.5)


def test_cross_v2_full_rank_matches_formula():
    net = CrossNetworkV2(4, n_layers=2)
    with torch.no_grad():
        net.bias.normal_()
    x0 = torch.randn(3, 4)
    x = x0
    for layer in range(2):
        x = x0 * (x @ net.weight[layer].T + net.bias[layer]) + x
    torch.testing.assert_close(net(x0), x)
    # one sample by hand, layer 0: x1_k = x0_k * (Σ_j W_kj x0_j + b_k) + x0_k
    w, b, v = net.weight[0].detach(), net.bias[0].detach(), x0[0]
    by_hand = torch.tensor(
        [v[k] * (sum(w[k, j] * v[j] for j in range(4)) + b[k]) + v[k] for k in range(4)]
    )
    single = CrossNetworkV2(4, n_layers=1)
    with torch.no_grad():
        single.weight[0] = w
        single.bias[0] = b
    torch.testing.assert_close(single(x0[:1])[0], by_hand)


def test_cross_v2_low_rank_single_expert_matches_formula():
    net = CrossNetworkV2(6, n_layers=2, low_rank=3, n_experts=1)
    x0 = torch.randn(4, 6)
    x = x0
    for layer in range(2):
        u, v, c = net.U[layer, 0], net.V[layer, 0], net.C[layer, 0]
        inner = torch.tanh(torch.tanh(x @ v) @ c.T) @ u.T  # U g(C g(Vᵀ x))
        x = x0 * (inner + net.bias[layer]) + x  # one expert: its gate is 1
    torch.testing.assert_close(net(x0), x)


def test_cross_v2_mixture_is_gate_weighted_sum_of_experts():
    net = CrossNetworkV2(5, n_layers=1, low_rank=2, n_experts=3)
    x0 = torch.randn(2, 5)
    gate = torch.softmax(net.gates[0](x0), dim=-1)  # (B, E)
    expected = x0.clone()
    for e in range(3):
        u, v, c = net.U[0, e], net.V[0, e], net.C[0, e]
        expert = x0 * (torch.tanh(torch.tanh(x0 @ v) @ c.T) @ u.T + net.bias[0])
        expected = expected + gate[:, e : e + 1] * expert
    torch.testing.assert_close(net(x0), expected)
    assert net(x0).shape == (2, 5)


def test_cin_shapes_with_and_without_split_half():
    x0 = torch.randn(7, 4, 3)  # B=7, m=4, D=3
    assert CIN(4, (6, 4, 2))(x0).shape == (7, 3 + 2 + 2)
    assert CIN(4, (6, 4, 2)).out_dim == 7
    assert CIN(4, (5, 3), split_half=False)(x0).shape == (7, 8)
    with pytest.raises(ValueError, match="even"):
        CIN(4, (5, 3))


def test_cin_tiny_case_by_hand():
    # m=2 fields, D=2, one layer with one map, identity activation:
    # X1[d] = Σ_{h,i} W[h,i] X0[h,d] X0[i,d] + bias; output = Σ_d X1[d]
    cin = CIN(2, (1,), activation="identity")
    with torch.no_grad():
        cin.convs[0].weight.copy_(torch.tensor([[[1.0], [2.0], [3.0], [4.0]]]))  # (1, H0*m=4, 1)
        cin.convs[0].bias.fill_(0.5)
    x0 = torch.tensor([[[1.0, 2.0], [3.0, -1.0]]])  # e_0 = (1, 2), e_1 = (3, -1)
    # d=0: 1*1*1 + 2*1*3 + 3*3*1 + 4*3*3 = 1 + 6 + 9 + 36 = 52, + 0.5
    # d=1: 1*2*2 + 2*2*(-1) + 3*(-1)*2 + 4*(-1)*(-1) = 4 - 4 - 6 + 4 = -2, + 0.5
    torch.testing.assert_close(cin(x0), torch.tensor([[52.5 + -1.5]]))


def test_cin_second_layer_uses_previous_map_times_x0():
    cin = CIN(2, (2, 1), activation="identity", split_half=False)
    x0 = torch.randn(3, 2, 4)
    z1 = torch.einsum("bhd,bmd->bhmd", x0, x0).reshape(3, 4, 4)
    x1 = torch.einsum("oc,bcd->bod", cin.convs[0].weight[..., 0], z1) + cin.convs[0].bias[:, None]
    z2 = torch.einsum("bhd,bmd->bhmd", x1, x0).reshape(3, 4, 4)
    x2 = torch.einsum("oc,bcd->bod", cin.convs[1].weight[..., 0], z2) + cin.convs[1].bias[:, None]
    torch.testing.assert_close(cin(x0), torch.cat([x1.sum(-1), x2.sum(-1)], dim=1))


def test_cin_blocks_equal_the_whole_batch_product_and_its_gradients(monkeypatch):
    # cin_layer builds the outer products CHUNK rows at a time and rebuilds them in the
    # backward: forward and every gradient equal autograd through the whole-batch product
    import recforge.nn.cin as cin_mod

    monkeypatch.setattr(cin_mod, "CHUNK", 7)  # B*D = 33 rows: 4 full blocks and a rest
    cin = CIN(5, (6, 3)).double()
    x0 = torch.randn(11, 5, 3, dtype=torch.float64, requires_grad=True)

    def reference(x0):
        b, m, d = x0.shape
        x, pooled = x0, []
        for k, conv in enumerate(cin.convs):
            z = torch.einsum("bhd,bmd->bhmd", x, x0).reshape(b, -1, d)
            h = torch.relu(torch.einsum("oc,bcd->bod", conv.weight[..., 0], z) + conv.bias[:, None])
            x, out = torch.split(h, h.shape[1] // 2, dim=1) if k == 0 else (h, h)
            pooled.append(out.sum(-1))
        return torch.cat(pooled, 1)

    out, ref = cin(x0), reference(x0)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    params = [x0, *cin.parameters()]
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b)
    rows = [
        torch.randn(n, dtype=torch.float64, requires_grad=True)
        for n in ((11, 2), (11, 5), (4, 10), (4,))
    ]  # x (N, H), x0 (N, m), weight (J, H*m), bias (J,)
    assert torch.autograd.gradcheck(cin_mod.cin_layer, rows)


def test_block_rows_small_on_one_thread_few_blocks_on_more(monkeypatch):
    from recforge.nn.blocking import MAX_BLOCKS, block_rows

    assert block_rows(65536, 256) == 256  # this module runs torch on 1 thread
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert block_rows(65536, 256) == 65536 // MAX_BLOCKS
    assert block_rows(1000, 256) == 256  # never below the 1-thread size


def test_bi_interaction_equals_pairwise_sum():
    emb = torch.randn(5, 4, 3)
    pairwise = sum(emb[:, i] * emb[:, j] for i, j in itertools.combinations(range(4), 2))
    out = BiInteraction()(emb)
    torch.testing.assert_close(out, pairwise)
    torch.testing.assert_close(out, 0.5 * (emb.sum(1) ** 2 - (emb**2).sum(1)))


def test_pairwise_index_is_all_pairs_in_order():
    rows, cols = pairwise_index(4)
    assert list(zip(rows.tolist(), cols.tolist())) == list(itertools.combinations(range(4), 2))


def test_afm_attention_weights_sum_to_one_and_pool_pairs():
    afm = AttentionalPooling(4, 3, attention_dim=5)
    emb = torch.randn(6, 4, 3)
    pooled, weights = afm(emb)
    assert weights.shape == (6, 6) and pooled.shape == (6, 3)
    torch.testing.assert_close(weights.sum(1), torch.ones(6))
    assert (weights > 0).all()
    pairs = torch.stack([emb[:, i] * emb[:, j] for i, j in itertools.combinations(range(4), 2)], 1)
    torch.testing.assert_close(pooled, (weights.unsqueeze(-1) * pairs).sum(1))


def test_afm_blocks_of_rows_equal_one_block(monkeypatch):
    import recforge.nn.attention as att

    afm = AttentionalPooling(5, 3, attention_dim=4).double()
    emb = torch.randn(10, 5, 3, dtype=torch.float64, requires_grad=True)
    whole, w_whole = afm(emb)
    g_whole = torch.autograd.grad(whole.square().sum(), [emb, *afm.parameters()])
    monkeypatch.setattr(att, "CHUNK", 3)  # blocks of 3, 3, 3, 1 rows
    blocks, w_blocks = afm(emb)
    g_blocks = torch.autograd.grad(blocks.square().sum(), [emb, *afm.parameters()])
    torch.testing.assert_close(blocks, whole)
    torch.testing.assert_close(w_blocks, w_whole)
    for a, b in zip(g_blocks, g_whole):
        torch.testing.assert_close(a, b)


def test_afm_with_constant_scores_averages_pairs():
    afm = AttentionalPooling(3, 2, attention_dim=4)
    with torch.no_grad():
        afm.attention[2].weight.zero_()  # h = 0: every pair scores 0 -> uniform weights
    emb = torch.randn(2, 3, 2)
    pooled, weights = afm(emb)
    torch.testing.assert_close(weights, torch.full((2, 3), 1 / 3))
    pairs = torch.stack([emb[:, 0] * emb[:, 1], emb[:, 0] * emb[:, 2], emb[:, 1] * emb[:, 2]], 1)
    torch.testing.assert_close(pooled, pairs.mean(1))


def test_mhsa_shapes_attention_and_formula():
    mhsa = MultiHeadSelfAttention(4, head_dim=3, n_heads=2)
    x = torch.randn(5, 6, 4)
    out, attn = mhsa(x, return_attention=True)
    assert out.shape == (5, 6, 6) and attn.shape == (5, 2, 6, 6)
    torch.testing.assert_close(attn.sum(-1), torch.ones(5, 2, 6))
    assert (out >= 0).all()
    # head 0 by hand
    q, k, v = (lin(x)[..., :3] for lin in (mhsa.query, mhsa.key, mhsa.value))
    a0 = torch.softmax(q @ k.transpose(1, 2) / 3**0.5, dim=-1)
    expected0 = torch.relu(a0 @ v + mhsa.residual(x)[..., :3])
    torch.testing.assert_close(out[..., :3], expected0)


def test_mhsa_residual_path():
    mhsa = MultiHeadSelfAttention(4, head_dim=2, n_heads=2, residual=True)
    with torch.no_grad():
        mhsa.value.weight.zero_()  # attention output is 0: only relu(W_res x) is left
    x = torch.randn(3, 5, 4)
    torch.testing.assert_close(mhsa(x), torch.relu(x @ mhsa.residual.weight.T))
    plain = MultiHeadSelfAttention(4, head_dim=2, n_heads=2, residual=False)
    with torch.no_grad():
        plain.value.weight.zero_()
    torch.testing.assert_close(plain(x), torch.zeros(3, 5, 4))


def test_mhsa_is_permutation_equivariant_over_fields():
    mhsa = MultiHeadSelfAttention(4, head_dim=2, n_heads=3)
    x = torch.randn(2, 5, 4)
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(mhsa(x)[:, perm], mhsa(x[:, perm]))


def test_mhsa_fused_attention_equals_the_explicit_softmax():
    # up to 64 fields the layer computes softmax(q kᵀ / sqrt(d)) v itself, above it calls
    # the fused kernel: both equal the formula
    mhsa = MultiHeadSelfAttention(6, head_dim=3, n_heads=2)
    x = torch.randn(2, 70, 6)
    fused = mhsa(x)  # > 64 fields: scaled_dot_product_attention
    q, k, v = (
        lin(x).view(2, 70, 2, 3).transpose(1, 2) for lin in (mhsa.query, mhsa.key, mhsa.value)
    )
    a = torch.softmax(q @ k.transpose(-1, -2) / 3**0.5, dim=-1)
    explicit = torch.relu((a @ v).transpose(1, 2).reshape(2, 70, 6) + mhsa.residual(x))
    torch.testing.assert_close(fused, explicit)


@pytest.mark.parametrize(
    "make",
    [
        lambda d: CrossNetwork(d, n_layers=3),
        lambda d: CrossNetworkV2(d, n_layers=3),
        lambda d: CrossNetworkV2(d, n_layers=2, low_rank=3, n_experts=2),
    ],
)
def test_cross_networks_on_zero_padded_input_are_the_same_function(make):
    from recforge.nn.align import aligned, pad_last

    torch.manual_seed(0)
    d = 13
    net = make(d)
    x0 = torch.randn(7, d, requires_grad=True)
    ref = net(x0)
    padded = net(pad_last(x0, aligned(d)))  # (7, 16)
    assert padded.shape == (7, 16)
    assert torch.allclose(padded[:, :d], ref, atol=1e-6)
    assert torch.equal(padded[:, d:], torch.zeros(7, 16 - d))
    # the same gradients for the (unpadded) parameters
    g_ref = torch.autograd.grad(ref.square().sum(), list(net.parameters()), allow_unused=True)
    g_pad = torch.autograd.grad(padded.square().sum(), list(net.parameters()), allow_unused=True)
    for a, b in zip(g_ref, g_pad):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("residual", [True, False])
def test_autoint_layer_channel_major_path_equals_the_natural_one(residual):
    """forward_channels (channel-major activations, backward by hand) gives forward's
    outputs and gradients, on a view of natural embeddings (first layer) and on a
    contiguous channel-major input (a stacked layer), and passes gradcheck."""
    from recforge.nn.attention import MultiHeadSelfAttention, _InteractChannels

    torch.manual_seed(0)
    m = MultiHeadSelfAttention(6, head_dim=3, n_heads=2, residual=residual).double()
    e = torch.randn(5, 7, 6, dtype=torch.double, requires_grad=True)
    ref = m(e)
    out = m.forward_channels(e.permute(2, 0, 1)).permute(1, 2, 0)
    assert torch.allclose(out, ref, atol=1e-12)
    g = torch.randn_like(ref)
    params = [e, *m.parameters()]
    for a, b in zip(torch.autograd.grad(ref, params, g), torch.autograd.grad(out, params, g)):
        assert torch.allclose(a, b, atol=1e-12)
    w = m._weight().detach().requires_grad_()
    xt = torch.randn(6, 5, 7, dtype=torch.double, requires_grad=True)

    def layer(x, w):
        return _InteractChannels.apply(x, w, 2, 3, residual)

    assert torch.autograd.gradcheck(layer, (xt, w))
    assert torch.autograd.gradcheck(lambda x, w: layer(x.permute(2, 0, 1), w), (e, w))


def test_full_rank_cross_backward_by_hand_matches_autograd():
    from recforge.nn.cross import _FullRankCross

    torch.manual_seed(0)
    x0 = torch.randn(6, 5, dtype=torch.double, requires_grad=True)
    w = torch.randn(3, 5, 5, dtype=torch.double, requires_grad=True)
    b = torch.randn(3, 5, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(_FullRankCross.apply, (x0, w, b))
    x = x0
    for layer in range(3):
        x = x0 * (x @ w[layer].T + b[layer]) + x
    assert torch.allclose(_FullRankCross.apply(x0, w, b), x, atol=1e-12)
