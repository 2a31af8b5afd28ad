"""FNN (Zhang et al., 2016): an MLP over field vectors initialised from a trained FM.

Each field's input is ``[v_i, w_i]``: its D-dim FM factor and its first-order FM weight
(one row of the shared table, whose last column holds the first-order weights).
``fit`` first trains an ``FMModule`` on the same data (``fm_epochs``), copies its tables
into the FNN's, then trains the whole network end to end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from recforge.data.features import Field
from recforge.models.ranking.fm import FMModule
from recforge.models.ranking.torch_base import TorchRanker, _Batches
from recforge.models.registry import register
from recforge.nn.embedding import FeatureEmbedding
from recforge.nn.inputs import Batch
from recforge.nn.mlp import MLP
from recforge.train import Trainer


class FNNModule(nn.Module):
    def __init__(self, embedding: FeatureEmbedding, mlp: MLP) -> None:
        super().__init__()
        self.embedding, self.mlp = embedding, mlp  # embedding: FeatureEmbedding(linear=True)

    def forward(self, batch: dict) -> torch.Tensor:
        z = self.embedding.forward_columns(batch).flatten(1)  # (B, F * (D + 1)): [v_i, w_i]
        return self.mlp(z).squeeze(-1) + self.embedding.linear_bias


@register("fnn")
class FNN(TorchRanker):
    """FNN. Own hyperparameters: ``hidden``, ``activation``, ``dropout``, ``norm`` (the
    MLP), ``fm_epochs`` (FM pre-training epochs; 0 = random initialisation) and ``fm_lr``
    (its learning rate; None = ``lr``)."""

    smoke_params: ClassVar[dict[str, Any]] = {
        "embedding_dim": 4,
        "hidden": (8,),
        "epochs": 1,
        "fm_epochs": 1,
        "batch_size": 64,
    }

    def __init__(
        self,
        *,
        hidden: Sequence[int] = (400, 400, 400),
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str | None = None,
        fm_epochs: int = 2,
        fm_lr: float | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(**shared)
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout
        self.norm = norm
        self.fm_epochs = fm_epochs
        self.fm_lr = fm_lr

    def build_module(self, fields: Sequence[Field]) -> nn.Module:
        emb = self.feature_embedding(fields, linear=True)
        mlp = MLP(
            emb.n_fields * (emb.dim + 1),
            self.hidden,
            activation=self.activation,
            dropout=self.dropout,
            norm=self.norm,
            out_dim=1,
        )
        return FNNModule(emb, mlp)

    def _init_module(self, module: nn.Module, train: Batch, y: torch.Tensor) -> None:
        """Train an FM on the same rows and copy its table (factors and first-order
        weights)."""
        if self.fm_epochs <= 0:
            return
        assert isinstance(module, FNNModule)
        fields = module.embedding.layout.categorical + module.embedding.layout.numeric
        fields += module.embedding.layout.multi
        fm = FMModule(self.feature_embedding(fields, linear=True))
        cfg = self.train_config(
            epochs=self.fm_epochs,
            lr=self.fm_lr or self.lr,
            patience=0,
            schedule="constant",
            warmup_steps=0,
            checkpoint_dir=None,
        )
        batches = _Batches(train, y, self.batch_size, self.seed + 1)
        Trainer(cfg).fit(fm, lambda m, b: self.loss_value(m(b[0]), b[1]), batches)
        module.embedding.load_state_dict(fm.embedding.state_dict())
