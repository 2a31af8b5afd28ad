"""DIN (Zhou et al., 2018): the candidate attends over the user's behaviours.

u = Σ_l a(e_l, q) · e_l, with a(·) DIN's activation unit (an MLP over [e_l, q, e_l - q,
e_l ⊙ q], Dice), its weights softmax-normalised over the behaviours by default (the paper
leaves that out; on Amazon Beauty it gave validation AUC 0.7940 against 0.7755 without,
docs/BENCHMARKS.md "CTR with behaviour histories"); logit = MLP_Dice([flatten(fields), u]),
where the fields hold the candidate and every other feature and q, e_l are the candidate and the
behaviours embedded over the paired target/history columns (``HistoryInputs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from recforge.data.features import Field
from recforge.models.ranking.history_base import HistoryInputs, HistoryRanker
from recforge.models.registry import register
from recforge.nn.mlp import MLP
from recforge.nn.target_attention import ActivationUnit


class DINModule(nn.Module):
    """batch -> (B,) logits."""

    def __init__(
        self,
        inputs: HistoryInputs,
        *,
        attention_hidden: Sequence[int],
        attention_activation: str,
        attention_softmax: bool,
        hidden: Sequence[int],
        activation: str,
        dropout: float,
    ) -> None:
        super().__init__()
        self.inputs = inputs
        d = inputs.item_dim
        self.attention = ActivationUnit(
            d, attention_hidden, activation=attention_activation, softmax=attention_softmax
        )
        in_dim = inputs.n_fields * inputs.embedding.dim + d
        self.mlp = MLP(in_dim, hidden, activation=activation, dropout=dropout, out_dim=1)

    def forward(self, batch: dict) -> torch.Tensor:
        x = self.inputs(batch)
        interest, _ = self.attention(x.query, x.seq, x.mask)  # (B, P*D)
        return self.mlp(torch.cat([x.fields.flatten(1), interest], dim=1)).squeeze(-1)


@register("din")
class DIN(HistoryRanker):
    """DIN. Own hyperparameters: ``attention_hidden`` (activation unit widths, the paper's
    80, 40), ``attention_activation``, ``attention_softmax`` (normalise the weights over
    the behaviours; on by default, chosen on validation; off in the paper), ``hidden``
    (MLP widths, the paper's 200, 80), ``activation`` ("dice"),
    ``dropout``; ``history``, ``history_len`` (see ``HistoryRanker``); shared ones: see
    ``TorchRanker``."""

    smoke_params: ClassVar[dict[str, Any]] = {
        **HistoryRanker.smoke_params,
        "attention_hidden": (8,),
        "hidden": (8,),
    }

    def __init__(
        self,
        *,
        attention_hidden: Sequence[int] = (80, 40),
        attention_activation: str = "dice",
        attention_softmax: bool = True,
        hidden: Sequence[int] = (200, 80),
        activation: str = "dice",
        dropout: float = 0.0,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self.attention_hidden = attention_hidden
        self.attention_activation = attention_activation
        self.attention_softmax = attention_softmax
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout

    def build_module(self, fields: Sequence[Field]) -> nn.Module:
        return DINModule(
            self.inputs(fields),
            attention_hidden=tuple(self.attention_hidden),
            attention_activation=self.attention_activation,
            attention_softmax=bool(self.attention_softmax),
            hidden=tuple(self.hidden),
            activation=self.activation,
            dropout=self.dropout,
        )
