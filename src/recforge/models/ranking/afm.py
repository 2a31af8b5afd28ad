"""AFM (Xiao et al. 2017): attention-weighted pairwise interactions.

logit = linear(x) + pᵀ Σ_{i<j} a_ij (e_i ⊙ e_j), a = softmax over pairs of an attention MLP;
the first-order weights are an extra column of the embedding table (one lookup for both).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from recforge.data.features import Field
from recforge.models.ranking.torch_base import NUMERIC_MODES, TorchRanker
from recforge.models.registry import register
from recforge.nn.attention import AttentionalPooling
from recforge.nn.embedding import FeatureEmbedding


class AFMModule(nn.Module):
    """batch -> (B,) logits."""

    def __init__(self, embedding: FeatureEmbedding, pooling: AttentionalPooling) -> None:
        super().__init__()
        self.embedding, self.pooling = embedding, pooling  # embedding: linear=True
        self.proj = nn.Linear(embedding.dim, 1, bias=False)  # p

    def forward(self, batch: dict) -> torch.Tensor:
        e, first = self.embedding.forward_with_linear(batch)  # (B, F, D), (B,)
        pooled, _ = self.pooling(e)  # (B, D)
        return first + self.proj(pooled).squeeze(-1)  # (B,)


@register("afm")
class AFM(TorchRanker):
    """AFM. Own hyperparameters: ``attention_dim`` (width of the attention network),
    ``attention_dropout`` (on the attention weights). Shared ones: see ``TorchRanker``
    (with numeric="dense" the numeric fields are in the first-order term only)."""

    numeric_modes = NUMERIC_MODES
    numeric_default = "dense"  # dense: validation AUC at or above 'field' (docs/BENCHMARKS.md)

    smoke_params: ClassVar[dict[str, Any]] = {
        "embedding_dim": 4,
        "attention_dim": 4,
        "epochs": 2,
        "batch_size": 64,
    }

    def __init__(
        self, *, attention_dim: int = 16, attention_dropout: float = 0.0, **shared: Any
    ) -> None:
        super().__init__(**shared)
        self.attention_dim = attention_dim
        self.attention_dropout = attention_dropout

    def build_module(self, fields: Sequence[Field]) -> nn.Module:
        emb = self.feature_embedding(fields, linear=True)
        pooling = AttentionalPooling(
            emb.n_fields, emb.dim, self.attention_dim, self.attention_dropout
        )
        return AFMModule(emb, pooling)
