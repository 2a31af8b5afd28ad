"""MMoE (Ma et al. 2018): one model, several binary labels (click, like, finish, ...).

Shared field embeddings E (B, F, D) -> x = flatten(E) -> ``recforge.nn.moe.MMoE``: shared
experts, a softmax gate per task, a tower per task -> logits (B, T).

Training, validation (per-task AUC/logloss), the label list and persistence are
``MultiTaskRanker``'s (``recforge.models.ranking.multitask``), shared with PLE and ESMM.

Usage::

    model = MMoERanker(n_experts=4).fit(frame, label=["click", "like"], valid=valid)
    p = model.predict_proba(frame)        # (n, 2): columns in the order of ``tasks_``

``predict_proba`` returns (n, T) for T > 1 tasks and (n,) for a single label.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from recforge.data.features import Field
from recforge.models.ranking.multitask import MultiTaskRanker
from recforge.models.registry import register
from recforge.nn.embedding import FeatureEmbedding
from recforge.nn.moe import MMoE


class MMoEModule(nn.Module):
    """batch -> flattened field embeddings -> a mixture of experts (``MMoE`` or ``PLE``)
    -> logits (B, T)."""

    def __init__(self, embedding: FeatureEmbedding, moe: nn.Module) -> None:
        super().__init__()
        self.embedding, self.moe = embedding, moe

    def forward(self, batch: dict) -> torch.Tensor:
        return self.moe(self.embedding(batch).flatten(1))  # (B, F*D) -> (B, T)


@register("mmoe")
class MMoERanker(MultiTaskRanker):
    """Multi-task ranker. Own hyperparameters: ``n_experts``, ``expert_hidden`` (the last
    width is the expert output), ``tower_hidden``, ``dropout``, ``task_weights`` (one weight
    per label, None = all 1). Shared ones: see ``TorchRanker`` (``sampling`` must stay
    "none": re-sampling is defined for one label). ``fit`` takes ``label`` as a column name
    or a list of them; ``tasks_`` keeps the list (``MultiTaskRanker``)."""

    smoke_params: ClassVar[dict[str, Any]] = {
        "embedding_dim": 4,
        "n_experts": 2,
        "expert_hidden": (8,),
        "tower_hidden": (4,),
        "epochs": 2,
        "batch_size": 64,
    }

    def __init__(
        self,
        *,
        n_experts: int = 4,
        expert_hidden: Sequence[int] = (256, 128),
        tower_hidden: Sequence[int] = (64,),
        dropout: float = 0.0,
        **shared: Any,
    ) -> None:
        super().__init__(**shared)
        self.n_experts = n_experts
        self.expert_hidden = expert_hidden
        self.tower_hidden = tower_hidden
        self.dropout = dropout

    # ------------------------------------------------------------------ the network
    def build_module(self, fields: Sequence[Field]) -> nn.Module:
        emb = self.feature_embedding(fields)
        moe = MMoE(
            emb.n_fields * emb.dim,
            len(self.tasks_),
            n_experts=self.n_experts,
            expert_hidden=tuple(self.expert_hidden),
            tower_hidden=tuple(self.tower_hidden),
            dropout=self.dropout,
        )
        return MMoEModule(emb, moe)
