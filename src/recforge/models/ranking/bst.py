"""BST, Behavior Sequence Transformer (Chen et al., 2019): self-attention over the
behaviours and the candidate together.

s = [q, e_1, ..., e_L] + P[pos], pos = 0 for the candidate and, for a behaviour, its
distance from the candidate (1 = the most recent; BST's "time" position);
h = Transformer(s) with padding masked; logit = MLP([flatten(fields), h_0, mean_l h_l])
(the candidate's output and the mean over the real behaviours' outputs; the paper
flattens every position, which ties the MLP to one padded length).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from recforge.data.features import Field
from recforge.exceptions import ConfigError
from recforge.models.ranking.history_base import HistoryInputs, HistoryRanker
from recforge.models.registry import register
from recforge.nn.mlp import MLP
from recforge.nn.positional import LearnedPositions
from recforge.nn.transformer import TransformerBlock


class BSTModule(nn.Module):
    """batch -> (B,) logits."""

    def __init__(
        self,
        inputs: HistoryInputs,
        *,
        max_len: int,
        n_layers: int,
        n_heads: int,
        dropout: float,
        hidden: Sequence[int],
        activation: str,
    ) -> None:
        super().__init__()
        self.inputs = inputs
        d = inputs.item_dim
        if d % n_heads:
            raise ConfigError(
                f"BST: n_heads={n_heads} must divide the behaviour width {d} "
                f"(embedding_dim x {len(inputs.pairs)} history columns)."
            )
        self.positions = LearnedPositions(max_len + 1, d)
        self.blocks = nn.ModuleList(
            TransformerBlock(d, n_heads, dropout=dropout, activation="relu", norm_first=False)
            for _ in range(n_layers)
        )
        in_dim = inputs.n_fields * inputs.embedding.dim + 2 * d
        self.mlp = MLP(in_dim, hidden, activation=activation, dropout=dropout, out_dim=1)

    def forward(self, batch: dict) -> torch.Tensor:
        x = self.inputs(batch)
        b, length = x.mask.shape
        seq = torch.cat([x.query.unsqueeze(1), x.seq], dim=1)  # (B, 1+L, d)
        valid = torch.cat([x.mask.new_ones(b, 1), x.mask], dim=1)  # (B, 1+L)
        steps = torch.arange(length, device=seq.device)
        recency = (x.lengths.unsqueeze(1) - steps).clamp(min=0) * x.mask  # (B, L): 1 = last
        pos = torch.cat([recency.new_zeros(b, 1), recency], dim=1)  # (B, 1+L)
        h = self.positions(seq, pos)
        for block in self.blocks:
            h = block(h, valid)  # (B, 1+L, d), 0 where padded
        target = h[:, 0]  # (B, d)
        m = x.mask.unsqueeze(-1).to(h.dtype)
        behaviours = (h[:, 1:] * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, d)
        z = torch.cat([x.fields.flatten(1), target, behaviours], dim=1)
        return self.mlp(z).squeeze(-1)


@register("bst")
class BST(HistoryRanker):
    """BST. Own hyperparameters: ``n_layers`` (Transformer blocks, the paper's best: 1),
    ``n_heads`` (must divide embedding_dim x number of history columns), ``dropout`` (in
    the blocks and the MLP), ``hidden`` (MLP widths), ``activation`` (the paper: leaky
    ReLU); ``history``, ``history_len`` (see ``HistoryRanker``); shared ones: see
    ``TorchRanker``."""

    smoke_params: ClassVar[dict[str, Any]] = {**HistoryRanker.smoke_params, "hidden": (8,)}

    def __init__(
        self,
        *,
        n_layers: int = 1,
        n_heads: int = 2,
        dropout: float = 0.1,
        hidden: Sequence[int] = (200, 80),
        activation: str = "leaky_relu",
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.dropout = dropout
        self.hidden = hidden
        self.activation = activation

    def build_module(self, fields: Sequence[Field]) -> nn.Module:
        return BSTModule(
            self.inputs(fields),
            max_len=int(self.history_len),
            n_layers=max(1, int(self.n_layers)),
            n_heads=int(self.n_heads),
            dropout=float(self.dropout),
            hidden=tuple(self.hidden),
            activation=self.activation,
        )
