"""Wide & Deep (Cheng et al., 2016): a linear "wide" part that memorises (one-hot values
and hashed cross-products of chosen field pairs) plus a "deep" MLP that generalises.

logit = wide(x) + MLP(flatten(E)). The one-hot weights of the wide part are an extra column
of the deep part's embedding table (one lookup for both).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from recforge.data.features import CATEGORICAL, Field
from recforge.exceptions import ConfigError
from recforge.models.ranking.torch_base import NUMERIC_MODES, TorchRanker
from recforge.models.registry import register
from recforge.nn.embedding import FeatureEmbedding
from recforge.nn.mlp import MLP


class CrossProductLinear(nn.Module):
    """One weight per (value_a, value_b) pair of each crossed categorical field pair,
    hashed into ``buckets`` rows: batch -> (B,) summed weights."""

    def __init__(
        self,
        fields: Sequence[Field],
        crosses: Sequence[Sequence[str]],
        buckets: int,
        *,
        sparse: bool,
    ) -> None:
        super().__init__()
        cat = [f.name for f in fields if f.type == CATEGORICAL]
        pairs = []
        for pair in crosses:
            if len(pair) != 2 or any(name not in cat for name in pair):
                raise ConfigError(
                    f"crosses: {list(pair)!r} must name two categorical fields among {cat}."
                )
            pairs.append((cat.index(pair[0]), cat.index(pair[1])))
        self.register_buffer(
            "left", torch.tensor([a for a, _ in pairs], dtype=torch.int64), persistent=False
        )
        self.register_buffer(
            "right", torch.tensor([b for _, b in pairs], dtype=torch.int64), persistent=False
        )
        sizes = {f.name: f.vocab_size for f in fields if f.type == CATEGORICAL}
        mult = [int(sizes[cat[b]]) for _, b in pairs]
        self.register_buffer("mult", torch.tensor(mult, dtype=torch.int64), persistent=False)
        self.buckets = int(buckets)
        # (pair id, value a, value b) -> a distinct integer, then a multiplicative hash
        self.register_buffer(
            "salt", torch.arange(len(pairs), dtype=torch.int64) * 1_000_003, persistent=False
        )
        self.weight = nn.Embedding(self.buckets, 1, sparse=sparse)
        nn.init.zeros_(self.weight.weight)

    def forward(self, batch: dict) -> torch.Tensor:
        cat = batch["categorical"]  # (B, n_cat)
        key = cat[:, self.left] * self.mult + cat[:, self.right] + self.salt  # (B, n_pairs)
        idx = (key * 2_654_435_761) % self.buckets
        return self.weight(idx).sum(dim=(1, 2))  # (B,)


class WideDeepModule(nn.Module):
    def __init__(
        self,
        embedding: FeatureEmbedding,
        cross: CrossProductLinear | None,
        mlp: MLP,
    ) -> None:
        super().__init__()
        self.embedding, self.cross, self.mlp = embedding, cross, mlp  # embedding: linear=True

    def forward(self, batch: dict) -> torch.Tensor:
        _, x, wide = self.embedding.forward_deep(batch, self.mlp.in_width)  # (B, d'), (B,)
        if self.cross is not None:
            wide = wide + self.cross(batch)
        return wide + self.mlp(x).squeeze(-1)  # (B,)


@register("wide_deep")
class WideDeep(TorchRanker):
    """Wide & Deep. Own hyperparameters: ``hidden``, ``activation``, ``dropout``, ``norm``
    (the deep MLP), ``crosses`` (pairs of categorical field names crossed in the wide part)
    and ``cross_buckets`` (hash size of the cross-product weights)."""

    numeric_modes = NUMERIC_MODES
    numeric_default = "dense"  # dense: validation AUC at or above 'field' (docs/BENCHMARKS.md)

    smoke_params: ClassVar[dict[str, Any]] = {
        "embedding_dim": 4,
        "hidden": (8,),
        "epochs": 2,
        "batch_size": 64,
    }

    def __init__(
        self,
        *,
        hidden: Sequence[int] = (256, 128),
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str | None = None,
        crosses: Sequence[Sequence[str]] = (),
        cross_buckets: int = 1_000_000,
        **shared: Any,
    ) -> None:
        super().__init__(**shared)
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout
        self.norm = norm
        self.crosses = crosses
        self.cross_buckets = cross_buckets

    def build_module(self, fields: Sequence[Field]) -> nn.Module:
        emb = self.feature_embedding(fields, linear=True)
        mlp = MLP(
            emb.deep_width,
            self.hidden,
            activation=self.activation,
            dropout=self.dropout,
            norm=self.norm,
            out_dim=1,
        )
        cross = None
        if self.crosses:
            cross = CrossProductLinear(fields, self.crosses, self.cross_buckets, sparse=self.sparse)
        return WideDeepModule(emb, cross, mlp)
