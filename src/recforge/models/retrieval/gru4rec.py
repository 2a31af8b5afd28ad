"""GRU4Rec (Hidasi et al., ICLR 2016; Hidasi & Karatzoglou, CIKM 2018): a GRU reads a
user's recent items in order and its state after item t scores the item at t + 1.

Sequences are left-aligned and packed (``torch.nn.utils.rnn.pack_padded_sequence``), so
padding costs nothing and never enters the state. Embedding -> dropout -> GRU (``n_layers``
x ``hidden_dim``) -> dropout -> linear to D; scores are dot products with the item
embeddings (tied input/output). The query of a user is the state after the most recent
item. Losses as for SASRec (full softmax by default; sampled softmax with log-Q; BCE with
one negative), see ``sequential``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from recforge.models.registry import register
from recforge.models.retrieval.sequential import SequentialRecommender


class GRU4RecModule(nn.Module):
    """``hidden(seqs (B, L) left-aligned) -> (B, L, D)``, 0 at padded positions."""

    def __init__(
        self, n_items: int, dim: int, hidden_dim: int, n_layers: int, dropout: float
    ) -> None:
        super().__init__()
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)  # item i at i + 1
        nn.init.normal_(self.item.weight, std=0.02)
        with torch.no_grad():
            self.item.weight[0].zero_()
        self.gru = nn.GRU(dim, hidden_dim, num_layers=n_layers, batch_first=True)
        self.project = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(dropout)

    def hidden(self, seqs: torch.Tensor) -> torch.Tensor:
        lengths = (seqs > 0).sum(1)  # (B,)
        x = self.drop(self.item(seqs))  # (B, L, D)
        packed = pack_padded_sequence(
            x, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False
        )
        states, _ = self.gru(packed)
        out, _ = pad_packed_sequence(states, batch_first=True, total_length=seqs.shape[1])
        h = self.project(self.drop(out))  # (B, L, D)
        return h * (seqs > 0)[..., None]

    def item_table(self) -> torch.Tensor:
        return self.item.weight[1:]  # (n_items, D)


@register("gru4rec")
class GRU4Rec(SequentialRecommender):
    """GRU4Rec next-item recall.

    Parameters
    ----------
    hidden_dim: GRU state width.
    n_layers: stacked GRU layers.
    dropout: on the input embeddings and on the GRU output.
    lr: Adam learning rate, 3e-3 by default (3x the other sequential models': the GRU
        converges ~3x faster per epoch with it, see ``train_defaults``).
    embedding_dim, max_len, loss, n_negatives, alpha, epochs, batch_size, optimizer,
        weight_decay, clip_norm, patience, seed, num_threads, progress: see
        ``SequentialRecommender``.
    """

    align: ClassVar[str] = "left"
    # lr 3e-3, not the shared 1e-3: on Amazon Beauty (S3-Rec protocol, seed 0, validation
    # NDCG@10) lr 1e-3 was still rising at epoch 30 (0.0444), lr 3e-3 passed that by epoch 9
    # (0.0454) and reached 0.0479 at epoch 12, at equal cost per epoch (docs/BENCHMARKS.md)
    train_defaults: ClassVar[dict[str, Any]] = SequentialRecommender.train_defaults | {"lr": 3e-3}
    smoke_params = {
        "embedding_dim": 8,
        "hidden_dim": 8,
        "max_len": 8,
        "epochs": 3,
        "batch_size": 16,
        "lr": 0.01,
    }

    def __init__(
        self,
        *,
        hidden_dim: int = 128,
        n_layers: int = 1,
        dropout: float = 0.3,
        **shared: Any,
    ) -> None:
        super().__init__(**shared)
        self.hidden_dim = hidden_dim
        self.n_layers = n_layers
        self.dropout = dropout

    def _build_module(self) -> GRU4RecModule:
        return GRU4RecModule(
            self.n_items,
            int(self.embedding_dim),
            int(self.hidden_dim),
            int(self.n_layers),
            float(self.dropout),
        )

    def _query(self, module: nn.Module, seqs: torch.Tensor) -> torch.Tensor:
        h = module.hidden(seqs)  # (B, L, D)
        last = ((seqs > 0).sum(1) - 1).clamp_min(0)  # (B,) position of the newest item
        return h[torch.arange(len(seqs)), last]  # (B, D); 0 for an empty history
