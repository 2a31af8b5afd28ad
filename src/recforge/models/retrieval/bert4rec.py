"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional Transformer trained by masked item
prediction (the Cloze task), then asked for the item behind a [MASK] appended to the
history.

Training, phase 1: in each sequence (the last ``max_len`` items, right-aligned) every item
is replaced by [MASK] with probability ``mask_prob`` (at least one per sequence) and the
network predicts the hidden items from both sides. Phase 2, the final-position
fine-tuning step (``finetune_epochs``, 0 = none): only the last item is masked, which is
exactly the inference situation. Each phase keeps its best validation epoch when
``fit(..., valid=...)`` is given.

Query: the history's last ``max_len - 1`` items followed by [MASK]; the output at [MASK],
passed through a GELU projection and a LayerNorm, is dotted with the (tied) item
embeddings. Losses as for SASRec (see ``sequential``); the paper uses the full softmax.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from recforge.exceptions import ConfigError
from recforge.models.registry import register
from recforge.models.retrieval.sasrec import SequenceTransformer, encoder_params
from recforge.models.retrieval.sequential import SequentialRecommender


class BERT4RecModule(SequenceTransformer):
    """Bidirectional encoder over tokens 0 = padding, 1..n_items = items, n_items + 1 = [MASK]."""

    def __init__(self, n_items: int, **kwargs: Any) -> None:
        super().__init__(n_tokens=n_items + 2, causal=False, **kwargs)
        dim = self.item.embedding_dim
        self.mask_token = n_items + 1
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))

    def hidden(self, seqs: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        return self.head(super().hidden(seqs, last_only))  # (B, L, D), or (B, 1, D)

    def item_table(self) -> torch.Tensor:
        return self.item.weight[1 : self.mask_token]  # (n_items, D)


@register("bert4rec")
class BERT4Rec(SequentialRecommender):
    """BERT4Rec next-item recall.

    Parameters
    ----------
    n_layers, n_heads, dropout, activation, norm_first, positions, embedding_norm: the
        encoder, as in SASRec.
    mask_prob: probability that an item is masked in phase 1; 0.6 as in the paper's and
        the original code's Beauty setting (on Amazon Beauty, validation NDCG@10, it was
        ahead of 0.2 at 11 of the 13 epochs from the 9th: 0.0337 against 0.0312 at the 17th).
    finetune_epochs: epochs of phase 2 (only the last item masked); 0 skips it.
    finetune_lr: learning rate of phase 2 (None = ``lr``); 1e-4 (the original code's lr):
        at lr 1e-3 phase 2 overfit after its first epoch (+0.0008 validation NDCG@10 on
        Amazon Beauty), at 1e-4 it rose for several epochs (+0.005); docs/BENCHMARKS.md.
    embedding_dim, max_len, loss, n_negatives, alpha, epochs (phase 1), batch_size, lr,
        optimizer, weight_decay, clip_norm, patience, seed, num_threads, progress: see
        ``SequentialRecommender``.
    """

    _min_length = 1
    _weightings = ("batch",)  # masked positions, not one target per next item
    smoke_params = {
        "embedding_dim": 8,
        "n_heads": 2,
        "max_len": 8,
        "epochs": 3,
        "finetune_epochs": 1,
        "batch_size": 16,
        "lr": 0.01,
    }

    def __init__(
        self,
        *,
        n_layers: int = 2,
        n_heads: int = 2,
        dropout: float = 0.2,
        activation: str = "gelu",
        norm_first: bool = True,
        positions: str = "learned",
        embedding_norm: bool = False,
        mask_prob: float = 0.6,
        finetune_epochs: int = 20,
        finetune_lr: float | None = 1e-4,
        **shared: Any,
    ) -> None:
        super().__init__(**shared)
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.dropout = dropout
        self.activation = activation
        self.norm_first = norm_first
        self.positions = positions
        self.embedding_norm = embedding_norm
        self.mask_prob = mask_prob
        self.finetune_epochs = finetune_epochs
        self.finetune_lr = finetune_lr

    def _build_module(self) -> BERT4RecModule:
        if not 0.0 < float(self.mask_prob) <= 1.0:
            raise ConfigError(f"BERT4Rec: mask_prob must lie in (0, 1], got {self.mask_prob}.")
        if self.finetune_lr is not None and not float(self.finetune_lr) > 0:
            raise ConfigError(
                f"BERT4Rec: finetune_lr must be > 0 or None (= lr), got {self.finetune_lr!r}."
            )
        return BERT4RecModule(self.n_items, **encoder_params(self))

    def _phases(self) -> list[int]:
        ft = int(self.finetune_epochs)
        return [int(self.epochs)] + ([ft] if ft > 0 else [])

    def _train(self, module, loss_fn, batches, valid_fn=None, **config):  # type: ignore[no-untyped-def]
        if self._phase > 0 and self.finetune_lr is not None:
            config["lr"] = float(self.finetune_lr)
        return super()._train(module, loss_fn, batches, valid_fn, **config)

    def _training_targets(
        self, seqs: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        seqs = seqs[:, -int(self.max_len) :]  # (B, L) right-aligned
        valid = seqs > 0
        if self._phase == 0:  # Cloze: random items, at least one per sequence
            masked = valid & (rng.random(seqs.shape) < float(self.mask_prob))
            masked[~masked.any(1), -1] = True
        else:  # final-position fine-tuning
            masked = np.zeros_like(valid)
            masked[:, -1] = True
        inp = np.where(masked, self.n_items + 1, seqs)
        return inp, np.where(masked, seqs, 0)

    def _query(self, module: nn.Module, seqs: torch.Tensor) -> torch.Tensor:
        mask = torch.full((len(seqs), 1), module.mask_token, dtype=seqs.dtype)
        inp = torch.cat([seqs[:, 1:], mask], 1)  # (B, max_len): history + [MASK]
        return module.hidden(inp, last_only=True)[:, -1]  # (B, D)
