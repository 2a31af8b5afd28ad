"""Sequence layers: masked attention (leak tests), positional encodings, Transformer block."""

from __future__ import annotations

import math

import pytest
import torch

from recforge.exceptions import ConfigError
from recforge.nn.multihead import MultiHeadAttention, scaled_dot_product_attention
from recforge.nn.positional import (
    LearnedPositions,
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalPositions,
)
from recforge.nn.transformer import TransformerBlock, TransformerEncoder

B, L, D, H = 3, 6, 8, 2


def _valid() -> torch.Tensor:
    """Row 0 full, row 1 left-padded (2 pads), row 2 fully padded."""
    v = torch.ones(B, L, dtype=torch.bool)
    v[1, :2] = False
    v[2] = False
    return v


def test_sdpa_matches_a_plain_softmax_reference():
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, L, 4) for _ in range(3))
    valid = _valid()
    bias = torch.randn(H, L, L)
    out = scaled_dot_product_attention(
        q, k, v, key_valid=valid, query_valid=valid, causal=True, bias=bias
    )
    logits = q @ k.transpose(-1, -2) / 2.0 + bias  # d = 4
    allowed = valid[:, None, None, :] & torch.ones(L, L, dtype=torch.bool).tril()
    ref = torch.softmax(logits.masked_fill(~allowed, -math.inf), -1).nan_to_num(0.0) @ v
    ref = ref * valid[:, None, :, None]
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("with_bias", [False, True])
def test_fully_masked_rows_are_zero_not_nan_with_finite_gradients(with_bias):
    q = torch.randn(B, H, L, 4, requires_grad=True)
    valid = _valid()
    bias = torch.randn(H, L, L) if with_bias else None
    out = scaled_dot_product_attention(q, q, q, key_valid=valid, causal=True, bias=bias)
    assert torch.isfinite(out).all()
    assert (out[2] == 0).all()  # fully padded sequence
    assert (out[1, :, :2] == 0).all()  # padded first positions see nothing under causality
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


def _perturbed(x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """x with the positions ``where`` (B, L) replaced by noise."""
    return torch.where(where[..., None], torch.randn_like(x) * 10, x)


def _layers():
    torch.manual_seed(0)
    mha = MultiHeadAttention(D, H)
    rot = RotaryEmbedding(D // H, max_len=L)
    rel = RelativePositionBias(H, max_distance=3)
    nn_init = torch.nn.init
    nn_init.normal_(rel.table.weight)  # non-zero so that the bias matters
    return [
        ("mha", lambda x, v, c: mha(x, key_valid=v, query_valid=v, causal=c)),
        ("mha+rotary", lambda x, v, c: mha(x, key_valid=v, query_valid=v, causal=c, rotary=rot)),
        ("mha+relbias", lambda x, v, c: mha(x, key_valid=v, query_valid=v, causal=c, bias=rel(L))),
        ("post-ln", _block(norm_first=False)),
        ("pre-ln", _block(norm_first=True)),
        ("encoder", _encoder()),
    ]


def _block(norm_first: bool):
    block = TransformerBlock(D, H, dropout=0.0, norm_first=norm_first, activation="relu")
    return lambda x, v, c: block(x, v, causal=c)


def _encoder():
    enc = TransformerEncoder(D, n_layers=2, n_heads=H, dropout=0.0)
    return lambda x, v, c: enc(x, v, causal=c)


@pytest.mark.parametrize("name,layer", _layers(), ids=[n for n, _ in _layers()])
def test_future_positions_never_leak(name, layer):
    x = torch.randn(B, L, D)
    valid = torch.ones(B, L, dtype=torch.bool)
    t = 3
    future = torch.zeros(B, L, dtype=torch.bool)
    future[:, t + 1 :] = True
    a = layer(x, valid, True)
    b = layer(_perturbed(x, future), valid, True)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1])
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])  # the perturbation is real


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name,layer", _layers(), ids=[n for n, _ in _layers()])
def test_padded_positions_neither_give_nor_receive(name, layer, causal):
    x = torch.randn(B, L, D)
    valid = _valid()
    a = layer(x, valid, causal)
    b = layer(_perturbed(x, ~valid), valid, causal)
    torch.testing.assert_close(a[valid], b[valid])  # padding gives nothing
    assert (a[~valid] == 0).all() and torch.isfinite(a).all()  # and receives nothing
    # without the mask the same perturbation does move the real positions
    c = layer(_perturbed(x, ~valid), torch.ones_like(valid), causal)
    assert not torch.allclose(a[0], c[0]) or not torch.allclose(a[1, 2:], c[1, 2:])


