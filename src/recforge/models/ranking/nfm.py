"""NFM (He & Chua 2017): an MLP over the bi-interaction pooled embeddings.

logit = linear(x) + MLP(dropout(BiInteraction(E))), E the (B, F, D) field embeddings; the
first-order weights are an extra column of the embedding table (one lookup for both).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from recforge.data.features import Field
from recforge.models.ranking.torch_base import NUMERIC_MODES, TorchRanker
from recforge.models.registry import register
from recforge.nn.bi_interaction import BiInteraction
from recforge.nn.embedding import FeatureEmbedding
from recforge.nn.mlp import MLP


class NFMModule(nn.Module):
    """batch -> (B,) logits."""

    def __init__(self, embedding: FeatureEmbedding, mlp: MLP, bi_dropout: float) -> None:
        super().__init__()
        self.embedding, self.mlp = embedding, mlp  # embedding: FeatureEmbedding(linear=True)
        self.bi = BiInteraction()
        self.bi_dropout = nn.Dropout(bi_dropout)

    def forward(self, batch: dict) -> torch.Tensor:
        e, first = self.embedding.forward_with_linear(batch)  # (B, F, D), (B,)
        pooled = self.bi_dropout(self.bi(e))  # (B, D)
        # (B, D (+ n_num with numeric="dense")); not zero-padded (nn.align): at ~30 columns
        # there is no GEMM shape to gain
        x = self.embedding.with_dense(pooled, batch)
        return first + self.mlp(x).squeeze(-1)  # (B,)


@register("nfm")
class NFM(TorchRanker):
    """NFM. Own hyperparameters: ``hidden`` (MLP widths over the pooled vector; empty = a
    single linear layer, i.e. a weighted FM), ``bi_dropout`` (dropout on the pooled
    vector), ``activation``, ``dropout``, ``norm``. Shared ones: see ``TorchRanker``."""

    numeric_modes = NUMERIC_MODES
    numeric_default = "field"  # field: 'dense' validated lower (docs/BENCHMARKS.md)

    smoke_params: ClassVar[dict[str, Any]] = {
        "embedding_dim": 4,
        "hidden": (8,),
        "epochs": 2,
        "batch_size": 64,
    }

    def __init__(
        self,
        *,
        hidden: Sequence[int] = (128, 128),
        bi_dropout: float = 0.0,
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(**shared)
        self.hidden = hidden
        self.bi_dropout = bi_dropout
        self.activation = activation
        self.dropout = dropout
        self.norm = norm

    def build_module(self, fields: Sequence[Field]) -> nn.Module:
        emb = self.feature_embedding(fields, linear=True)
        mlp = MLP(
            emb.dim + emb.n_dense,
            tuple(self.hidden),
            activation=self.activation,
            dropout=self.dropout,
            norm=self.norm,
            out_dim=1,
        )
        return NFMModule(emb, mlp, self.bi_dropout)
