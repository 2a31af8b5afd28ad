"""MostPopular: every user gets the items with the most interactions.

The baseline every recall channel has to beat, and the fallback for cold-start users.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recforge.data.interactions import Interactions
from recforge.exceptions import DataError
from recforge.models.base import RetrievalModel
from recforge.models.registry import register
from recforge.topk import topk


@register("most_popular")
class MostPopular(RetrievalModel):
    """Scores an item by its (optionally weighted, optionally time-decayed) interaction count.

    Parameters
    ----------
    weight_col: column whose values are summed instead of counting rows (e.g. "weight").
    half_life: if set (same unit as a numeric ``timestamp``; seconds for datetime
        timestamps), an interaction's weight halves every ``half_life`` before the latest
        timestamp, so recent popularity counts more.
    """

    def __init__(self, *, weight_col: str | None = None, half_life: float | None = None) -> None:
        self.weight_col = weight_col
        self.half_life = half_life

    def _fit(self, interactions: Interactions) -> None:
        frame = interactions.frame
        w = np.ones(len(frame), dtype=np.float64)
        if self.weight_col is not None:
            w = frame[self.weight_col].to_numpy(dtype=np.float64)
        if self.half_life is not None:
            if not interactions.has("timestamp"):
                raise DataError(
                    "most_popular: half_life needs a timestamp column; drop half_life or "
                    "pass timestamps.",
                    column="timestamp",
                )
            col = frame["timestamp"]
            if pd.api.types.is_datetime64_any_dtype(col):  # any resolution -> seconds
                epoch = pd.Timestamp(0, tz=col.dt.tz)
                ts = (col - epoch).dt.total_seconds().to_numpy(dtype=np.float64)
            else:
                ts = col.to_numpy(dtype=np.float64)
            w = w * np.power(0.5, (ts.max() - ts) / float(self.half_life))
        items = self.item_vocab_.index(frame["item"].to_numpy())
        self.item_scores_ = np.bincount(items, weights=w, minlength=self.n_items).astype(np.float32)

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.item_scores_, (len(user_idx), self.n_items))

    def similar_items_idx(self, item_idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Popular items are "similar" to everything: the top k others."""
        scores = np.repeat(self.item_scores_[None, :], len(item_idx), axis=0)
        scores[np.arange(len(item_idx)), item_idx] = -np.inf
        return topk(scores, k)

    def _save_state(self):
        arrays, state = super()._save_state()
        arrays["item_scores"] = self.item_scores_
        return arrays, state

    def _load_state(self, arrays, state):
        super()._load_state(arrays, state)
        self.item_scores_ = arrays["item_scores"]
