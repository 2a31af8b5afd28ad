"""The interaction log: who did what, when, how much, in which context.

``Interactions`` wraps a pandas DataFrame with canonical column names:

=============  =========================================================
``user``       raw user id (any hashable), required
``item``       raw item id (any hashable), required
``timestamp``  optional, numeric (seconds) or datetime
``rating``     optional explicit rating
``label``      optional 0/1 label (click)
``weight``     optional confidence weight for implicit feedback
other columns  context (device, page, ...), kept as they are
=============  =========================================================

plus optional side tables ``user_features`` / ``item_features`` indexed by raw id, whose
columns may be categorical, numeric, multi-valued (lists, e.g. genres) or text (titles).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recforge.data.vocab import IdVocab
from recforge.exceptions import DataError

CANONICAL = ("user", "item", "timestamp", "rating", "label", "weight")
REQUIRED = ("user", "item")


@dataclass
class Interactions:
    """An interaction log with optional user and item feature tables."""

    frame: pd.DataFrame
    user_features: pd.DataFrame | None = None
    item_features: pd.DataFrame | None = None
    name: str = "interactions"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in REQUIRED if c not in self.frame.columns]
        if missing:
            raise DataError(
                f"{self.name}: missing required column(s) {missing}; "
                f"found {list(self.frame.columns)}. Map your columns with "
                f"Interactions.from_frame(df, user_col=..., item_col=...)."
            )
        for col in REQUIRED:
            if self.frame[col].isna().any():
                row = int(np.flatnonzero(self.frame[col].isna().to_numpy())[0])
                raise DataError(f"{self.name}: missing {col} id in row {row}.", column=col)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        *,
        user_col: str = "user",
        item_col: str = "item",
        timestamp_col: str | None = None,
        rating_col: str | None = None,
        label_col: str | None = None,
        weight_col: str | None = None,
        user_features: pd.DataFrame | None = None,
        item_features: pd.DataFrame | None = None,
        name: str = "interactions",
    ) -> Interactions:
        """Build from any DataFrame by naming its columns; other columns become context."""
        mapping = {
            user_col: "user",
            item_col: "item",
            timestamp_col: "timestamp",
            rating_col: "rating",
            label_col: "label",
            weight_col: "weight",
        }
        mapping = {k: v for k, v in mapping.items() if k is not None}
        missing = [k for k in mapping if k not in df.columns]
        if missing:
            raise DataError(f"{name}: column(s) {missing} not found; found {list(df.columns)}.")
        frame = df.rename(columns=mapping).reset_index(drop=True)
        return cls(frame, user_features, item_features, name=name)

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        return (
            f"Interactions({self.name!r}, rows={len(self)}, users={self.n_users}, "
            f"items={self.n_items}, columns={list(self.frame.columns)})"
        )

    @property
    def users(self) -> np.ndarray:
        """Unique raw user ids in first-seen order."""
        return pd.unique(self.frame["user"])

    @property
    def items(self) -> np.ndarray:
        """Unique raw item ids in first-seen order."""
        return pd.unique(self.frame["item"])

    @property
    def n_users(self) -> int:
        return int(self.frame["user"].nunique())

    @property
    def n_items(self) -> int:
        return int(self.frame["item"].nunique())

    @property
    def context_columns(self) -> list[str]:
        return [c for c in self.frame.columns if c not in CANONICAL]

    def has(self, column: str) -> bool:
        return column in self.frame.columns

    def subset(self, mask_or_index: Any, name: str | None = None) -> Interactions:
        """Rows selected by a boolean mask or positional index; feature tables are shared."""
        if (
            isinstance(mask_or_index, np.ndarray | pd.Series)
            and np.asarray(mask_or_index).dtype == bool
        ):
            frame = self.frame.loc[np.asarray(mask_or_index)]
        else:
            frame = self.frame.iloc[np.asarray(mask_or_index)]
        return Interactions(
            frame.reset_index(drop=True),
            self.user_features,
            self.item_features,
            name=name or self.name,
            meta=dict(self.meta),
        )

    def positives(self, threshold: float | None = None) -> Interactions:
        """Rows counted as positive feedback.

        With ``threshold``: rows with ``rating >= threshold`` (DataError without a rating
        column). Without: rows with ``label > 0`` if there is a label, else every row.
        """
        if threshold is not None:
            if not self.has("rating"):
                raise DataError(
                    f"{self.name}: positives(threshold=...) needs a rating column.", column="rating"
                )
            return self.subset(self.frame["rating"].to_numpy() >= threshold, f"{self.name}+")
        if self.has("label"):
            return self.subset(self.frame["label"].to_numpy() > 0, f"{self.name}+")
        return self

    def sort_by_time(self) -> Interactions:
        """Rows sorted by (user, timestamp), stable; requires a timestamp column."""
        if not self.has("timestamp"):
            raise DataError(f"{self.name}: no timestamp column to sort by.", column="timestamp")
        order = np.lexsort(
            (self.frame["timestamp"].to_numpy(), self.frame["user"].astype(str).to_numpy())
        )
        return self.subset(order)

    def user_sequences(self) -> Mapping[Any, list]:
        """Items of each user in time order (row order if no timestamp)."""
        frame = self.frame
        if self.has("timestamp"):
            frame = frame.sort_values(["user", "timestamp"], kind="stable")
        return frame.groupby("user", sort=False)["item"].agg(list).to_dict()

    # ------------------------------------------------------------------ matrices
    def vocabs(self) -> tuple[IdVocab, IdVocab]:
        """Fresh user and item vocabularies in first-seen order."""
        return IdVocab(self.users, kind="user"), IdVocab(self.items, kind="item")

    def to_csr(
        self,
        user_vocab: IdVocab | None = None,
        item_vocab: IdVocab | None = None,
        value: str | None = None,
        drop_unknown: bool = True,
    ) -> sp.csr_matrix:
        """A (n_users, n_items) float32 CSR matrix in the vocabularies' index space.

        value: column to use as the cell value ("weight", "rating", ...); None puts 1.
        Duplicate (user, item) pairs are summed for a value column, set to 1 otherwise.
        Rows whose ids are not in the given vocabularies are dropped (``drop_unknown``) or
        raise UnknownIdError.
        """
        uv, iv = user_vocab, item_vocab
        if uv is None or iv is None:
            u0, i0 = self.vocabs()
            uv, iv = uv or u0, iv or i0
        how = "mask" if drop_unknown else "raise"
        u = uv.index(self.frame["user"].to_numpy(), unknown=how)
        i = iv.index(self.frame["item"].to_numpy(), unknown=how)
        keep = (u >= 0) & (i >= 0)
        if value is None:
            data = np.ones(int(keep.sum()), dtype=np.float32)
        else:
            if not self.has(value):
                raise DataError(f"{self.name}: no column {value!r}.", column=value)
            data = self.frame[value].to_numpy(dtype=np.float32)[keep]
        m = sp.csr_matrix((data, (u[keep], i[keep])), shape=(len(uv), len(iv)), dtype=np.float32)
        m.sum_duplicates()
        if value is None:
            m.data[:] = 1.0
        return m
