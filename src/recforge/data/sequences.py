"""Per-user behaviour sequences as padded arrays, for sequential recommenders.

``sequence_matrix`` orders each user's interactions by time (row order breaks ties, and is
the order when there is no timestamp), keeps the most recent ``max_len`` and lays them out
as a (n_users, max_len) int64 array of item index + 1 (0 = padding). Repeats are kept: a
sequence model reads what happened, including the second purchase of the same item.
Built with NumPy sorts and scatters, no Python loop per event.

Alignment:

* ``"right"`` (left-padded): the most recent item is in the last column, so that column
  ``max_len - 1`` always means "now" (SASRec, BERT4Rec);
* ``"left"`` (right-padded): the oldest kept item is in column 0 (packed RNNs).
"""

from __future__ import annotations

import numpy as np

from recforge.data.interactions import Interactions
from recforge.data.vocab import IdVocab
from recforge.exceptions import ConfigError

ALIGNS = ("right", "left")


def sequence_matrix(
    interactions: Interactions,
    user_vocab: IdVocab,
    item_vocab: IdVocab,
    max_len: int,
    align: str = "right",
) -> np.ndarray:
    """Each user's most recent ``max_len`` items in time order: (n_users, max_len) int64,
    item index + 1, 0 = padding. Rows whose user or item is not in the vocabularies are
    dropped; a user without rows gets an all-padding row."""
    _check(max_len, align)
    frame = interactions.frame
    u = user_vocab.index(frame["user"].to_numpy(), unknown="mask")
    i = item_vocab.index(frame["item"].to_numpy(), unknown="mask")
    t = frame["timestamp"].to_numpy() if interactions.has("timestamp") else np.zeros(len(frame))
    keep = (u >= 0) & (i >= 0)
    u, i, t = u[keep], i[keep], np.asarray(t)[keep]
    order = np.lexsort((np.arange(len(u)), t, u))  # by user, then time, then row
    return _scatter(u[order], i[order] + 1, len(user_vocab), max_len, align)


def pad_sequences(sequences: list[np.ndarray], max_len: int, align: str = "right") -> np.ndarray:
    """Lay out sequences of item index + 1 (oldest first) as (len(sequences), max_len) int64,
    keeping the last ``max_len`` of each; 0 = padding."""
    _check(max_len, align)
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    users = np.repeat(np.arange(len(sequences), dtype=np.int64), lengths)
    values = (
        np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
        if len(sequences) and lengths.sum()
        else np.zeros(0, dtype=np.int64)
    )
    return _scatter(users, values, len(sequences), max_len, align)


def sequence_lengths(seqs: np.ndarray) -> np.ndarray:
    """Non-padding entries per row of a padded (N, L) array: (N,) int64."""
    return (seqs > 0).sum(1).astype(np.int64)


def _scatter(
    rows: np.ndarray, values: np.ndarray, n_rows: int, max_len: int, align: str
) -> np.ndarray:
    """rows (E,) sorted, values (E,) in order within each row -> padded (n_rows, max_len)."""
    counts = np.bincount(rows, minlength=n_rows)
    ends = np.cumsum(counts)
    from_end = ends[rows] - 1 - np.arange(len(rows))  # 0 = the row's most recent entry
    sel = from_end < max_len
    if align == "right":
        col = max_len - 1 - from_end[sel]
    else:
        col = np.minimum(counts, max_len)[rows[sel]] - 1 - from_end[sel]
    out = np.zeros((n_rows, max_len), dtype=np.int64)
    out[rows[sel], col] = values[sel]
    return out


def _check(max_len: int, align: str) -> None:
    if not isinstance(max_len, int | np.integer) or max_len < 1:
        raise ConfigError(f"max_len must be a positive integer, got {max_len!r}.")
    if align not in ALIGNS:
        raise ConfigError(f"align={align!r}; choose one of {ALIGNS}.")