def test_multihead_splits_dim_into_heads_and_rejects_bad_counts():
    assert MultiHeadAttention(12, 3).head_dim == 4
    with pytest.raises(ConfigError, match="n_heads=5 must divide dim=12"):
        MultiHeadAttention(12, 5)


def test_multihead_cross_attention_shapes():
    mha = MultiHeadAttention(D, H)
    q, kv = torch.randn(B, 2, D), torch.randn(B, L, D)
    valid = _valid()
    out = mha(q, kv, key_valid=valid)
    assert out.shape == (B, 2, D) and torch.isfinite(out).all()


def test_sinusoidal_values_and_positions():
    pe = SinusoidalPositions(10, 4)
    x = torch.zeros(1, 3, 4)
    out = pe(x)
    torch.testing.assert_close(
        out[0, 1], torch.tensor([math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)])
    )
    shifted = pe(x, positions=torch.tensor([[7, 8, 9]]))
    torch.testing.assert_close(shifted[0, 0], pe.pe[7])
    with pytest.raises(ConfigError, match="max_len=10"):
        pe(torch.zeros(1, 11, 4))


def test_learned_positions_are_trained_parameters():
    pe = LearnedPositions(5, 4)
    out = pe(torch.zeros(2, 5, 4))
    assert out.shape == (2, 5, 4)
    out.sum().backward()
    assert pe.table.weight.grad is not None


def test_rotary_dot_products_depend_on_offset_only():
    rot = RotaryEmbedding(8, max_len=32)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(i: int, j: int) -> torch.Tensor:
        qi = rot(q, positions=torch.tensor([[i]]))
        kj = rot(k, positions=torch.tensor([[j]]))
        return (qi * kj).sum()

    torch.testing.assert_close(score(2, 5), score(12, 15))
    assert not torch.allclose(score(2, 5), score(2, 9))
    torch.testing.assert_close(rot(q, positions=torch.tensor([[0]])), q)  # position 0: identity


def test_relative_bias_is_a_function_of_clipped_offset():
    rel = RelativePositionBias(H, max_distance=2)
    torch.nn.init.normal_(rel.table.weight)
    b = rel(5)
    assert b.shape == (H, 5, 5)
    torch.testing.assert_close(b[:, 0, 1], b[:, 3, 4])  # offset +1
    torch.testing.assert_close(b[:, 0, 3], b[:, 0, 4])  # offsets 3 and 4 both clip to 2


def test_transformer_block_switches_norm_and_activation():
    torch.manual_seed(0)
    x = torch.randn(B, L, D)
    pre = TransformerBlock(D, H, dropout=0.0, norm_first=True)
    post = TransformerBlock(D, H, dropout=0.0, norm_first=False, activation="relu")
    post.load_state_dict(pre.state_dict())
    assert not torch.allclose(pre(x), post(x))
    y = post(x)  # Post-LN output is layer-normalised per position
    torch.testing.assert_close(y.mean(-1), torch.zeros(B, L), atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="activation"):
        TransformerBlock(D, H, activation="tanh")


def test_dropout_only_while_training():
    block = TransformerBlock(D, H, dropout=0.5)
    x = torch.randn(B, L, D)
    block.eval()
    torch.testing.assert_close(block(x), block(x))
    block.train()
    torch.manual_seed(1)
    a = block(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, block(x))


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("extra", ["none", "bias", "rotary"])
def test_last_only_equals_the_last_position_of_the_full_output(norm_first, causal, extra):
    torch.manual_seed(0)
    enc = TransformerEncoder(D, n_layers=2, n_heads=H, dropout=0.0, norm_first=norm_first)
    enc.eval()
    x, valid = torch.randn(B, L, D), _valid()
    kw = {"causal": causal}
    if extra == "bias":
        kw["bias"] = torch.randn(H, L, L)
    if extra == "rotary":
        kw["rotary"] = RotaryEmbedding(D // H, L)
    full = enc(x, valid, **kw)
    last = enc(x, valid, last_only=True, **kw)
    assert last.shape == (B, 1, D)
    torch.testing.assert_close(last, full[:, -1:], atol=1e-6, rtol=1e-5)
    assert torch.equal(last[2], torch.zeros(1, D))  # a fully padded row stays 0
