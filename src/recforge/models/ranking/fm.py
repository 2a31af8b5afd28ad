"""Factorization machines: FM (Rendle, 2010) and field-aware FM (Juan et al., 2016).

The first-order weights are an extra column of the embedding table (one lookup per batch
for both terms, ``FeatureEmbedding(..., linear=True)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from recforge.data.features import Field
from recforge.exceptions import ConfigError
from recforge.models.ranking.torch_base import NUMERIC_MODES, TorchRanker
from recforge.models.registry import register
from recforge.nn.embedding import FeatureEmbedding
from recforge.nn.interactions_fm import FFMInteraction, FMInteraction


class FMModule(nn.Module):
    """logit = linear(x) + sum_{i<j} <v_i, v_j> (sum-square trick)."""

    def __init__(self, embedding: FeatureEmbedding) -> None:
        super().__init__()
        self.embedding = embedding  # FeatureEmbedding(linear=True)
        self.fm = FMInteraction()

    def forward(self, batch: dict) -> torch.Tensor:
        e, first = self.embedding.forward_with_linear(batch)  # (B, F, D), (B,)
        return first + self.fm(e)  # (B,)


class FFMModule(nn.Module):
    """logit = linear(x) + sum_{i<j} <v_{i,f_j}, v_{j,f_i}>. Every feature value holds F
    vectors of size D, stored as one (F * D)-wide row of the shared table."""

    def __init__(self, embedding: FeatureEmbedding, dim: int) -> None:
        super().__init__()
        self.embedding, self.dim = embedding, dim  # embedding: linear=True
        self.ffm = FFMInteraction()

    def forward(self, batch: dict) -> torch.Tensor:
        e, first = self.embedding.forward_with_linear(batch)  # (B, F, F * D), (B,)
        B, F, _ = e.shape
        e = e.reshape(B, F, F, self.dim)  # (B, F, F, D): [:, i, j] = field i's vector for j
        return first + self.ffm(e)


@register("fm")
class FM(TorchRanker):
    """Factorization machine. Own hyperparameter: ``init_std`` (std of the embeddings'
    normal initialisation; the default 1e-2 validated best with the default 5 epochs, a
    one-epoch run at batch 4096 validated better at 1e-3-1e-4, docs/BENCHMARKS.md
    "Ranking speed"). Shared ones: see ``TorchRanker`` (embedding_dim = k; with
    numeric="dense" the numeric fields are in the first-order term only)."""

    numeric_modes = NUMERIC_MODES
    numeric_default = "dense"  # dense: validation AUC at or above 'field' (docs/BENCHMARKS.md)

    smoke_params: ClassVar[dict[str, Any]] = {
        "embedding_dim": 4,
        "epochs": 2,
        "batch_size": 64,
        "lr": 1e-2,
    }

    def __init__(self, *, init_std: float = 1e-2, **shared: Any) -> None:
        super().__init__(**shared)
        self.init_std = init_std

    def build_module(self, fields: Sequence[Field]) -> nn.Module:
        if not float(self.init_std) > 0:
            raise ConfigError(f"FM: init_std must be > 0, got {self.init_std!r}.")
        return FMModule(self.feature_embedding(fields, linear=True, init_std=self.init_std))


@register("ffm")
class FFM(TorchRanker):
    """Field-aware factorization machine; the table holds n_values x n_fields x
    embedding_dim weights, so keep embedding_dim small (4-8)."""

    smoke_params: ClassVar[dict[str, Any]] = {
        "embedding_dim": 4,
        "epochs": 2,
        "batch_size": 64,
        "lr": 1e-2,
    }

    def __init__(self, **shared: Any) -> None:
        super().__init__(**shared)

    def build_module(self, fields: Sequence[Field]) -> nn.Module:
        n_fields = len(fields)
        emb = self.feature_embedding(fields, n_fields * self.embedding_dim, linear=True)
        return FFMModule(emb, self.embedding_dim)
