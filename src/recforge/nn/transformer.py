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
    ) -> torch.Tensor:
        """x (B, L, D); valid (B, L) bool (True = real position) -> (B, L, D), 0 where padded."""

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
        return x


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
    ) -> torch.Tensor:
        """x (B, L, D); valid (B, L) bool -> (B, L, D), 0 where padded."""
        for block in self.blocks:
            x = block(x, valid, causal=causal, bias=bias, rotary=rotary)
        if self.final_norm is not None:
            x = self.final_norm(x)
            if valid is not None:
                x = x * valid[..., None].to(x.dtype)
        return x
