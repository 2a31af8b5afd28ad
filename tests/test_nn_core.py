"""Shared layers on their own: embeddings, MLP and activations, FM/FFM interactions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recforge.data.features import FeatureEncoder, Field
from recforge.exceptions import ConfigError
from recforge.nn.embedding import FeatureEmbedding, LinearEmbedding
from recforge.nn.inputs import batch_from_encoded, to_tensors
from recforge.nn.interactions_fm import FFMInteraction, FMInteraction
from recforge.nn.mlp import ACTIVATIONS, MLP, Dice
from tests.conftest import make_tiny_ctr

torch.set_num_threads(1)

FIELDS = [
    Field("a", "categorical", vocab_size=3),
    Field("x", "numeric"),
    Field("b", "categorical", vocab_size=5),
    Field("tags", "multi", vocab_size=4, max_len=3),
    Field("hist", "multi", vocab_size=5, max_len=2, share="b"),
]


def _batch() -> dict:
    return {
        "categorical": torch.tensor([[1, 4], [2, 0]]),
        "numeric": torch.tensor([[0.5], [-2.0]]),
        "multi": {
            "tags": torch.tensor([[1, 3, 0], [0, 0, 0]]),
            "hist": torch.tensor([[2, 0], [4, 4]]),
        },
    }


def test_feature_embedding_shapes_order_and_offsets():
    emb = FeatureEmbedding(FIELDS, 6)
    assert emb.field_names == ["a", "b", "x", "tags", "hist"]
    assert emb.table.weight.shape == (3 + 5 + 4, 6)  # "hist" reuses b's rows
    assert [emb.field_offset(n) for n in ("a", "b", "tags", "hist")] == [0, 3, 8, 3]
    out = emb(_batch())
    assert out.shape == (2, 5, 6)
    W = emb.table.weight
    torch.testing.assert_close(out[0, 0], W[1])  # a=1 -> row 0 + 1
    torch.testing.assert_close(out[0, 1], W[3 + 4])  # b=4 -> row 3 + 4
    torch.testing.assert_close(out[1, 1], W[3 + 0])  # b=0 (OOV) -> b's own index-0 row
    torch.testing.assert_close(out[0, 2], 0.5 * emb.numeric_weight[0])
    torch.testing.assert_close(out[1, 2], -2.0 * emb.numeric_weight[0])


def test_multi_pooling_ignores_padding():
    mean = FeatureEmbedding(FIELDS, 4, pooling="mean")
    W = mean.table.weight
    out = mean(_batch())
    torch.testing.assert_close(out[0, 3], (W[8 + 1] + W[8 + 3]) / 2)  # the 0 is padding
    torch.testing.assert_close(out[1, 3], torch.zeros(4))  # all padding -> zeros
    torch.testing.assert_close(out[0, 4], W[3 + 2])  # shared vocabulary: b's rows
    torch.testing.assert_close(out[1, 4], W[3 + 4])  # mean of the same row twice
    total = FeatureEmbedding(FIELDS, 4, pooling="sum")
    total.load_state_dict(mean.state_dict())
    torch.testing.assert_close(total(_batch())[1, 4], 2 * W[3 + 4])
    with pytest.raises(ConfigError):
        FeatureEmbedding(FIELDS, 4, pooling="max")


def test_embedding_gradient_touches_only_used_rows_and_sparse_matches_dense():
    dense = FeatureEmbedding(FIELDS, 3)
    sparse = FeatureEmbedding(FIELDS, 3, sparse=True)
    sparse.load_state_dict(dense.state_dict())
    for m in (dense, sparse):
        m(_batch()).pow(2).sum().backward()
    g = dense.table.weight.grad
    used = {1, 2, 3 + 4, 3 + 0, 8 + 1, 8 + 3, 3 + 2}
    touched = set(torch.nonzero(g.abs().sum(1)).flatten().tolist())
    assert touched == used
    assert sparse.table.weight.grad.is_sparse
    torch.testing.assert_close(sparse.table.weight.grad.to_dense(), g)


def test_l2_penalty_is_the_squared_norm_of_used_rows():
    emb = FeatureEmbedding(FIELDS, 3).train()
    emb(_batch())
    W = emb.table.weight
    rows = [1, 3 + 4, 2, 3 + 0, 8 + 1, 8 + 3, 3 + 2, 3 + 4, 3 + 4]  # cat, then non-padding multi
    expected = sum(W[r].pow(2).sum() for r in rows) / 2
    torch.testing.assert_close(emb.l2_penalty(), expected)


def test_linear_embedding_is_a_sum_of_weights_plus_bias():
    lin = LinearEmbedding(FIELDS)
    with torch.no_grad():
        lin.bias.fill_(0.25)
    out = lin(_batch())
    w = lin.weights(_batch())  # (B, F, 1)
    assert out.shape == (2,)
    torch.testing.assert_close(out, w.sum((1, 2)) + 0.25)


def test_inputs_from_an_encoder_frame():
    df = make_tiny_ctr(50)
    enc = FeatureEncoder().fit(df, label="label")
    x = enc.transform(df)
    full = to_tensors(x)
    part = batch_from_encoded(x, np.array([3, 1]))
    assert part["categorical"].dtype == torch.int64 and part["numeric"].dtype == torch.float32
    torch.testing.assert_close(part["categorical"], full["categorical"][[3, 1]])
    torch.testing.assert_close(part["multi"]["tags"], full["multi"]["tags"][[3, 1]])
    out = FeatureEmbedding(enc.fields_, 4)(part)
    assert out.shape == (2, len(enc.fields_), 4)


def test_fm_sum_square_equals_explicit_pairwise_sum():
    e = torch.randn(5, 7, 3, dtype=torch.float64)
    explicit = sum((e[:, i] * e[:, j]).sum(-1) for i in range(7) for j in range(i + 1, 7))
    torch.testing.assert_close(FMInteraction()(e), explicit)
    per_dim = FMInteraction(reduce_sum=False)(e)
    assert per_dim.shape == (5, 3)
    torch.testing.assert_close(per_dim.sum(-1), explicit)


def test_ffm_equals_explicit_field_aware_sum():
    e = torch.randn(4, 5, 5, 2, dtype=torch.float64)
    explicit = sum((e[:, i, j] * e[:, j, i]).sum(-1) for i in range(5) for j in range(i + 1, 5))
    torch.testing.assert_close(FFMInteraction()(e), explicit)


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("norm", [None, "batch", "layer"])
def test_mlp_every_activation_and_norm(act, norm):
    mlp = MLP(6, (5, 4), activation=act, norm=norm, dropout=0.1, out_dim=1)
    x = torch.randn(8, 6)
    assert mlp(x).shape == (8, 1)
    mlp(x).sum().backward()
    assert mlp.out_dim == 1
    assert MLP(6, (5,), activation=act, norm=norm)(torch.randn(2, 3, 6)).shape == (2, 3, 5)


def test_mlp_layer_order_and_errors():
    mlp = MLP(4, (3,), activation="gelu", norm="layer", dropout=0.2)
    kinds = [type(m).__name__ for m in mlp.net]
    assert kinds == ["Linear", "LayerNorm", "GELU", "Dropout"]  # dropout after activation
    with pytest.raises(ConfigError, match="activation"):
        MLP(4, (3,), activation="nope")
    with pytest.raises(ConfigError, match="norm"):
        MLP(4, (3,), norm="group")


def test_dropout_is_off_in_eval():
    mlp = MLP(10, (64, 64), dropout=0.5, out_dim=1)
    x = torch.randn(16, 10)
    mlp.eval()
    torch.testing.assert_close(mlp(x), mlp(x))
    mlp.train()
    assert not torch.equal(mlp(x), mlp(x))


def test_dice_follows_the_din_formula():
    dice = Dice(3)
    with torch.no_grad():
        dice.alpha.copy_(torch.tensor([0.1, -0.5, 0.3]))
    x = torch.randn(32, 3)
    mean, var = x.mean(0), x.var(0, unbiased=False)
    p = torch.sigmoid((x - mean) / torch.sqrt(var + 1e-8))
    expected = p * x + (1 - p) * dice.alpha * x
    torch.testing.assert_close(dice.train()(x), expected, rtol=1e-4, atol=1e-5)
    # in eval the gate uses the running statistics
    dice.eval()
    rm, rv = dice.bn.running_mean, dice.bn.running_var
    p = torch.sigmoid((x - rm) / torch.sqrt(rv + 1e-8))
    torch.testing.assert_close(dice(x), p * x + (1 - p) * dice.alpha * x, rtol=1e-4, atol=1e-5)
    assert dice(torch.randn(4, 5, 3)).shape == (4, 5, 3)


def test_linear_column_equals_a_separate_linear_embedding():
    torch.manual_seed(0)
    both = FeatureEmbedding(FIELDS, 6, linear=True)
    assert both.table.weight.shape == (12, 7)
    with torch.no_grad():
        both.linear_bias.fill_(0.25)
    emb, first = both.forward_with_linear(_batch())
    sep_emb = FeatureEmbedding(FIELDS, 6)
    sep_lin = LinearEmbedding(FIELDS)
    with torch.no_grad():
        sep_emb.table.weight.copy_(both.table.weight[:, :6])
        sep_emb.numeric_weight.copy_(both.numeric_weight[:, :6])
        sep_lin.weights.table.weight.copy_(both.table.weight[:, 6:])
        sep_lin.weights.numeric_weight.copy_(both.numeric_weight[:, 6:])
        sep_lin.bias.fill_(0.25)
    torch.testing.assert_close(emb, sep_emb(_batch()))
    torch.testing.assert_close(both(_batch()), emb)
    torch.testing.assert_close(first, sep_lin(_batch()))
    (emb.sum() + first.sum()).backward()  # one table gets both terms' gradients
    assert both.table.weight.grad[:, 6].abs().sum() > 0
    with pytest.raises(ConfigError, match="linear=True"):
        sep_emb.forward_with_linear(_batch())


def test_mlp_takes_a_zero_padded_input_as_the_same_function():
    from recforge.nn.align import aligned, cat_padded

    torch.manual_seed(0)
    mlp = MLP(429, (40, 40), out_dim=1)
    assert mlp.in_width == aligned(429) == 432
    assert mlp.net[0].weight.shape == (40, 429)  # parameters keep their logical shape
    x = torch.randn(5, 429)
    padded = cat_padded([x[:, :400], x[:, 400:]], mlp.in_width)
    assert padded.shape == (5, 432) and torch.equal(padded[:, 429:], torch.zeros(5, 3))
    assert torch.allclose(mlp(padded), mlp(x), atol=1e-6)
    mlp(padded).sum().backward()
    g_pad = mlp.net[0].weight.grad.clone()
    mlp.zero_grad()
    mlp(x).sum().backward()
    assert torch.allclose(g_pad, mlp.net[0].weight.grad, atol=1e-6)
    assert MLP(16, (8,)).in_width == 16 and MLP(7, ()).in_width == 7  # aligned / no layer


@pytest.mark.parametrize("numeric", ["field", "dense"])
@pytest.mark.parametrize("fm", [False, True])
def test_forward_deep_equals_the_unfused_terms_in_values_and_gradients(numeric, fm):
    """forward_deep's fused training node gives forward_with_linear + deep_input (+ the FM
    term) and the same gradients for every parameter; its backward passes gradcheck."""
    from recforge.nn.embedding import _DeepHead

    torch.manual_seed(0)
    emb = FeatureEmbedding(FIELDS, 6, linear=True, numeric=numeric).double()
    batch = _batch()
    batch["numeric"] = batch["numeric"].double()
    width = emb.deep_width + 5  # zero-padded, as an MLP's in_width
    e, first = emb.forward_with_linear(batch)
    deep = emb.deep_input(e, batch, width)
    if fm:
        first = first + FMInteraction()(e)
    e2, deep2, first2 = emb.forward_deep(batch, width, fm=fm)
    for a, b in ((e, e2), (deep, deep2), (first, first2)):
        torch.testing.assert_close(a, b)
    gd, gf = torch.randn_like(deep), torch.randn_like(first)
    params = list(emb.parameters())
    ref = torch.autograd.grad((deep * gd).sum() + (first * gf).sum(), params, allow_unused=True)
    got = torch.autograd.grad((deep2 * gd).sum() + (first2 * gf).sum(), params, allow_unused=True)
    for a, b in zip(ref, got):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
    with torch.no_grad():  # inference takes the plain ops: same values
        _, deep3, first3 = emb.forward_deep(batch, width, fm=fm)
    torch.testing.assert_close(deep3, deep2.detach())
    torch.testing.assert_close(first3, first2.detach())
    out = torch.randn(3, 4, 7, dtype=torch.double, requires_grad=True)
    dense = torch.randn(3, 2, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda o, x: _DeepHead.apply(o, x, 29, fm), (out, dense))
    assert torch.autograd.gradcheck(lambda o: _DeepHead.apply(o, None, 24, fm), (out,))


def test_relu_stack_training_node_equals_the_layers_and_passes_gradcheck():
    """An MLP of Linear -> ReLU layers and a head trains through _ReluStack (backward
    written out): the same outputs and gradients as its nn.Sequential, padded input too."""
    from recforge.nn.mlp import _ReluStack

    torch.manual_seed(0)
    mlp = MLP(13, (9, 7), out_dim=1).double()
    assert mlp._relu_stack and not MLP(13, (9,), dropout=0.1)._relu_stack
    assert not MLP(13, (9,), norm="layer")._relu_stack and MLP(13, (9,))._relu_stack
    x = torch.randn(6, mlp.in_width, dtype=torch.double, requires_grad=True)
    x.data[:, 13:] = 0  # zero-padded to in_width = 16
    out = mlp(x)
    with torch.no_grad():
        ref_eval = mlp(x)
    first = mlp.net[0]
    h = torch.nn.functional.linear(x, torch.nn.functional.pad(first.weight, (0, 3)), first.bias)
    ref = mlp.net[1:](h)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(ref_eval, ref.detach())
    params = [x, *mlp.parameters()]
    for a, b in zip(torch.autograd.grad(ref.sum(), params), torch.autograd.grad(out.sum(), params)):
        torch.testing.assert_close(a, b)
    w = [p.detach().clone().requires_grad_() for p in mlp.parameters()]
    stack = _ReluStack.apply
    assert torch.autograd.gradcheck(lambda x0, *p: stack(x0, False, *p), (x[:, :13], *w))
    headless = MLP(5, (4, 3)).double()  # no head: the last layer has its ReLU too
    x = torch.randn(6, 5, dtype=torch.double, requires_grad=True)
    out, ref = headless(x), headless.net(x)
    torch.testing.assert_close(out, ref)
    params = [x, *headless.parameters()]
    for a, b in zip(torch.autograd.grad(ref.sum(), params), torch.autograd.grad(out.sum(), params)):
        torch.testing.assert_close(a, b)
    w = [p.detach().clone().requires_grad_() for p in headless.parameters()]
    assert torch.autograd.gradcheck(lambda x0, *p: stack(x0, True, *p), (x, *w))
