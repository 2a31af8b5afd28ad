"""DeepFM (Guo et al., 2017): FM and an MLP over one shared field embedding.

logit = linear(x) + FM(E) + MLP(flatten(E)), with E the (B, F, D) field embeddings.
The first-order weights live in an extra column of the embedding table (one lookup per
batch for both terms) unless a separate ``LinearEmbedding`` is passed.
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
from recforge.nn.embedding import FeatureEmbedding, LinearEmbedding
from recforge.nn.interactions_fm import FMInteraction
from recforge.nn.mlp import MLP


class DeepFMModule(nn.Module):
    def __init__(
        self,
        embedding: FeatureEmbedding,
        linear: LinearEmbedding | None = None,
        *,
        hidden: Sequence[int],
        activation: str,
        dropout: float,
        norm: str | None,
    ) -> None:
        super().__init__()
        if linear is None and not embedding.has_linear:
            raise ConfigError(
                "DeepFMModule needs a LinearEmbedding or FeatureEmbedding(..., linear=True)."
            )
        self.embedding, self.linear = embedding, linear
        self.fm = FMInteraction()
        in_dim = embedding.deep_width  # F*D (+ the numeric values with numeric="dense")
        self.mlp = MLP(in_dim, hidden, activation=activation, dropout=dropout, norm=norm, out_dim=1)

    def forward(self, batch: dict) -> torch.Tensor:
        if self.linear is None:  # one lookup; first-order sum, FM term and MLP input fused
            _, x, first_fm = self.embedding.forward_deep(batch, self.mlp.in_width, fm=True)
            return first_fm + self.mlp(x).squeeze(-1)  # (B,)
        e, first = self.embedding(batch), self.linear(batch)
        deep = self.mlp(self.embedding.deep_input(e, batch, self.mlp.in_width)).squeeze(-1)  # (B,)
        return first + self.fm(e) + deep


@register("deepfm")
class DeepFM(TorchRanker):
    """DeepFM. Own hyperparameters: ``hidden`` (MLP widths), ``activation``, ``dropout``,
    ``norm`` (None | "batch" | "layer"); shared ones: see ``TorchRanker``."""

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
        embedding = self.feature_embedding(
            fields, linear=True
        )  # first-order weights in the table's last column
        return DeepFMModule(
            embedding,
            hidden=self.hidden,
            activation=self.activation,
            dropout=self.dropout,
            norm=self.norm,
        )
