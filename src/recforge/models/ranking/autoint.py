"""AutoInt (Song et al. 2019): stacked multi-head self-attention over field embeddings.

h = MHSA_L(...MHSA_1(E)), E the (B, F, D) field embeddings;
logit = w · flatten(h) (+ MLP(flatten(E)) for AutoInt+ when ``hidden`` is set)
(+ linear(x) with ``linear=True``: the first-order weights are then an extra column of
the embedding table, one lookup for both).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from recforge.data.features import NUMERIC, Field
from recforge.exceptions import ConfigError
from recforge.models.ranking.torch_base import NUMERIC_MODES, TorchRanker
from recforge.models.registry import register
from recforge.nn.attention import MultiHeadSelfAttention
from recforge.nn.embedding import FeatureEmbedding
from recforge.nn.mlp import MLP


class AutoIntModule(nn.Module):
    """batch -> (B,) logits."""

    def __init__(
        self,
        embedding: FeatureEmbedding,
        layers: Sequence[MultiHeadSelfAttention],
        mlp: MLP | None,
    ) -> None:
        super().__init__()
        self.embedding, self.mlp = embedding, mlp
        self.linear = embedding.has_linear
        self.layers = nn.ModuleList(layers)
        self.head = nn.Linear(embedding.n_fields * layers[-1].out_dim, 1)

    def forward(self, batch: dict) -> torch.Tensor:
        x = None  # the MLP's input
        if self.linear and self.mlp is not None:  # one lookup for e, x and first
            e, x, first = self.embedding.forward_deep(batch, self.mlp.in_width)
        elif self.linear:
            e, first = self.embedding.forward_with_linear(batch)  # (B, F, D), (B,)
        else:
            e, first = self.embedding(batch), None
        # the whole batch at once (256-row blocks were 4-9x slower on 2 loaded threads), in
        # the channel-major layout (C, B, F) from the first layer to the head: no head split
        # or merge copies between layers (MultiHeadSelfAttention.forward_channels)
        h = e.permute(2, 0, 1)  # (D, B, F), a view
        for layer in self.layers:
            h = layer.forward_channels(h)  # (H*d_h, B, F)
        # the head w · flatten(h) over (F, H*d_h) rows, read in this layout: one batched
        # (B, F) x (F, 1) product per channel, summed
        c, _, f = h.shape
        w = self.head.weight.view(f, c).t().unsqueeze(-1)  # (H*d_h, F, 1)
        logit = torch.bmm(h, w).sum(0).squeeze(-1) + self.head.bias  # (B,)
        if self.mlp is not None:
            if x is None:
                x = self.embedding.deep_input(e, batch, self.mlp.in_width)
            logit = logit + self.mlp(x).squeeze(-1)
        return logit if first is None else logit + first


@register("autoint")
class AutoInt(TorchRanker):
    """AutoInt. Own hyperparameters: ``n_layers`` (interacting layers), ``n_heads``,
    ``head_dim``, ``residual``, ``hidden`` (a parallel MLP, AutoInt+; empty = none),
    ``activation``, ``dropout``, ``norm``, ``linear``. Shared ones: see ``TorchRanker``."""

    numeric_modes = NUMERIC_MODES
    numeric_default = "field"  # field: the default has no MLP nor linear term to read dense values

    smoke_params: ClassVar[dict[str, Any]] = {
        "embedding_dim": 4,
        "n_layers": 1,
        "head_dim": 4,
        "epochs": 2,
        "batch_size": 64,
    }

    def __init__(
        self,
        *,
        n_layers: int = 3,
        n_heads: int = 2,
        head_dim: int = 16,
        residual: bool = True,
        hidden: Sequence[int] = (),
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str | None = None,
        linear: bool = False,
        **shared: Any,
    ) -> None:
        super().__init__(**shared)
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.head_dim = head_dim
        self.residual = residual
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout
        self.norm = norm
        self.linear = linear

    def build_module(self, fields: Sequence[Field]) -> nn.Module:
        if self.numeric_mode() == "dense" and not self.hidden and not self.linear:
            numeric = [f.name for f in fields if f.type == NUMERIC]
            if numeric:
                raise ConfigError(
                    f"AutoInt: numeric='dense' keeps {numeric} out of the attention, and with "
                    f"hidden=() and linear=False nothing else reads them; set linear=True "
                    f"or hidden (AutoInt+), or numeric='field'."
                )
        emb = self.feature_embedding(fields, linear=self.linear)
        layers, width = [], emb.dim
        for _ in range(max(1, int(self.n_layers))):
            layers.append(
                MultiHeadSelfAttention(width, self.head_dim, self.n_heads, residual=self.residual)
            )
            width = layers[-1].out_dim
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
        return AutoIntModule(emb, layers, mlp)
