"""The Transformer block and a stack of them.

``TransformerBlock`` (Vaswani et al. 2017) with a switch between the two layer-norm
placements:

* Post-LN (the original, BERT, SASRec): ``x = LN(x + Drop(Attn(x)))``,
  ``x = LN(x + Drop(FFN(x)))``;
* Pre-LN (GPT-2, Xiong et al. 2020; steadier with deeper stacks or larger learning rates):
  ``x = x + Drop(Attn(LN(x)))``, ``x = x + Drop(FFN(LN(x)))``; ``TransformerEncoder``
  then ends with one more LN.

FFN: ``Linear(D, F) -> ReLU | GELU -> Dropout -> Linear(F, D)``. Padded positions (where
``valid`` is False) are set to 0 after every block, so they carry nothing forward; the
attention masks (``recforge.nn.multihead``) keep them from being attended to.

``last_only=True`` (inference for a next-item query, where only the newest position's
output is read): the last block computes its query, attention output and FFN for the last
position only, its keys and values still from every position; the result (B, 1, D) equals
the last position of the full output. With a causal mask that position sees every key
anyway. Under rotary positions the full block runs and is sliced (q would be renumbered).
"""

from __future__ import annotations

import torch
from torch import nn

from recforge.exceptions import ConfigError
from recforge.nn.multihead import MultiHeadAttention

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class FeedForward(nn.Module):
    """Position-wise FFN: (..., D) -> (..., D)."""

    def __init__(self, dim: int, hidden: int, activation: str = "gelu", dropout: float = 0.0):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"FeedForward: activation={activation!r}; choose one of {sorted(ACTIVATIONS)}."
            )
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            ACTIVATIONS[activation](),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Self-attention + FFN with residuals: (B, L, D) -> (B, L, D).

    Parameters
    ----------
    dim: model width D.
    n_heads: attention heads (D / n_heads each).
    ffn_dim: FFN hidden width (default 4 D).
    dropout: on the attention output, the FFN and the residual branches.
    attention_dropout: on the attention weights (default = dropout).
    activation: "relu" or "gelu" in the FFN.
    norm_first: Pre-LN when True, Post-LN when False.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int = 1,
        ffn_dim: int | None = None,
        dropout: float = 0.1,
        attention_dropout: float | None = None,
        activation: str = "gelu",
        norm_first: bool = True,
    ) -> None:
        super().__init__()
        att_drop = dropout if attention_dropout is None else attention_dropout
        self.attention = MultiHeadAttention(dim, n_heads, dropout=att_drop)
        self.ffn = FeedForward(dim, ffn_dim or 4 * dim, activation, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(
        self,
        x: torch.Tensor,
        valid: torch.Tensor | None = None,
        *,
        causal: bool = False,
        bias: torch.Tensor | None = None,
        rotary: nn.Module | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """x (B, L, D); valid (B, L) bool (True = real position) -> (B, L, D), 0 where padded;
        (B, 1, D), the last position only, with ``last_only``."""
        if last_only and rotary is None:
            return self._forward_last(x, valid, bias)

        def attend(h: torch.Tensor) -> torch.Tensor:
            return self.attention(
                h, key_valid=valid, query_valid=valid, causal=causal, bias=bias, rotary=rotary
            )

        if self.norm_first:
            x = x + self.drop(attend(self.norm1(x)))
            x = x + self.drop(self.ffn(self.norm2(x)))
        else:
            x = self.norm1(x + self.drop(attend(x)))
            x = self.norm2(x + self.drop(self.ffn(x)))
        if valid is not None:
            x = x * valid[..., None].to(x.dtype)
        return x[:, -1:] if last_only else x

    def _forward_last(
        self, x: torch.Tensor, valid: torch.Tensor | None, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """The block's output at the last position (B, 1, D), attending over all of x."""
        q_valid = None if valid is None else valid[:, -1:]  # (B, 1)
        bias = None if bias is None else bias[..., -1:, :]  # (.., H, 1, Lk)

        def attend(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
            return self.attention(query, keys, key_valid=valid, query_valid=q_valid, bias=bias)

        last = x[:, -1:]  # (B, 1, D)
        if self.norm_first:
            h = self.norm1(x)
            y = last + self.drop(attend(h[:, -1:], h))
            y = y + self.drop(self.ffn(self.norm2(y)))
        else:
            y = self.norm1(last + self.drop(attend(last, x)))
            y = self.norm2(y + self.drop(self.ffn(y)))
        if q_valid is not None:
            y = y * q_valid[..., None].to(y.dtype)
        return y


class TransformerEncoder(nn.Module):
    """``n_layers`` blocks (plus a final LN when Pre-LN): (B, L, D) -> (B, L, D).

    Parameters as in ``TransformerBlock``; ``n_layers`` blocks of them.
    """

    def __init__(
        self,
        dim: int,
        n_layers: int = 2,
        n_heads: int = 1,
        ffn_dim: int | None = None,
        dropout: float = 0.1,
        attention_dropout: float | None = None,
        activation: str = "gelu",
        norm_first: bool = True,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ConfigError(f"TransformerEncoder: n_layers must be >= 1, got {n_layers}.")
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim, n_heads, ffn_dim, dropout, attention_dropout, activation, norm_first
            )
            for _ in range(n_layers)
        )
        self.final_norm = nn.LayerNorm(dim) if norm_first else None

    def forward(
        self,
        x: torch.Tensor,
        valid: torch.Tensor | None = None,
        *,
        causal: bool = False,
        bias: torch.Tensor | None = None,
        rotary: nn.Module | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """x (B, L, D); valid (B, L) bool -> (B, L, D), 0 where padded; with ``last_only``
        the last position only, (B, 1, D) (see the module docstring)."""
        last = len(self.blocks) - 1
        for n, block in enumerate(self.blocks):
            only = last_only and n == last
            x = block(x, valid, causal=causal, bias=bias, rotary=rotary, last_only=only)
        if self.final_norm is not None:
            x = self.final_norm(x)
            if valid is not None:
                x = x * (valid[:, -1:] if last_only else valid)[..., None].to(x.dtype)
        return x
