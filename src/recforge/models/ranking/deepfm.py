"""DeepFM (Guo et al., 2017): FM and an MLP over one shared field embedding.

logit = linear(x) + FM(E) + MLP(flatten(E)), with E the (B, F, D) field embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from recforge.data.features import Field
from recforge.models.ranking.torch_base import TorchRanker
from recforge.models.registry import register
from recforge.nn.embedding import FeatureEmbedding, LinearEmbedding
from recforge.nn.interactions_fm import FMInteraction
from recforge.nn.mlp import MLP


class DeepFMModule(nn.Module):
    def __init__(
        self,
        embedding: FeatureEmbedding,
        linear: LinearEmbedding,
        *,
        hidden: Sequence[int],
        activation: str,
        dropout: float,
        norm: str | None,
    ) -> None:
        super().__init__()
        self.embedding, self.linear = embedding, linear
        self.fm = FMInteraction()
        in_dim = embedding.n_fields * embedding.dim
        self.mlp = MLP(in_dim, hidden, activation=activation, dropout=dropout, norm=norm, out_dim=1)

    def forward(self, batch: dict) -> torch.Tensor:
        e = self.embedding(batch)  # (B, F, D)
        deep = self.mlp(e.flatten(1)).squeeze(-1)  # (B,)
        return self.linear(batch) + self.fm(e) + deep


@register("deepfm")
class DeepFM(TorchRanker):
    """DeepFM. Own hyperparameters: ``hidden`` (MLP widths), ``activation``, ``dropout``,
    ``norm`` (None | "batch" | "layer"); shared ones: see ``TorchRanker``."""

    smoke_params: ClassVar[dict[str, Any]] = {
        "embedding_dim": 4,
        "hidden": (8,),
        "epochs": 2,
        "batch_size": 64,
    }

    def __init__(
        self,
        *,
        hidden: Sequence[int] = (400, 400, 400),
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(**shared)
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout
        self.norm = norm

    def build_module(self, fields: Sequence[Field]) -> nn.Module:
        return DeepFMModule(
            self.feature_embedding(fields),
            self.linear_embedding(fields),
            hidden=self.hidden,
            activation=self.activation,
            dropout=self.dropout,
            norm=self.norm,
        )
