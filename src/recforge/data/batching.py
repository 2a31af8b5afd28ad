"""Mini-batches of (user, positive item) pairs and negative sampling for retrieval training.

Everything works in internal indices (see ``IdVocab``) and is vectorised with NumPy:

* ``PairSampler`` shuffles the training pairs of a seen matrix into batches each epoch;
* ``uniform_negatives`` draws items uniformly, re-drawing the ones a user has seen;
* ``PopularitySampler`` draws items with probability ``count ** alpha`` and gives the
  log-probabilities that the sampled-softmax log-Q correction subtracts;
* ``history_matrix`` lays out each user's most recent training items as a padded
  (n_users, max_history) array (item index + 1, 0 = padding) for history pooling.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

from recforge.data.interactions import Interactions
from recforge.data.vocab import IdVocab
from recforge.exceptions import ConfigError


class PairSampler:
    """The (user, item) pairs of a seen matrix, shuffled into batches.

    seen: (n_users, n_items) CSR; every stored entry is one training pair.
    """

    def __init__(self, seen: sp.csr_matrix) -> None:
        seen = sp.csr_matrix(seen)
        self.n_users, self.n_items = seen.shape
        self.users = np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(seen.indptr))
        self.items = seen.indices.astype(np.int64)
        # sorted keys u * n_items + i: membership tests for negative sampling
        self._keys = np.sort(self.users * self.n_items + self.items)

    def __len__(self) -> int:
        return len(self.users)

    def item_counts(self) -> np.ndarray:
        """Training interactions per item: (n_items,) float64."""
        return np.bincount(self.items, minlength=self.n_items).astype(np.float64)

    def batches(
        self, batch_size: int, rng: np.random.Generator
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch: (users (B,), items (B,)) int64 arrays in a random order."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        order = rng.permutation(len(self.users))
        for start in range(0, len(order), batch_size):
            sel = order[start : start + batch_size]
            yield self.users[sel], self.items[sel]

    def is_seen(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each (users[k], items[k]) is a training pair: bool, same shape."""
        keys = np.asarray(users, dtype=np.int64) * self.n_items + np.asarray(items, dtype=np.int64)
        pos = np.searchsorted(self._keys, keys)
        pos = np.minimum(pos, len(self._keys) - 1)
        return self._keys[pos] == keys


def uniform_negatives(
    sampler: PairSampler,
    users: np.ndarray,
    n_neg: int,
    rng: np.random.Generator,
    max_rounds: int = 10,
) -> np.ndarray:
    """Items drawn uniformly for each user, avoiding the user's training items.

    users: (B,). Returns (B, n_neg) int64. Draws that hit a seen item are re-drawn up to
    ``max_rounds`` times (a user who has seen nearly everything may keep a few).
    """
    users = np.asarray(users, dtype=np.int64)
    neg = rng.integers(0, sampler.n_items, size=(len(users), n_neg))
    u = np.broadcast_to(users[:, None], neg.shape)
    bad = sampler.is_seen(u, neg)
    for _ in range(max_rounds):
        if not bad.any():
            break
        neg[bad] = rng.integers(0, sampler.n_items, size=int(bad.sum()))
        bad = sampler.is_seen(u, neg) & bad
    return neg.astype(np.int64)


class PopularitySampler:
    """Draws items with probability ``q_i = count_i ** alpha / sum_j count_j ** alpha``.

    counts: (n_items,) interactions per item. ``alpha=0`` is uniform, ``alpha=1`` is the
    empirical item frequency (word2vec uses 0.75). Items with count 0 keep a tiny
    probability (count 0.5) so that every item can be drawn and log q is finite.
    """

    def __init__(self, counts: np.ndarray, alpha: float = 0.75) -> None:
        c = np.maximum(np.asarray(counts, dtype=np.float64), 0.5) ** float(alpha)
        self.q = c / c.sum()
        self.log_q = np.log(self.q).astype(np.float32)
        self._cdf = np.cumsum(self.q)
        self._cdf[-1] = 1.0

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n item indices (with replacement): (n,) int64."""
        return np.searchsorted(self._cdf, rng.random(n), side="right").astype(np.int64)


def history_matrix(
    interactions: Interactions,
    user_vocab: IdVocab,
    item_vocab: IdVocab,
    max_history: int,
) -> np.ndarray:
    """Each user's most recent ``max_history`` training items, oldest first.

    Returns (n_users, max_history) int64 holding item index + 1, 0 = padding (left-aligned:
    row u is ``[i_1+1, ..., i_L+1, 0, ...]``). Order is by timestamp when present, else row
    order; duplicates of a (user, item) pair keep only their last occurrence.
    """
    if max_history < 1:
        raise ConfigError(f"max_history must be >= 1, got {max_history}.")
    frame = interactions.frame
    u = user_vocab.index(frame["user"].to_numpy(), unknown="mask")
    i = item_vocab.index(frame["item"].to_numpy(), unknown="mask")
    t = frame["timestamp"].to_numpy() if interactions.has("timestamp") else np.arange(len(frame))
    keep = (u >= 0) & (i >= 0)
    u, i, t = u[keep], i[keep], np.asarray(t)[keep]
    pos = np.arange(len(u))
    order = np.lexsort((pos, t, u))  # by user, then time, then row
    u, i = u[order], i[order]
    # drop earlier duplicates of the same (user, item): keep the last occurrence
    key = u * len(item_vocab) + i
    last = np.zeros(len(key), dtype=bool)
    _, first_rev = np.unique(key[::-1], return_index=True)
    last[len(key) - 1 - first_rev] = True
    u, i = u[last], i[last]
    # rank from the end within each user: 0 = most recent
    counts = np.bincount(u, minlength=len(user_vocab))
    ends = np.cumsum(counts)
    from_end = ends[u] - 1 - np.arange(len(u))
    sel = from_end < max_history
    n_kept = np.minimum(counts, max_history)
    col = n_kept[u[sel]] - 1 - from_end[sel]
    out = np.zeros((len(user_vocab), max_history), dtype=np.int64)
    out[u[sel], col] = i[sel] + 1
    return out


def drop_targets(history: np.ndarray, items: np.ndarray) -> np.ndarray:
    """A copy of ``history`` (B, L) (item index + 1, 0 = padding) with the training target
    ``items`` (B,) masked to 0, so that a tower cannot learn to find the target in its input."""
    return np.where(history == (np.asarray(items)[:, None] + 1), 0, history)
