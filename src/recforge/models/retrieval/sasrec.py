"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over a user's recent items,
predicting the next item at every position.

Input: the last ``max_len`` items, right-aligned (the most recent in the last column),
embedded (scaled by sqrt(D)) plus a position signal, then a stack of Transformer blocks
with a causal mask and a padding mask (``recforge.nn.transformer``). The hidden state at
position t scores the item at t + 1 by a dot product with the (shared) item embeddings;
the query of a user is the hidden state at the last position.

The original paper trains with BCE and one sampled negative per position (``loss="bce"``);
the default here is the full softmax cross-entropy (``"auto"``), which on Amazon Beauty
scores far higher with the same network (see docs/BENCHMARKS.md), and sampled softmax with
log-Q correction for catalogues too large for it. See ``sequential`` for the losses,
batches, validation and scoring.

Defaults (Pre-LN, dropout 0.3, no input LayerNorm) were checked on Beauty's validation
split against the RecBole / original-code layout (Post-LN, a LayerNorm on item embedding +
position, dropout 0.5, available as ``norm_first=False, embedding_norm=True,
dropout=0.5``): the latter converged more slowly and levelled off lower within the epochs
measured (validation NDCG@10 0.0600 at epoch 16 against 0.0621 at epoch 14), so the
defaults stayed. docs/BENCHMARKS.md has the curves.

Rotary positions and label smoothing 0.1 are the defaults since a second check on the
same split. Rotary positions depend on offsets only, so with the causal mask the state
at every training position is exactly the query its prefix gets when served (training on
every position is then training on every prefix, as the reference codes do with one row
per prefix); learned absolute positions counted from the newest item place a training
prefix as if the user's later items followed it, which serving never does. Label
smoothing (``label_smoothing``; only with the full softmax) penalises over-confident
logits, a regulariser for the item table that starts to overfit after ~12 epochs here.
Each gain is small: seed 0's best validation NDCG@10 0.0621 (learned positions), 0.0623
(rotary), 0.0623 (smoothing), 0.0634 (both); three seeds of both 0.0628 on validation,
test HR@10 0.0808 / NDCG@10 0.0493 (docs/BENCHMARKS.md).

Every training target weighs the same (``weighting="target"``) since a third check: the
batches group histories of similar length, and averaging the loss per batch gave a target
of a 3-item history ~15x the weight of one in a 50-item history; the reference codes' one
shuffled row per prefix weighs them alike. Seed 0's validation NDCG@10 at epoch 14: 0.0692
against 0.0634 per batch (the same curve to epoch 4, ahead from epoch 7). Run to patience,
three seeds: validation 0.0722, test HR@10 0.0947 / NDCG@10 0.0581 (docs/BENCHMARKS.md).

