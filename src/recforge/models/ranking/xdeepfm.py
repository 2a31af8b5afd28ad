"""xDeepFM (Lian et al. 2018): linear + CIN + MLP over one shared field embedding.

logit = linear(x) + w_c · CIN(E) + MLP(flatten(E)), E the (B, F, D) field embeddings; the
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
from recforge.nn.cin import CIN
from recforge.nn.embedding import FeatureEmbedding
from recforge.nn.mlp import MLP


class XDeepFMModule(nn.Module):
    """batch -> (B,) logits."""

    def __init__(self, embedding: FeatureEmbedding, cin: CIN, mlp: MLP | None) -> None:
        super().__init__()
        self.embedding, self.cin, self.mlp = embedding, cin, mlp  # embedding: linear=True
        self.cin_head = nn.Linear(cin.out_dim, 1, bias=False)

    def forward(self, batch: dict) -> torch.Tensor:
        if self.mlp is None:
            e, first = self.embedding.forward_with_linear(batch)  # (B, F, D), (B,)
            return first + self.cin_head(self.cin(e)).squeeze(-1)  # (B,)
        e, x, first = self.embedding.forward_deep(batch, self.mlp.in_width)  # one lookup
        return first + self.cin_head(self.cin(e)).squeeze(-1) + self.mlp(x).squeeze(-1)


@register("xdeepfm")
class XDeepFM(TorchRanker):
    """xDeepFM. Own hyperparameters: ``cin_layers`` (feature maps per CIN layer),
    ``cin_activation``, ``split_half``, ``hidden`` (MLP widths; empty = linear + CIN only),
    ``activation``, ``dropout``, ``norm``. Shared ones: see ``TorchRanker``."""

    numeric_modes = NUMERIC_MODES
    numeric_default = "dense"  # dense: validation AUC at or above 'field' (docs/BENCHMARKS.md)

    smoke_params: ClassVar[dict[str, Any]] = {
        "embedding_dim": 4,
        "cin_layers": (4, 4),
        "hidden": (8,),
        "epochs": 2,
        "batch_size": 64,
    }

    def __init__(
        self,
        *,
        cin_layers: Sequence[int] = (128, 128),
        cin_activation: str = "relu",
        split_half: bool = True,
        hidden: Sequence[int] = (256, 128),
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(**shared)
        self.cin_layers = cin_layers
        self.cin_activation = cin_activation
        self.split_half = split_half
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout
        self.norm = norm

    def build_module(self, fields: Sequence[Field]) -> nn.Module:
        emb = self.feature_embedding(fields, linear=True)
        cin = CIN(
            emb.n_fields,
            tuple(self.cin_layers),
            activation=self.cin_activation,
            split_half=self.split_half,
        )
        mlp = None
        if self.hidden:
            mlp = MLP(
                emb.deep_width,
                tuple(self.hidden),
                activation=self.activation,
                dropout=self.dropout,
                norm=self.norm,
                out_dim=1,
            )
        return XDeepFMModule(emb, cin, mlp)
