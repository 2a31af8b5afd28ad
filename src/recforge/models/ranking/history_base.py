"""What the behaviour-history rankers (DIN, DIEN, DSIN, BST) share.

A history ranker reads a frame with list-valued history columns (``data.history`` builds
one) and is told which history column pairs with which target column:
``history={"hist_item": "item", "hist_cat": "cat"}`` (``None``: every ``hist_X`` column
whose ``X`` is a column). Each history column is encoded in its target's vocabulary
(``share``) keeping its most recent ``history_len`` values (``keep_last``), so a behaviour
and the candidate are embedded by the same rows.

``HistoryInputs`` turns a batch into what the models attend over:

* ``fields`` (B, F, D): every other field (user, candidate item and its attributes,
  context, pooled multi-valued fields), as ``FeatureEmbedding`` gives them;
* ``query`` (B, P·D): the candidate, its P target fields' embeddings concatenated;
* ``seq`` (B, L, P·D): every behaviour embedded the same way, oldest first;
* ``mask`` (B, L) / ``lengths`` (B,): the real behaviours (left-aligned; a behaviour whose
  item is unknown still counts, padding is what follows the last known one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd
import torch
from torch import nn

from recforge.data.features import MULTI, FeatureEncoder, Field
from recforge.data.history import SESSION_COLUMN, history_columns
from recforge.exceptions import ConfigError, DataError
from recforge.models.ranking.torch_base import TorchRanker
from recforge.nn.embedding import FeatureEmbedding


def history_pairs(fields: Sequence[Field]) -> list[tuple[str, str]]:
    """(history field, target field) pairs of an encoder's fields, in field order."""
    return [(f.name, f.share) for f in fields if f.type == MULTI and f.keep == "last" and f.share]


@dataclass
class HistoryBatch:
    fields: torch.Tensor  # (B, F, D)
    query: torch.Tensor  # (B, P*D)
    seq: torch.Tensor  # (B, L, P*D)
    mask: torch.Tensor  # (B, L) bool
    lengths: torch.Tensor  # (B,) int64


class HistoryInputs(nn.Module):
    """Embeds a batch for a history model (see the module docstring)."""

    def __init__(self, fields: Sequence[Field], dim: int, *, sparse: bool = False) -> None:
        super().__init__()
        self.pairs = history_pairs(fields)
        if not self.pairs:
            raise ConfigError(
                "a history model needs at least one history column paired with a target "
                "column (history={'hist_item': 'item'})."
            )
        hist = {h for h, _ in self.pairs}
        self.embedding = FeatureEmbedding(
            [f for f in fields if f.name not in hist], dim, sparse=sparse
        )
        names = self.embedding.field_names
        self.target_pos = [names.index(t) for _, t in self.pairs]
        self.n_fields = self.embedding.n_fields
        self.item_dim = dim * len(self.pairs)  # P*D: one behaviour, or the candidate

    def forward(self, batch: dict) -> HistoryBatch:
        fields = self.embedding(batch)  # (B, F, D)
        query = fields[:, self.target_pos].flatten(1)  # (B, P*D)
        codes = [batch["multi"][h] for h, _ in self.pairs]  # P x (B, L)
        seq = torch.cat(
            [self.embedding.lookup(t, c) for (_, t), c in zip(self.pairs, codes)], dim=-1
        )  # (B, L, P*D)
        known = torch.stack(codes, 0).ne(0).any(0)  # (B, L): any field of the behaviour known
        steps = torch.arange(known.shape[1], device=known.device)
        lengths = torch.where(known, steps + 1, 0).amax(1) if known.shape[1] else known.sum(1)
        mask = steps.unsqueeze(0) < lengths.unsqueeze(1)  # (B, L)
        return HistoryBatch(fields, query, seq * mask.unsqueeze(-1), mask, lengths)


class HistoryRanker(TorchRanker):
    """Base of the history rankers. Own hyperparameters (keyword-only):

    history: {history column: target column}; None pairs every ``hist_X`` with ``X``.
    history_len: most recent behaviours kept per row (older ones are dropped).
    """

    reads_history: ClassVar[bool] = True  # jobs build its frames with history columns
    smoke_params: ClassVar[dict[str, Any]] = {
        "embedding_dim": 4,
        "epochs": 2,
        "batch_size": 64,
        "history_len": 5,
    }

    def __init__(
        self, *, history: dict[str, str] | None = None, history_len: int = 50, **shared: Any
    ) -> None:
        super().__init__(**shared)
        self.history = history
        self.history_len = history_len

    def resolve_history(self, frame: pd.DataFrame) -> dict[str, str]:
        """The history pairs for ``frame``; raises naming the column and the fix."""
        name = type(self).__name__
        if self.history is None:
            pairs = history_columns(frame)
            if not pairs:
                raise DataError(
                    f"{name}: no history column found (columns: {list(frame.columns)}); pass "
                    f"history={{'<history column>': '<target column>'}} or name history "
                    f"columns hist_<target> (recforge.data.history.history_samples does)."
                )
            return pairs
        if not isinstance(self.history, dict) or not self.history:
            raise ConfigError(
                f"{name}: history must be a non-empty dict {{history column: target column}}, "
                f"got {self.history!r}."
            )
        for hist, target in self.history.items():
            for col in (hist, target):
                if col not in frame.columns:
                    raise DataError(
                        f"{name}: history={self.history!r} names column {col!r}, which is not "
                        f"in the frame (columns: {list(frame.columns)}).",
                        column=col,
                    )
        return dict(self.history)

    def make_encoder(self, frame: pd.DataFrame) -> FeatureEncoder:
        if int(self.history_len) < 1:
            raise ConfigError(f"{type(self).__name__}: history_len must be >= 1.")
        pairs = self.resolve_history(frame)
        opts = dict(self.encoder_options or {})
        opts["share"] = {**opts.get("share", {}), **pairs}
        opts["keep_last"] = [*opts.get("keep_last", ()), *pairs]
        opts["max_lens"] = {**opts.get("max_lens", {}), **dict.fromkeys(pairs, self.history_len)}
        opts["categorical"] = [*opts.get("categorical", ()), *pairs.values()]
        exclude = [c for c in (SESSION_COLUMN, "events_after") if c in frame.columns]
        opts["exclude"] = [*opts.get("exclude", ()), *exclude]
        return FeatureEncoder(min_count=self.min_count, max_len=self.max_len, **opts)

    def inputs(self, fields: Sequence[Field]) -> HistoryInputs:
        return HistoryInputs(fields, self.embedding_dim, sparse=self.sparse)
