"""Logistic regression over one-hot fields: the first-order baseline every CTR model beats."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import nn

from recforge.data.features import Field
from recforge.models.ranking.torch_base import NUMERIC_MODES, TorchRanker
from recforge.models.registry import register


@register("lr")
class LogisticRegression(TorchRanker):
    """logit = bias + sum of one weight per categorical value / multi value (pooled) /
    numeric field (times its value). No own hyperparameters; see ``TorchRanker``
    (``l2`` is the usual regulariser; ``embedding_dim`` is unused; ``numeric`` "field" and
    "dense" are the same model here: one weight per numeric field)."""

    numeric_modes = NUMERIC_MODES

    smoke_params: ClassVar[dict[str, Any]] = {"epochs": 2, "batch_size": 64, "lr": 1e-2}

    def __init__(self, **shared: Any) -> None:
        super().__init__(**shared)

    def build_module(self, fields: Sequence[Field]) -> nn.Module:
        return self.linear_embedding(fields)  # batch -> (B,)
