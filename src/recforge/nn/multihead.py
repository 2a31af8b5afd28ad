"""Scaled dot-product and multi-head attention over sequences, with padding and causal masks.

Masks are booleans, ``True`` = a real position:

* ``key_valid`` (B, Lk): a padded key never *gives* weight (no query attends to it);
* ``query_valid`` (B, Lq): a padded query never *receives* anything (its output is 0);
* ``causal``: query t sees keys 0..t only (self-attention, Lq == Lk, the same positions);
* ``bias`` (H, Lq, Lk) or (B, H, Lq, Lk): an additive float bias (relative positions).

A query row with no key left to look at (a fully padded sequence, or a padded first
position under a causal mask) outputs zeros, never NaN: its row is opened to every key so
that the softmax is finite, and the result is then zeroed.

The kernel is ``torch.nn.functional.scaled_dot_product_attention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recforge.exceptions import ConfigError


def attention_mask(
    batch: int,
    q_len: int,
    k_len: int,
    *,
    key_valid: torch.Tensor | None = None,
    causal: bool = False,
    device: torch.device | None = None,
) -> torch.Tensor | None:
    """Where each query may look: (B, 1, Lq, Lk) bool (True = attend), or None (everywhere).

    key_valid (B, Lk) bool; causal needs Lq == Lk (query t sees keys <= t).
    """
    mask = None
    if key_valid is not None:
        mask = key_valid[:, None, None, :].expand(batch, 1, q_len, k_len)  # (B, 1, Lq, Lk)
    if causal:
        if q_len != k_len:
            raise ConfigError(f"causal attention needs Lq == Lk, got Lq={q_len}, Lk={k_len}.")
        tri = torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril()  # (Lq, Lk)
        mask = tri.expand(batch, 1, q_len, k_len) if mask is None else mask & tri
    return mask


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    key_valid: torch.Tensor | None = None,
    query_valid: torch.Tensor | None = None,
    causal: bool = False,
    bias: torch.Tensor | None = None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(d) + bias, masked) v over heads.

    q (B, H, Lq, d), k and v (B, H, Lk, d) -> (B, H, Lq, d). Masks as in the module
    docstring; ``dropout`` on the attention weights (pass 0 outside training).
    """
    b, _, lq, _ = q.shape
    lk = k.shape[2]
    allowed = attention_mask(b, lq, lk, key_valid=key_valid, causal=causal, device=q.device)
    empty = None
    if allowed is not None:
        empty = ~allowed.any(-1, keepdim=True)  # (B, 1, Lq, 1): rows with nothing to see
        allowed = allowed | empty  # open them so the softmax stays finite; zeroed below
    mask: torch.Tensor | None = allowed
    if bias is not None:
        mask = bias.to(q.dtype) if bias.dim() == 4 else bias.to(q.dtype).unsqueeze(0)
        if allowed is not None:
            mask = mask.masked_fill(~allowed, float("-inf"))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    if empty is not None:
        out = out.masked_fill(empty, 0.0)
    if query_valid is not None:
        out = out * query_valid[:, None, :, None].to(out.dtype)
    return out


class MultiHeadAttention(nn.Module):
    """Multi-head attention, per-head width ``dim // n_heads``: (B, Lq, D) -> (B, Lq, D).

    Parameters
    ----------
    dim: model width D (split into ``n_heads`` heads of D / n_heads).
    n_heads: H; must divide ``dim``.
    dropout: dropout on the attention weights while training.
    bias: biases on the q/k/v/output projections.
    """

    def __init__(self, dim: int, n_heads: int = 1, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if dim % n_heads:
            raise ConfigError(f"MultiHeadAttention: n_heads={n_heads} must divide dim={dim}.")
        self.dim, self.n_heads, self.head_dim = dim, n_heads, dim // n_heads
        self.query = nn.Linear(dim, dim, bias=bias)
        self.key = nn.Linear(dim, dim, bias=bias)
        self.value = nn.Linear(dim, dim, bias=bias)
        self.out = nn.Linear(dim, dim, bias=bias)
        self.dropout = dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, length, _ = x.shape
        return x.view(b, length, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, L, d)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        *,
        key_valid: torch.Tensor | None = None,
        query_valid: torch.Tensor | None = None,
        causal: bool = False,
        bias: torch.Tensor | None = None,
        rotary: nn.Module | None = None,
    ) -> torch.Tensor:
        """query (B, Lq, D); key/value (B, Lk, D), default = query (self-attention).

        Masks and ``bias`` as in ``scaled_dot_product_attention``; ``rotary`` (a
        ``recforge.nn.positional.RotaryEmbedding``) rotates q and k by position.
        Returns (B, Lq, D); rows of padded queries are 0 before the output projection's
        bias, and exactly 0 when ``query_valid`` is given (the bias is masked too).
        """
        key = query if key is None else key
        value = key if value is None else value
        q = self._heads(self.query(query))  # (B, H, Lq, d)
        k = self._heads(self.key(key))  # (B, H, Lk, d)
        v = self._heads(self.value(value))  # (B, H, Lk, d)
        if rotary is not None:
            q, k = rotary(q), rotary(k)
        out = scaled_dot_product_attention(
            q,
            k,
            v,
            key_valid=key_valid,
            query_valid=query_valid,
            causal=causal,
            bias=bias,
            dropout=self.dropout if self.training else 0.0,
        )
        b, _, lq, _ = out.shape
        out = self.out(out.transpose(1, 2).reshape(b, lq, self.dim))  # (B, Lq, D)
        if query_valid is not None:
            out = out * query_valid[..., None].to(out.dtype)
        return out