``prefix_rows=True`` (opt-in) trains one row per prefix instead, as the RecBole / DuoRec /
FEARec codes do: the loss at the prefix's last position only, so each prefix gets its own
dropout draws, and ``batch_size`` counts prefixes (targets). On the same split (seed 0,
batch 256 prefixes) it reached validation NDCG@10 0.0655 at epoch 6 and 0.0721 at its best
(epoch 13), against 0.0456 and 0.0692 (epoch 14) for the defaults above, at ~2x the CPU
per epoch (each prefix runs the encoder over its own items); at equal CPU the two were
level where both were measured, and run to patience the defaults' three seeds reached the
same validation (0.0722 mean), so the default was left as it is (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from recforge.data.interactions import Interactions
from recforge.data.sequences import SequencePrefixes
from recforge.exceptions import ConfigError
from recforge.models.registry import register
from recforge.models.retrieval.sequential import SequentialRecommender, right_positions
from recforge.nn.positional import (
    LearnedPositions,
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalPositions,
)
from recforge.nn.transformer import TransformerEncoder

POSITIONS = ("learned", "sinusoidal", "rotary", "relative", "none")


class SequenceTransformer(nn.Module):
    """Item embeddings + positions + a Transformer encoder over right-aligned sequences.

    ``n_tokens`` rows: 0 = padding, item i at i + 1 (and any extra tokens after them).
    ``hidden(seqs (B, L)) -> (B, L, D)``, 0 at padded positions; ``last_only=True`` gives
    the last position alone (B, 1, D), computing the last block for it only.
    """

    def __init__(
        self,
        *,
        n_tokens: int,
        dim: int,
        max_len: int,
        n_layers: int,
        n_heads: int,
        dropout: float,
        activation: str,
        norm_first: bool,
        positions: str,
        causal: bool,
        embedding_norm: bool = False,
    ) -> None:
        super().__init__()
        if positions not in POSITIONS:
            raise ConfigError(f"positions={positions!r}; choose one of {POSITIONS}.")
        self.item = nn.Embedding(n_tokens, dim, padding_idx=0)
        nn.init.normal_(self.item.weight, std=0.02)
        with torch.no_grad():
            self.item.weight[0].zero_()
        self.absolute: nn.Module | None = None
        self.rotary: RotaryEmbedding | None = None
        self.relative: RelativePositionBias | None = None
        if positions == "learned":
            self.absolute = LearnedPositions(max_len, dim)
        elif positions == "sinusoidal":
            self.absolute = SinusoidalPositions(max_len, dim)
        elif positions == "rotary":
            self.rotary = RotaryEmbedding(dim // n_heads, max_len)
        elif positions == "relative":
            self.relative = RelativePositionBias(n_heads, max_distance=max_len)
        self.encoder = TransformerEncoder(
            dim,
            n_layers=n_layers,
            n_heads=n_heads,
            dropout=dropout,
            activation=activation,
            norm_first=norm_first,
        )
        self.input_norm = nn.LayerNorm(dim) if embedding_norm else None
        self.drop = nn.Dropout(dropout)
        self.scale, self.max_len, self.causal = math.sqrt(dim), max_len, causal

    def hidden(self, seqs: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        valid = seqs > 0  # (B, L)
        x = self.item(seqs) * self.scale  # (B, L, D)
        if self.absolute is not None:
            x = self.absolute(x, right_positions(seqs.shape[1], self.max_len, seqs.device))
        if self.input_norm is not None:
            x = self.input_norm(x)
        x = self.drop(x) * valid[..., None]
        bias = self.relative(seqs.shape[1]) if self.relative is not None else None
        return self.encoder(
            x, valid, causal=self.causal, bias=bias, rotary=self.rotary, last_only=last_only
        )


def encoder_params(model: Any) -> dict[str, Any]:
    """``SequenceTransformer`` arguments from a model's hyperparameters."""
    return {
        "dim": int(model.embedding_dim),
        "max_len": int(model.max_len),
        "n_layers": int(model.n_layers),
        "n_heads": int(model.n_heads),
        "dropout": float(model.dropout),
        "activation": model.activation,
        "norm_first": bool(model.norm_first),
        "positions": model.positions,
        "embedding_norm": bool(model.embedding_norm),
    }


class SASRecModule(SequenceTransformer):
    """Causal encoder; item_table = the input item embeddings (tied)."""

    def __init__(self, n_items: int, **kwargs: Any) -> None:
        super().__init__(n_tokens=n_items + 1, causal=True, **kwargs)

    def item_table(self) -> torch.Tensor:
        return self.item.weight[1:]  # (n_items, D)


@register("sasrec")
class SASRec(SequentialRecommender):
    """SASRec next-item recall.

    Parameters
    ----------
    n_layers: Transformer blocks.
    n_heads: attention heads per block (must divide embedding_dim).
    dropout: on embeddings, attention weights, residual branches and the FFN.
    activation: FFN activation, "gelu" | "relu".
    norm_first: Pre-LN blocks (True) or the Post-LN of the original Transformer.
    positions: "rotary" (default: relative offsets, so the state at every training
        position is the query its prefix would get when served) | "learned" (absolute, as
        in the paper) | "sinusoidal" | "relative" (learned bias per offset) | "none".
    embedding_norm: a LayerNorm on item embedding + position before the first block (as
        RecBole's SASRec and BERT4Rec do).
    label_smoothing: share of each target's probability spread over the catalogue with
        the full softmax; the default None is 0.1 with "ce" and 0 with the sampled losses
        (see ``SequentialRecommender``).
    weighting: "target" (default: every training target weighs the same) | "batch" (every
        batch weighs the same); see ``SequentialRecommender``.
    prefix_rows: train one row per prefix of each history (the loss at its last position
        only, its own dropout draws; ``batch_size`` then counts prefixes, i.e. targets), as
        the RecBole / DuoRec / FEARec codes do, instead of one row per user with the loss
        at every position (the default).
    embedding_dim, max_len, loss, n_negatives, alpha, epochs, batch_size, lr, optimizer,
        weight_decay, clip_norm, patience, seed, num_threads, progress: see
        ``SequentialRecommender``.
    """

    smoke_params = {
        "embedding_dim": 8,
        "n_heads": 2,
        "max_len": 8,
        "epochs": 3,
        "batch_size": 16,
        "lr": 0.01,
    }

    def __init__(
        self,
        *,
        n_layers: int = 2,
        n_heads: int = 1,
        dropout: float = 0.3,
        activation: str = "gelu",
        norm_first: bool = True,
        positions: str = "rotary",
        embedding_norm: bool = False,
        label_smoothing: float | None = None,
        weighting: str = "target",
        prefix_rows: bool = False,
        **shared: Any,
    ) -> None:
        super().__init__(label_smoothing=label_smoothing, weighting=weighting, **shared)
        self.prefix_rows = prefix_rows
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.dropout = dropout
        self.activation = activation
        self.norm_first = norm_first
        self.positions = positions
        self.embedding_norm = embedding_norm

    def _build_module(self) -> SASRecModule:
        return SASRecModule(self.n_items, **encoder_params(self))

    def _training_rows(self, interactions: Interactions):  # type: ignore[no-untyped-def]
        if not self.prefix_rows:
            return super()._training_rows(interactions)
        prefixes = SequencePrefixes(
            interactions, self.user_vocab_, self.item_vocab_, int(self.max_len) + 1
        )
        return prefixes.rows, prefixes.lengths, prefixes.users

    def _targets_last_only(self) -> bool:
        return bool(self.prefix_rows)

    def _training_targets(
        self, seqs: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        if not self.prefix_rows:
            return super()._training_targets(seqs, rng)
        tgt = np.zeros_like(seqs[:, 1:])
        tgt[:, -1] = seqs[:, -1]  # one row per prefix: its last item is the only target
        return seqs[:, :-1], tgt

    def _query(self, module: nn.Module, seqs: torch.Tensor) -> torch.Tensor:
        return module.hidden(seqs, last_only=True)[:, -1]  # (B, D): after the newest item
