"""Positional information for sequence encoders.

Absolute, added to the item embeddings (B, L, D):

* ``SinusoidalPositions`` (Vaswani et al. 2017): fixed sin/cos of geometric frequencies;
* ``LearnedPositions`` (BERT, SASRec): one trained vector per position.

Relative, inside attention:

* ``RotaryEmbedding`` (RoFormer, Su et al. 2021): rotates query and key pairs of channels
  by an angle proportional to the position, so that q·k depends on the offset only;
* ``RelativePositionBias`` (Shaw et al. 2018 / T5 style): one learned scalar per head and
  clipped offset ``j - i``, added to the attention logits.

Positions are 0..L-1 over the (padded) array by default; pass ``positions`` (B, L) to
number them otherwise (for example from the end of a left-aligned sequence).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recforge.exceptions import ConfigError


def _positions(x: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """(L,) 0..L-1 or the given (B, L) positions, as int64."""
    if positions is not None:
        return positions.long()
    return torch.arange(x.shape[-2], device=x.device)


class SinusoidalPositions(nn.Module):
    """x (B, L, D) -> x + PE, ``PE[p, 2i] = sin(p / 10000^(2i/D))``, ``PE[p, 2i+1] = cos(..)``."""

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]  # (P, 1)
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(1e4) / dim))
        pe = torch.zeros(max_len, dim)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
        self.register_buffer("pe", pe, persistent=False)
        self.max_len = max_len

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        p = _positions(x, positions)
        _check_len(p, self.max_len, type(self).__name__)
        return x + self.pe[p]


class LearnedPositions(nn.Module):
    """x (B, L, D) -> x + P[pos], P a trained (max_len, D) table."""

    def __init__(self, max_len: int, dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.table = nn.Embedding(max_len, dim)
        nn.init.normal_(self.table.weight, std=init_std)
        self.max_len = max_len

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        p = _positions(x, positions)
        _check_len(p, self.max_len, type(self).__name__)
        return x + self.table(p)


class RotaryEmbedding(nn.Module):
    """Rotates heads (B, H, L, d) by position: channel pair (2i, 2i+1) turns by
    ``p * 10000^(-2i/d)``. Applied to q and k, their dot product depends on the offset only.
    """

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ConfigError(f"RotaryEmbedding: head_dim must be even, got {head_dim}.")
        inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (d/2,)
        angles = torch.arange(max_len, dtype=torch.float32)[:, None] * inv  # (P, d/2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        self.max_len = max_len

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, H, L, d) -> rotated (B, H, L, d); positions (B, L) or None (0..L-1)."""
        p = _positions(x, positions)
        _check_len(p, self.max_len, type(self).__name__)
        cos, sin = self.cos[p], self.sin[p]  # (L, d/2) or (B, L, d/2)
        if cos.dim() == 3:
            cos, sin = cos[:, None], sin[:, None]  # (B, 1, L, d/2)
        x1, x2 = x[..., 0::2], x[..., 1::2]  # (B, H, L, d/2)
        out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (B, H, L, d/2, 2)
        return out.flatten(-2).to(x.dtype)


class RelativePositionBias(nn.Module):
    """A learned bias per head and offset ``j - i`` clipped to ``[-max_distance,
    max_distance]``: ``forward(L)`` -> (H, L, L), to pass as attention ``bias``."""

    def __init__(self, n_heads: int, max_distance: int = 16) -> None:
        super().__init__()
        self.max_distance = max_distance
        self.table = nn.Embedding(2 * max_distance + 1, n_heads)
        nn.init.zeros_(self.table.weight)

    def forward(self, length: int) -> torch.Tensor:
        pos = torch.arange(length, device=self.table.weight.device)
        offset = (pos[None, :] - pos[:, None]).clamp(-self.max_distance, self.max_distance)
        return self.table(offset + self.max_distance).permute(2, 0, 1)  # (L, L, H) -> (H, L, L)


def _check_len(p: torch.Tensor, max_len: int, where: str) -> None:
    if p.numel() and int(p.max()) >= max_len:
        raise ConfigError(
            f"{where}: position {int(p.max())} is beyond max_len={max_len}; raise max_len or "
            f"truncate the sequences."
        )
