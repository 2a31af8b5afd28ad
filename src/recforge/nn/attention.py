"""Attention over fields.

* ``AttentionalPooling`` (AFM, Xiao et al. 2017): weights every pairwise interaction
  ``p_ij = e_i ⊙ e_j`` (i < j) by ``a_ij = softmax_ij(hᵀ relu(W p_ij + b))`` and returns
  ``Σ a_ij p_ij`` (B, D) together with the weights (B, P), P = F(F-1)/2.
* ``MultiHeadSelfAttention`` (AutoInt, Song et al. 2019): every field attends to every
  field with ``n_heads`` scaled dot-product heads; a projected residual keeps the input,
  then ReLU: ``out = relu(concat_h softmax(Q_h K_hᵀ / sqrt(d_h)) V_h + W_res x)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pairwise_index(n_fields: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices (P,) of the pairs i < j, in row-major order."""
    rows, cols = torch.triu_indices(n_fields, n_fields, offset=1)
    return rows, cols


class AttentionalPooling(nn.Module):
    """AFM's attention-based pooling of pairwise interactions.

    Parameters
    ----------
    n_fields: F.
    embedding_dim: D.
    attention_dim: width t of the attention network (W: (t, D), h: (t,)).
    dropout: dropout on the attention weights during training.
    """

    def __init__(
        self, n_fields: int, embedding_dim: int, attention_dim: int = 16, dropout: float = 0.0
    ) -> None:
        super().__init__()
        rows, cols = pairwise_index(n_fields)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        # one-hot (P, F) selectors: the pair factors e_i, e_j as two matmuls, whose backward
        # is a matmul too (gathering with rows/cols scatters P x D values per row in the
        # backward, ~1.7x slower on CPU at 39 fields)
        pick = torch.eye(n_fields)
        self.register_buffer("pick_i", pick[rows], persistent=False)
        self.register_buffer("pick_j", pick[cols], persistent=False)
        self.register_buffer("upper", rows * n_fields + cols, persistent=False)  # (P,) in F*F
        self.n_fields = n_fields
        self.attention = nn.Sequential(
            nn.Linear(embedding_dim, attention_dim),
            nn.ReLU(),
            nn.Linear(attention_dim, 1, bias=False),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """emb: (B, F, D) -> (pooled (B, D), weights (B, P)); weights sum to 1 per row."""
        b, f, _ = emb.shape
        pairs = torch.matmul(self.pick_i, emb) * torch.matmul(self.pick_j, emb)  # (B, P, D)
        weights = torch.softmax(self.attention(pairs).squeeze(-1), dim=1)  # (B, P)
        # Σ_{i<j} a_ij e_i ⊙ e_j = Σ_i e_i ⊙ (A e)_i with A (B, F, F) the weights above the
        # diagonal: one bmm instead of a (B, P, D) weighted copy of the pairs
        a = weights.new_zeros(b, f * f).index_copy(1, self.upper, self.dropout(weights))
        pooled = (torch.bmm(a.view(b, f, f), emb) * emb).sum(dim=1)  # (B, D)
        return pooled, weights


class MultiHeadSelfAttention(nn.Module):
    """AutoInt's interacting layer: (B, F, D_in) -> (B, F, n_heads * head_dim).

    Parameters
    ----------
    in_dim: D_in, the width of each field vector.
    head_dim: d_h, the width of each head.
    n_heads: number of heads.
    residual: add ``W_res x`` (a projection of the input) before the ReLU.
    """

    def __init__(
        self, in_dim: int, head_dim: int = 16, n_heads: int = 2, *, residual: bool = True
    ) -> None:
        super().__init__()
        self.head_dim, self.n_heads = head_dim, n_heads
        out = head_dim * n_heads
        self.query = nn.Linear(in_dim, out, bias=False)
        self.key = nn.Linear(in_dim, out, bias=False)
        self.value = nn.Linear(in_dim, out, bias=False)
        self.residual = nn.Linear(in_dim, out, bias=False) if residual else None
        self.out_dim = out

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """x: (B, F, D_in) -> (B, F, H*d_h); with ``return_attention`` also (B, H, F, F)."""
        b, f, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, f, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, F, d_h)

        # one (B*F, D_in) x (D_in, 3 or 4 * H*d_h) product instead of three or four skinny
        # ones (the weights stay four Linear modules: same parameters and state dict)
        mods = [self.query, self.key, self.value]
        mods += [self.residual] if self.residual is not None else []
        w = torch.cat([m.weight for m in mods], 0)  # (n * H*d_h, D_in)
        parts = F.linear(x, w).split(self.out_dim, dim=-1)  # each (B, F, H*d_h)
        q, k, v = heads(parts[0]), heads(parts[1]), heads(parts[2])
        attn = None
        if return_attention:
            scores = q @ k.transpose(-1, -2) / self.head_dim**0.5  # (B, H, F, F)
            attn = torch.softmax(scores, dim=-1)
            ctx = attn @ v  # (B, H, F, d_h)
        else:  # the same softmax(q kᵀ / sqrt(d_h)) v, fused (~2x faster on CPU)
            ctx = F.scaled_dot_product_attention(q, k, v)  # (B, H, F, d_h)
        out = ctx.transpose(1, 2).reshape(b, f, self.out_dim)  # (B, F, H*d_h)
        if self.residual is not None:
            out = out + parts[3]  # W_res x
        out = torch.relu(out)
        return (out, attn) if return_attention else out
