"""Target attention, packed recurrent layers and AUGRU: padding never leaks, empty rows
give zeros, and the layers compute what their papers say."""

from __future__ import annotations

import pytest
import torch

from recforge.exceptions import ConfigError
from recforge.nn.recurrent import AUGRU, PackedRNN
from recforge.nn.target_attention import (
    ActivationUnit,
    AdditiveAttention,
    LuongAttention,
    masked_softmax,
)

B, L, D = 4, 6, 8
LENGTHS = torch.tensor([6, 3, 1, 0])


def _mask(lengths=LENGTHS, length=L):
    return torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)  # (B, L)


def _perturb_padding(x, mask):
    return torch.where(mask.unsqueeze(-1), x, torch.randn_like(x) * 100)


ATTENTIONS = [
    lambda: AdditiveAttention(D, D, 16),
    lambda: LuongAttention(D, D, "dot"),
    lambda: LuongAttention(D, D, "general", scaled=True),
    lambda: ActivationUnit(D, (8, 4), activation="dice"),
    lambda: ActivationUnit(D, (8,), activation="prelu", softmax=True),
]


@pytest.mark.parametrize("make", ATTENTIONS)
def test_target_attention_ignores_padding_and_empty_rows_pool_to_zero(make):
    torch.manual_seed(0)
    layer = make().eval()
    q, k = torch.randn(B, D), torch.randn(B, L, D)
    mask = _mask()
    pooled, w = layer(q, k, mask)
    pooled2, w2 = layer(q, _perturb_padding(k, mask), mask)
    torch.testing.assert_close(pooled, pooled2)
    torch.testing.assert_close(w, w2)
    assert torch.all(w[~mask] == 0)
    assert torch.all(pooled[3] == 0) and torch.isfinite(pooled).all()


def test_softmax_variants_sum_to_one_and_din_keeps_raw_intensity():
    torch.manual_seed(0)
    q, k, mask = torch.randn(B, D), torch.randn(B, L, D), _mask()
    _, w = AdditiveAttention(D, D)(q, k, mask)
    torch.testing.assert_close(w[:3].sum(1), torch.ones(3))
    din = ActivationUnit(D, (8,), activation="relu").eval()
    _, raw = din(q, k, mask)
    torch.testing.assert_close(raw, din.scores(q, k) * mask)  # no normalisation
    assert not torch.allclose(raw[:3].sum(1), torch.ones(3))


def test_luong_dot_is_the_plain_dot_product():
    q, k, mask = torch.randn(B, D), torch.randn(B, L, D), _mask()
    pooled, w = LuongAttention(D, D, "dot")(q, k, mask)
    expected = masked_softmax((k * q.unsqueeze(1)).sum(-1), mask)
    torch.testing.assert_close(w, expected)
    torch.testing.assert_close(pooled, (expected.unsqueeze(-1) * k).sum(1))
    with pytest.raises(ConfigError, match="general"):
        LuongAttention(D, D + 1, "dot")


@pytest.mark.parametrize(
    "kind,bidirectional", [("gru", False), ("lstm", False), ("lstm", True), ("gru", True)]
)
def test_packed_rnn_padding_cannot_change_the_output(kind, bidirectional):
    torch.manual_seed(0)
    rnn = PackedRNN(D, 5, kind=kind, bidirectional=bidirectional).eval()
    x, mask = torch.randn(B, L, D), _mask()
    out, last = rnn(x, LENGTHS)
    out2, last2 = rnn(_perturb_padding(x, mask), LENGTHS)
    torch.testing.assert_close(out, out2)
    torch.testing.assert_close(last, last2)
    assert out.shape == (B, L, rnn.out_dim) and last.shape == (B, rnn.out_dim)
    assert torch.all(out[~mask] == 0) and torch.all(last[3] == 0)
    # each row equals the same network run on that row alone, truncated to its length
    for row in range(3):
        n = int(LENGTHS[row])
        ref, state = rnn.rnn(x[row : row + 1, :n])
        torch.testing.assert_close(out[row, :n], ref[0])
        h = state[0] if kind == "lstm" else state
        ref_last = torch.cat([h[-2], h[-1]], -1) if bidirectional else h[-1]
        torch.testing.assert_close(last[row], ref_last[0])


def test_augru_follows_its_gate_and_ignores_padding():
    torch.manual_seed(0)
    net = AUGRU(D, 5).eval()
    x, mask = torch.randn(B, L, D), _mask()
    a = torch.rand(B, L)
    h = net(x, a, LENGTHS)
    a_pad = torch.where(mask, a, torch.rand(B, L))
    torch.testing.assert_close(h, net(_perturb_padding(x, mask), a_pad, LENGTHS))
    assert torch.all(h[3] == 0)
    # the recurrence by hand for row 1
    state = torch.zeros(1, 5)
    for t in range(int(LENGTHS[1])):
        state = net.cell(x[1:2, t], state, a[1:2, t])
    torch.testing.assert_close(h[1], state[0])
    # attention 0 everywhere: the update gate is closed, the state never leaves 0
    assert torch.all(net(x, torch.zeros(B, L), LENGTHS) == 0)


def test_packed_rnn_rejects_an_unknown_kind():
    with pytest.raises(ConfigError, match="gru"):
        PackedRNN(D, 4, kind="rnn")


def test_din_activation_unit_padding_stays_out_of_dice_statistics_in_training():
    torch.manual_seed(0)
    unit = ActivationUnit(D, (8,), activation="dice").train()
    q, k, mask = torch.randn(B, D), torch.randn(B, L, D), _mask()
    pooled, _ = unit(q, k, mask)
    pooled2, _ = unit(q, _perturb_padding(k, mask), mask)  # batch statistics see real rows only
    torch.testing.assert_close(pooled, pooled2)
