"""PLE (Tang et al. 2020, "Progressive Layered Extraction"): multi-task ranking with
task-specific and shared experts, extracted level by level.

Shared field embeddings E (B, F, D) -> x = flatten(E) -> ``recforge.nn.moe.PLE``
(``n_levels`` CGC levels: per task ``n_specific`` own experts, ``n_shared`` shared experts;
task t's gate sees only its own and the shared experts, so a task can keep features the
other task would wash out) -> a tower per task -> logits (B, T).

Training, validation (per-task AUC/logloss) and persistence are ``MultiTaskRanker``'s.

Usage::

    model = PLERanker(n_levels=2).fit(frame, label=["click", "conversion"], valid=valid)
    p = model.predict_proba(frame)        # (n, 2): columns in the order of ``tasks_``
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import nn

from recforge.data.features import Field
from recforge.models.ranking.mmoe import MMoEModule
from recforge.models.ranking.multitask import MultiTaskRanker
from recforge.models.registry import register
from recforge.nn.moe import PLE


@register("ple")
class PLERanker(MultiTaskRanker):
    """Multi-task ranker with progressive layered extraction. Own hyperparameters:
    ``n_levels`` (CGC levels; 1 = CGC), ``n_specific`` (experts per task and level),
    ``n_shared`` (shared experts per level), ``expert_hidden`` (the last width is the expert
    output), ``tower_hidden``, ``dropout``; ``task_weights`` and the shared ones: see
    ``MultiTaskRanker`` / ``TorchRanker``."""

    smoke_params: ClassVar[dict[str, Any]] = {
        "embedding_dim": 4,
        "n_levels": 2,
        "expert_hidden": (8,),
        "tower_hidden": (4,),
        "epochs": 2,
        "batch_size": 64,
    }

    def __init__(
        self,
        *,
        n_levels: int = 2,
        n_specific: int = 1,
        n_shared: int = 1,
        expert_hidden: Sequence[int] = (256, 128),
        tower_hidden: Sequence[int] = (64,),
        dropout: float = 0.0,
        **shared: Any,
    ) -> None:
        super().__init__(**shared)
        self.n_levels = n_levels
        self.n_specific = n_specific
        self.n_shared = n_shared
        self.expert_hidden = expert_hidden
        self.tower_hidden = tower_hidden
        self.dropout = dropout

    def build_module(self, fields: Sequence[Field]) -> nn.Module:
        emb = self.feature_embedding(fields)
        ple = PLE(
            emb.n_fields * emb.dim,
            len(self.tasks_),
            n_levels=self.n_levels,
            n_specific=self.n_specific,
            n_shared=self.n_shared,
            expert_hidden=tuple(self.expert_hidden),
            tower_hidden=tuple(self.tower_hidden),
            dropout=self.dropout,
        )
        return MMoEModule(emb, ple)
