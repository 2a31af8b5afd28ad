"""Pooling a padded sequence of embeddings (a user's history) into one vector.

Shared by the user towers of DSSM, YouTube-DNN and SimpleX. Input is the embedded history
``(B, L, D)`` and a padding mask ``(B, L)`` (True = a real item); the output is ``(B, D)``.
A user with an empty history pools to the zero vector.
"""

from __future__ import annotations

import torch
from torch import nn

from recforge.exceptions import ConfigError

POOLING_MODES = ("mean", "sum", "attention")


class SequencePooling(nn.Module):
    """Mean, sum or attention pooling of a padded sequence.

    ``attention`` is additive self-attention with a learned context vector:
    ``a_l = softmax_l(c^T tanh(W h_l + b))`` over the real positions, ``out = sum_l a_l h_l``.
    """

    def __init__(self, dim: int, mode: str = "mean", attention_dim: int = 32) -> None:
        super().__init__()
        if mode not in POOLING_MODES:
            raise ConfigError(f"pooling mode {mode!r} is not one of {POOLING_MODES}.")
        self.mode = mode
        if mode == "attention":
            self.proj = nn.Linear(dim, attention_dim)
            self.context = nn.Parameter(torch.randn(attention_dim) * 0.1)

    def forward(self, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """seq (B, L, D), mask (B, L) bool -> (B, D)."""
        m = mask.to(seq.dtype).unsqueeze(-1)  # (B, L, 1)
        if self.mode == "sum":
            return (seq * m).sum(1)
        if self.mode == "mean":
            return (seq * m).sum(1) / m.sum(1).clamp(min=1.0)
        logits = torch.tanh(self.proj(seq)) @ self.context  # (B, L)
        logits = logits.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(logits, dim=1)
        weights = torch.nan_to_num(weights, nan=0.0)  # rows with no real item
        return (weights.unsqueeze(-1) * seq).sum(1)  # (B, D)
