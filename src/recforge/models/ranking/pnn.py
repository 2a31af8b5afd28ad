"""Product-based neural networks (Qu et al., 2016): IPNN and OPNN.

The MLP's input is ``[flatten(E), p]`` where p holds second-order products of the (B, F, D)
field embeddings E:

* IPNN: inner products <e_i, e_j> of every field pair i < j -> (B, F(F-1)/2);
* OPNN: the outer product of the summed embeddings, (sum_i e_i)(sum_i e_i)^T -> (B, D*D),
  the paper's "superposition" form that keeps the cost at O(D^2) per example.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from recforge.data.features import Field
from recforge.models.ranking.torch_base import NUMERIC_MODES, TorchRanker
from recforge.models.registry import register
from recforge.nn.align import cat_padded
from recforge.nn.embedding import FeatureEmbedding
from recforge.nn.mlp import MLP


class InnerProduct(nn.Module):
    """(B, F, D) -> (B, F(F-1)/2): <e_i, e_j> for i < j, in row-major pair order.

    Computed as the Gram matrix E Eᵀ (one batched matmul) and its upper triangle, not as
    (B, P, D) pair products: gathering the pairs writes, and its backward scatters, P x D
    values per row (~15x slower on CPU at 39 fields)."""

    def __init__(self, n_fields: int) -> None:
        super().__init__()
        i, j = torch.triu_indices(n_fields, n_fields, offset=1)
        self.register_buffer("upper", i * n_fields + j, persistent=False)  # (P,) in F*F
        self.out_dim = int(i.numel())

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        gram = torch.bmm(e, e.transpose(1, 2))  # (B, F, F)
        return gram.flatten(1).index_select(1, self.upper)  # (B, P)


class OuterProduct(nn.Module):
    """(B, F, D) -> (B, D*D): outer product of the field-sum with itself."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_dim = dim * dim

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        s = e.sum(1)  # (B, D)
        return (s.unsqueeze(2) * s.unsqueeze(1)).flatten(1)  # (B, D*D)


class PNNModule(nn.Module):
    def __init__(self, embedding: FeatureEmbedding, product: nn.Module, mlp: MLP) -> None:
        super().__init__()
        self.embedding, self.product, self.mlp = embedding, product, mlp

    def forward(self, batch: dict) -> torch.Tensor:
        e = self.embedding(batch)  # (B, F, D)
        parts = [self.embedding.deep_input(e, batch), self.product(e)]
        z = cat_padded(parts, self.mlp.in_width)  # (B, d + P), zero-padded: nn.align
        return self.mlp(z).squeeze(-1)


class _PNN(TorchRanker):
    """Shared by IPNN/OPNN. Own hyperparameters: ``hidden``, ``activation``, ``dropout``,
    ``norm`` (the MLP after the product layer)."""

    smoke_params: ClassVar[dict[str, Any]] = {
        "embedding_dim": 4,
        "hidden": (8,),
        "epochs": 2,
        "batch_size": 64,
    }
    product_kind: ClassVar[str] = "inner"
    numeric_modes = NUMERIC_MODES
    numeric_default = "field"  # field: 'dense' validated lower (docs/BENCHMARKS.md)

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
        emb = self.feature_embedding(fields)
        product: InnerProduct | OuterProduct
        if self.product_kind == "inner":
            product = InnerProduct(emb.n_fields)
        else:
            product = OuterProduct(emb.dim)
        mlp = MLP(
            emb.deep_width + product.out_dim,
            self.hidden,
            activation=self.activation,
            dropout=self.dropout,
            norm=self.norm,
            out_dim=1,
        )
        return PNNModule(emb, product, mlp)


@register("ipnn")
class IPNN(_PNN):
    """PNN with inner products of field pairs."""

    product_kind = "inner"


@register("opnn")
class OPNN(_PNN):
    """PNN with the outer product of the summed field embeddings."""

    product_kind = "outer"
