"""Target attention: one query (a candidate item, a decoder state) over a padded sequence.

Every layer here maps ``query (B, Dq)``, ``keys (B, L, Dk)`` and a padding mask
``(B, L)`` (True = a real position) to ``(pooled (B, Dv), weights (B, L))``; values are the
keys unless given. A padded position gets weight exactly 0 and a row with no real position
pools to the zero vector (never NaN).

* ``AdditiveAttention`` (Bahdanau et al., 2015): ``s_l = vᵀ tanh(W_q q + W_k k_l)``.
* ``LuongAttention`` (Luong et al., 2015): ``s_l = qᵀ k_l`` ("dot", needs Dq = Dk) or
  ``s_l = qᵀ W k_l`` ("general"); optionally scaled by ``1/sqrt(Dk)``.
* ``ActivationUnit`` (DIN, Zhou et al., 2018): ``s_l = MLP([k_l, q, k_l - q, k_l ⊙ q])``
  with Dice or PReLU; by default the scores are NOT normalised (the paper keeps the
  intensity of a user's interest: ``pooled = Σ_l s_l k_l``), ``softmax=True`` normalises.

The first two are normalised with a masked softmax (``masked_softmax``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recforge.exceptions import ConfigError
from recforge.nn.mlp import MLP


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis of ``scores`` (B, L) where ``mask`` (B, L) is True; masked
    positions get 0 and a row without any True position is all zeros (not NaN)."""
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.nan_to_num(weights, nan=0.0) * mask  # (B, L)


def _pool(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(B, L) weights, (B, L, D) values -> (B, D)."""
    return torch.bmm(weights.unsqueeze(1), values).squeeze(1)


class AdditiveAttention(nn.Module):
    """Bahdanau attention: ``softmax_l(vᵀ tanh(W_q q + W_k k_l))``.

    Parameters
    ----------
    query_dim, key_dim: Dq, Dk.
    attention_dim: width of the hidden layer (W_q, W_k: -> attention_dim; v: -> 1).
    """

    def __init__(self, query_dim: int, key_dim: int, attention_dim: int = 32) -> None:
        super().__init__()
        self.w_query = nn.Linear(query_dim, attention_dim, bias=False)
        self.w_key = nn.Linear(key_dim, attention_dim)
        self.v = nn.Linear(attention_dim, 1, bias=False)

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        mask: torch.Tensor,
        values: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, Dq), keys (B, L, Dk), mask (B, L) -> ((B, Dv), weights (B, L))."""
        hidden = torch.tanh(self.w_query(query).unsqueeze(1) + self.w_key(keys))  # (B, L, A)
        weights = masked_softmax(self.v(hidden).squeeze(-1), mask)  # (B, L)
        return _pool(weights, keys if values is None else values), weights


LUONG_SCORES = ("dot", "general")


class LuongAttention(nn.Module):
    """Luong (multiplicative) attention: ``softmax_l(qᵀ k_l)`` or ``softmax_l(qᵀ W k_l)``.

    Parameters
    ----------
    query_dim, key_dim: Dq, Dk ("dot" needs them equal).
    score: "dot" or "general".
    scaled: divide the scores by sqrt(Dk) (as in scaled dot-product attention).
    """

    def __init__(
        self, query_dim: int, key_dim: int, score: str = "general", *, scaled: bool = False
    ) -> None:
        super().__init__()
        if score not in LUONG_SCORES:
            raise ConfigError(f"LuongAttention: score={score!r}; choose one of {LUONG_SCORES}.")
        if score == "dot" and query_dim != key_dim:
            raise ConfigError(
                f"LuongAttention: score='dot' needs query_dim == key_dim, got "
                f"{query_dim} and {key_dim}; use score='general'."
            )
        self.score = score
        self.w = nn.Linear(key_dim, query_dim, bias=False) if score == "general" else None
        self.scale = key_dim**-0.5 if scaled else 1.0

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        mask: torch.Tensor,
        values: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, Dq), keys (B, L, Dk), mask (B, L) -> ((B, Dv), weights (B, L))."""
        k = keys if self.w is None else self.w(keys)  # (B, L, Dq)
        scores = torch.bmm(k, query.unsqueeze(-1)).squeeze(-1) * self.scale  # (B, L)
        weights = masked_softmax(scores, mask)
        return _pool(weights, keys if values is None else values), weights


class ActivationUnit(nn.Module):
    """DIN's local activation unit over a behaviour sequence.

    Parameters
    ----------
    dim: D, the width of the query and of every key (the candidate item and the
        behaviours are embedded alike).
    hidden: widths of the scoring MLP (the paper: 80, 40).
    activation: "dice" (the paper), "prelu", or any ``nn.mlp`` activation.
    softmax: normalise the scores over the real positions (off in the paper).

    ``forward`` returns the pooled vector and the scores (B, L); without softmax the scores
    are the raw MLP outputs times the mask.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (80, 40),
        *,
        activation: str = "dice",
        softmax: bool = False,
    ) -> None:
        super().__init__()
        self.mlp = MLP(4 * dim, tuple(hidden), activation=activation, out_dim=1)
        self.softmax = softmax

    def scores(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """query (B, D), keys (B, L, D) -> unmasked scores (B, L)."""
        q = query.unsqueeze(1).expand_as(keys)  # (B, L, D)
        feats = torch.cat([keys, q, keys - q, keys * q], dim=-1)  # (B, L, 4D)
        return self.mlp(feats).squeeze(-1)

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        mask: torch.Tensor,
        values: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, D), keys (B, L, D), mask (B, L) -> ((B, Dv), weights (B, L)).

        The MLP runs on the real positions only (gathered, then scattered back), so a
        short history costs what its length costs and padding never enters Dice's batch
        statistics."""
        rows, cols = mask.nonzero(as_tuple=True)  # (N,) each: the real positions
        k, q = keys[rows, cols], query[rows]  # (N, D)
        real = self.mlp(torch.cat([k, q, k - q, k * q], dim=-1)).squeeze(-1)  # (N,)
        s = keys.new_zeros(mask.shape).index_put((rows, cols), real)  # (B, L), 0 at padding
        weights = masked_softmax(s, mask) if self.softmax else s
        return _pool(weights, keys if values is None else values), weights
