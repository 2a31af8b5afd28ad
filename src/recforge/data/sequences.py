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
    users, items = _ordered(interactions, user_vocab, item_vocab)
    return _scatter(users, items + 1, len(user_vocab), max_len, align)


class SequencePrefixes:
    """Every prefix of each user's time-ordered sequence as its own row: the event at
    position t >= 1 of a user (the target) with the ``width - 1`` events before it, laid out
    right-aligned in ``width`` columns (target in the last column, item index + 1, 0 =
    padding). For training one row per prefix (the reference SASRec codes' layout). Only the
    ordered events and one end index per row are kept, O(events) memory; ``rows(idx)``
    builds the (len(idx), width) array of a batch.
    """

    def __init__(
        self, interactions: Interactions, user_vocab: IdVocab, item_vocab: IdVocab, width: int
    ) -> None:
        _check(width, "right")
        if width < 2:
            raise ConfigError(f"SequencePrefixes: width must be >= 2, got {width}.")
        users, items = _ordered(interactions, user_vocab, item_vocab)
        counts = np.bincount(users, minlength=len(user_vocab))
        pos = np.arange(len(users)) - (np.cumsum(counts) - counts)[users]  # 0-based in its user
        keep = pos >= 1
        self.items = items + 1  # (E,) ordered by user, then time
        self.end = np.flatnonzero(keep)  # (P,) index of each row's target in ``items``
        self.users = users[keep]  # (P,)
        self.lengths = np.minimum(pos[keep] + 1, width)  # (P,) items in the row, target included
        self.width = int(width)

    def __len__(self) -> int:
        return len(self.end)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` as a right-aligned (len(idx), width) int64 array."""
        offset = np.arange(1 - self.width, 1)  # (width,): the target at 0
        inside = offset[None, :] > -self.lengths[idx][:, None]
        j = np.maximum(self.end[idx][:, None] + offset[None, :], 0)
        return np.where(inside, self.items[j], 0)


def _ordered(
    interactions: Interactions, user_vocab: IdVocab, item_vocab: IdVocab
) -> tuple[np.ndarray, np.ndarray]:
    """(user index, item index) of the rows known to both vocabularies, ordered by user,
    then time, then row."""
    frame = interactions.frame
    u = user_vocab.index(frame["user"].to_numpy(), unknown="mask")
    i = item_vocab.index(frame["item"].to_numpy(), unknown="mask")
    t = frame["timestamp"].to_numpy() if interactions.has("timestamp") else np.zeros(len(frame))
    keep = (u >= 0) & (i >= 0)
    u, i, t = u[keep], i[keep], np.asarray(t)[keep]
    order = np.lexsort((np.arange(len(u)), t, u))
    return u[order], i[order]


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
