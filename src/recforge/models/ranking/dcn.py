"""Deep & Cross Network (Wang et al. 2017) and DCN-V2 (Wang et al. 2021).

x0 = flatten(E), E the (B, F, D) field embeddings.

* ``dcn``:   logit = w · [Cross_v1(x0) ; MLP(x0)] (+ linear(x) with ``linear=True``)
* ``dcnv2``: parallel: logit = w · [Cross_v2(x0) ; MLP(x0)];
             stacked:  logit = w · MLP(Cross_v2(x0));
             ``low_rank=r`` switches to the mixture of ``n_experts`` low-rank experts.

With ``linear=True`` the first-order weights are an extra column of the embedding table
(one lookup for both).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from recforge.data.features import Field
from recforge.exceptions import ConfigError
from recforge.models.ranking.torch_base import NUMERIC_MODES, TorchRanker
from recforge.models.registry import register
from recforge.nn.align import aligned, pad_last
from recforge.nn.cross import CrossNetwork, CrossNetworkV2
from recforge.nn.embedding import FeatureEmbedding
from recforge.nn.mlp import MLP


class DCNModule(nn.Module):
    """Cross network and MLP over x0 = flatten(E), combined by one linear layer. batch -> (B,)."""

    def __init__(
        self,
        embedding: FeatureEmbedding,
        cross: nn.Module,
        mlp: MLP | None,
        *,
        stacked: bool = False,
    ) -> None:
        super().__init__()
        self.embedding, self.cross, self.mlp = embedding, cross, mlp
        self.stacked = stacked
        self.linear = embedding.has_linear  # add the first-order term of the table's column
        width = embedding.deep_width
        self.width = aligned(width)  # x0's padded width
        if mlp is None:
            head_in = width
        else:
            head_in = mlp.out_dim if stacked else width + mlp.out_dim
        self.head = nn.Linear(head_in, 1)

    def forward(self, batch: dict) -> torch.Tensor:
        # x0 (B, d'): F*D (+ n_num, numeric="dense"), zero-padded to d' = aligned(d)
        # columns (the faster GEMM shape for the crosses and the MLP: recforge.nn.align)
        if self.linear:  # one lookup, the first-order sum fused with x0's copy
            _, x0, first = self.embedding.forward_deep(batch, self.width)  # (B, d'), (B,)
        else:
            first = None
            x0 = self.embedding.deep_input(self.embedding(batch), batch, self.width)
        crossed = self.cross(x0)  # (B, d'), zero in the padding
        if self.stacked and self.mlp is not None:
            logit = self.head(self.mlp(crossed)).squeeze(-1)  # (B,)
        else:
            # w · [crossed ; MLP(x0)] as two products: no (B, d + H) concatenation
            d = self.embedding.deep_width
            w = self.head.weight  # (1, d (+ H))
            logit = F.linear(crossed, pad_last(w[:, :d], self.width), self.head.bias)
            if self.mlp is not None:
                logit = logit + F.linear(self.mlp(x0), w[:, d:])
            logit = logit.squeeze(-1)  # (B,)
        return logit if first is None else logit + first


def _mlp(
    in_dim: int, hidden: Sequence[int], activation: str, dropout: float, norm: str | None
) -> MLP | None:
    if not hidden:
        return None
    return MLP(in_dim, tuple(hidden), activation=activation, dropout=dropout, norm=norm)


@register("dcn")
class DCN(TorchRanker):
    """DCN. Own hyperparameters: ``n_cross`` (cross layers), ``hidden`` (MLP widths; empty =
    cross network only), ``activation``, ``dropout``, ``norm``, ``linear`` (add a first-order
    term, as DeepCTR's DCN does). Shared ones: see ``TorchRanker``."""

    numeric_modes = NUMERIC_MODES
    numeric_default = "dense"  # dense: validation AUC at or above 'field' (docs/BENCHMARKS.md)

    smoke_params: ClassVar[dict[str, Any]] = {
        "embedding_dim": 4,
        "hidden": (8,),
        "n_cross": 2,
        "epochs": 2,
        "batch_size": 64,
    }

    def __init__(
        self,
        *,
        n_cross: int = 3,
        hidden: Sequence[int] = (256, 128),
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str | None = None,
        linear: bool = False,
        **shared: Any,
    ) -> None:
        super().__init__(**shared)
        self.n_cross = n_cross
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout
        self.norm = norm
        self.linear = linear

    def build_module(self, fields: Sequence[Field]) -> nn.Module:
        emb = self.feature_embedding(fields, linear=self.linear)
        width = emb.deep_width
        return DCNModule(
            emb,
            CrossNetwork(width, self.n_cross),
            _mlp(width, self.hidden, self.activation, self.dropout, self.norm),
        )


@register("dcnv2")
class DCNv2(TorchRanker):
    """DCN-V2. Own hyperparameters: ``n_cross``, ``low_rank`` (None = full-rank matrices;
    r = mixture of low-rank experts, DCN-Mix), ``n_experts``, ``structure`` ("parallel" |
    "stacked"), ``hidden``, ``activation``, ``dropout``, ``norm``, ``linear``."""

    numeric_modes = NUMERIC_MODES
    numeric_default = "dense"  # dense: validation AUC at or above 'field' (docs/BENCHMARKS.md)

    smoke_params: ClassVar[dict[str, Any]] = {
        "embedding_dim": 4,
        "hidden": (8,),
        "n_cross": 2,
        "low_rank": 2,
        "n_experts": 2,
        "epochs": 2,
        "batch_size": 64,
    }

    def __init__(
        self,
        *,
        n_cross: int = 3,
        low_rank: int | None = None,
        n_experts: int = 4,
        structure: str = "parallel",
        hidden: Sequence[int] = (256, 128),
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str | None = None,
        linear: bool = False,
        **shared: Any,
    ) -> None:
        super().__init__(**shared)
        self.n_cross = n_cross
        self.low_rank = low_rank
        self.n_experts = n_experts
        self.structure = structure
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout
        self.norm = norm
        self.linear = linear

    def build_module(self, fields: Sequence[Field]) -> nn.Module:
        if self.structure not in ("parallel", "stacked"):
            raise ConfigError(
                f"DCNv2: structure={self.structure!r}; choose 'parallel' or 'stacked'."
            )
        emb = self.feature_embedding(fields, linear=self.linear)
        width = emb.deep_width
        cross = CrossNetworkV2(
            width, self.n_cross, low_rank=self.low_rank, n_experts=self.n_experts
        )
        return DCNModule(
            emb,
            cross,
            _mlp(width, self.hidden, self.activation, self.dropout, self.norm),
            stacked=self.structure == "stacked",
        )
