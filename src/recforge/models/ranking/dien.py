"""DIEN (Zhou et al., 2019): interest extraction with a GRU, evolution with an AUGRU.

1. Interest extractor: h_1..h_L = GRU(e_1..e_L) over the behaviours (packed).
2. Auxiliary loss (training only): h_t must tell the next behaviour e_{t+1} from a sampled
   negative e⁻ (another real behaviour of the batch, so it follows the behaviour
   distribution and carries consistent attributes):
   L_aux = -mean_t[log σ(f(h_t, e_{t+1})) + log(1 - σ(f(h_t, e⁻)))], f an MLP.
3. Interest evolution: a_t = softmax_t(activation unit(h_t, q)), h' = AUGRU(h, a) (the
   update gate scaled by a_t); the final state is the evolved interest.

logit = MLP([flatten(fields), h'_L]); the trained loss is L_ctr + ``aux_weight`` · L_aux.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from recforge.data.features import Field
from recforge.models.ranking.history_base import HistoryInputs, HistoryRanker
from recforge.models.registry import register
from recforge.nn.mlp import MLP
from recforge.nn.recurrent import AUGRU, PackedRNN
from recforge.nn.target_attention import ActivationUnit


class DIENModule(nn.Module):
    """batch -> (B,) logits; ``forward_with_aux`` also gives the auxiliary loss."""

    def __init__(
        self,
        inputs: HistoryInputs,
        *,
        attention_hidden: Sequence[int],
        aux_hidden: Sequence[int],
        hidden: Sequence[int],
        activation: str,
        dropout: float,
    ) -> None:
        super().__init__()
        self.inputs = inputs
        d = inputs.item_dim
        self.extractor = PackedRNN(d, d, kind="gru")
        self.aux = MLP(2 * d, aux_hidden, activation="sigmoid", out_dim=1)
        self.attention = ActivationUnit(d, attention_hidden, activation="dice", softmax=True)
        self.evolution = AUGRU(d, d)
        in_dim = inputs.n_fields * inputs.embedding.dim + d
        self.mlp = MLP(in_dim, hidden, activation=activation, dropout=dropout, out_dim=1)

    def forward_with_aux(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.inputs(batch)
        interests, _ = self.extractor(x.seq, x.lengths)  # (B, L, d)
        aux = self._aux_loss(interests, x.seq, x.mask) if self.training else interests.new_zeros(())
        _, scores = self.attention(x.query, interests, x.mask)  # (B, L), softmax over real
        evolved = self.evolution(interests, scores, x.lengths)  # (B, d)
        logit = self.mlp(torch.cat([x.fields.flatten(1), evolved], dim=1)).squeeze(-1)
        return logit, aux

    def forward(self, batch: dict) -> torch.Tensor:
        return self.forward_with_aux(batch)[0]

    def _aux_loss(self, h: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """h, seq (B, L, d), mask (B, L) -> scalar next-behaviour loss (0 without pairs)."""
        pair = mask[:, 1:]  # (B, L-1): both t and t+1 are real (left-aligned)
        real = seq[mask]  # (N, d) every real behaviour of the batch
        if not bool(pair.any()) or real.shape[0] < 2:
            return h.new_zeros(())
        state = h[:, :-1][pair]  # (M, d)
        pos = seq[:, 1:][pair]  # (M, d)
        neg = real[torch.randint(real.shape[0], (state.shape[0],), device=h.device)]
        logits = self.aux(torch.cat([torch.cat([state, pos], 1), torch.cat([state, neg], 1)]))
        target = torch.cat([torch.ones(len(state)), torch.zeros(len(state))]).to(logits)
        return F.binary_cross_entropy_with_logits(logits.squeeze(-1), target)


@register("dien")
class DIEN(HistoryRanker):
    """DIEN. Own hyperparameters: ``aux_weight`` (weight of the auxiliary loss; 0 turns it
    off), ``attention_hidden``, ``aux_hidden`` (the auxiliary net's widths, the paper's
    100, 50), ``hidden`` (MLP widths), ``activation``, ``dropout``; ``history``,
    ``history_len`` (see ``HistoryRanker``); shared ones: see ``TorchRanker``. The GRU and
    AUGRU are as wide as one embedded behaviour."""

    smoke_params: ClassVar[dict[str, Any]] = {
        **HistoryRanker.smoke_params,
        "attention_hidden": (8,),
        "aux_hidden": (8,),
        "hidden": (8,),
    }

    def __init__(
        self,
        *,
        aux_weight: float = 1.0,
        attention_hidden: Sequence[int] = (80, 40),
        aux_hidden: Sequence[int] = (100, 50),
        hidden: Sequence[int] = (200, 80),
        activation: str = "dice",
        dropout: float = 0.0,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self.aux_weight = aux_weight
        self.attention_hidden = attention_hidden
        self.aux_hidden = aux_hidden
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout

    def build_module(self, fields: Sequence[Field]) -> nn.Module:
        return DIENModule(
            self.inputs(fields),
            attention_hidden=tuple(self.attention_hidden),
            aux_hidden=tuple(self.aux_hidden),
            hidden=tuple(self.hidden),
            activation=self.activation,
            dropout=self.dropout,
        )

    def training_loss(self, module: nn.Module, x: dict, y: torch.Tensor) -> torch.Tensor:
        logits, aux = module.forward_with_aux(x)
        return self.loss_value(logits, y) + float(self.aux_weight) * aux
