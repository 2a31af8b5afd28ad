"""Samplers: negative items for training, reservoir samples of streams.

``NegativeSampler`` draws, for each user, items that are not among the user's positives,
uniformly or by popularity^alpha (word2vec's 0.75 by default). It rejects positives in a
few vectorised rounds and finishes the rare leftovers exactly from each user's complement,
so the exclusion is guaranteed. Draws are with replacement: a row may repeat a negative.

``reservoir_sample`` keeps a uniform random sample of m elements from a stream of unknown
length in one pass (Vitter's Algorithm R, or Li's Algorithm L that skips ahead and draws
O(m log(n/m)) random numbers instead of n).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp

from recforge.data.interactions import Interactions
from recforge.data.vocab import IdVocab
from recforge.exceptions import ConfigError, DataError, NotFittedError

T = TypeVar("T")

STRATEGIES = ("uniform", "popularity")


class NegativeSampler:
    """Samples items a user has not interacted with.

    Parameters (keyword-only)
    -------------------------
    strategy: "uniform" (every unseen item equally likely) or "popularity" (weight
        count^alpha, count = number of users with the item among their positives; items
        nobody has seen get weight 0 and are drawn only when a user has no other item left).
    alpha: popularity exponent (0 = uniform over items seen by anyone, 1 = proportional).
    max_rounds: vectorised rejection rounds before leftovers are drawn exactly.
    seed: seeds the generator; ``sample`` calls in the same order give the same draws.
    """

    def __init__(
        self, *, strategy: str = "uniform", alpha: float = 0.75, max_rounds: int = 8, seed: int = 0
    ) -> None:
        self.strategy = strategy
        self.alpha = alpha
        self.max_rounds = max_rounds
        self.seed = seed

    def fit(
        self,
        positives: sp.spmatrix | Interactions,
        user_vocab: IdVocab | None = None,
        item_vocab: IdVocab | None = None,
        *,
        exclude: sp.spmatrix | None = None,
    ) -> NegativeSampler:
        """Learn each user's positives and the item weights; returns self.

        positives: a (n_users, n_items) sparse matrix (nonzero = positive), or an
            ``Interactions`` turned into one with ``user_vocab``/``item_vocab`` (fresh
            vocabularies when None; then ``sample`` takes indices in those vocabularies).
        exclude: a further matrix of the same shape whose pairs are never drawn either,
            e.g. what the users clicked in other splits; item weights still come from
            ``positives`` alone.
        """
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"NegativeSampler: strategy must be one of {STRATEGIES}, got {self.strategy!r}."
            )
        if self.max_rounds < 1:
            raise ConfigError(f"NegativeSampler: max_rounds must be >= 1, got {self.max_rounds}.")
        if isinstance(positives, Interactions):
            positives = positives.to_csr(user_vocab, item_vocab)
        if not sp.issparse(positives):
            raise DataError(
                f"NegativeSampler.fit expects a scipy sparse matrix or Interactions, got "
                f"{type(positives).__name__}."
            )
        pos = _clean(positives)
        n_users, n_items = pos.shape
        if n_items == 0:
            raise DataError("NegativeSampler.fit: the matrix has no item columns.")
        csr = pos
        if exclude is not None:
            if exclude.shape != pos.shape:
                raise DataError(
                    f"NegativeSampler.fit: exclude has shape {exclude.shape}, positives "
                    f"{pos.shape}; build both in the same vocabularies."
                )
            csr = _clean(abs(pos) + abs(sp.csr_matrix(exclude)))
        rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(csr.indptr))
        self.keys_ = rows * n_items + csr.indices.astype(np.int64)  # sorted (user, item) keys
        self.indptr_ = csr.indptr.astype(np.int64)
        self.indices_ = csr.indices.astype(np.int64)
        self.n_users_, self.n_items_ = n_users, n_items
        if self.strategy == "popularity":
            counts = np.bincount(pos.indices, minlength=n_items).astype(np.float64)
            weights = counts**self.alpha * (counts > 0)
        else:
            weights = np.ones(n_items)
        self.weights_ = (
            weights / weights.sum() if weights.sum() > 0 else np.full(n_items, 1.0 / n_items)
        )
        self.cdf_ = np.cumsum(self.weights_)
        self.cdf_[-1] = 1.0
        self.rng_ = np.random.default_rng(self.seed)
        return self

    def _draw(self, size: int | tuple[int, ...]) -> np.ndarray:
        if self.strategy == "uniform":
            return self.rng_.integers(0, self.n_items_, size)
        return np.searchsorted(self.cdf_, self.rng_.random(size), side="right").clip(
            max=self.n_items_ - 1
        )

    def _is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items_ + items
        at = np.searchsorted(self.keys_, keys).clip(max=max(len(self.keys_) - 1, 0))
        return (self.keys_[at] == keys) if len(self.keys_) else np.zeros(keys.shape, dtype=bool)

    def sample(self, user_idx: np.ndarray, n: int, *, distinct: bool = False) -> np.ndarray:
        """``n`` negatives for each user index: (len(user_idx), n) int64 item indices.

        Never returns a positive of the user. ``distinct``: no item twice in a row (e.g.
        the impressions of one request); otherwise rows are drawn with replacement. Raises
        DataError naming the user when a user has too few unseen items (none, or fewer than
        ``n`` with ``distinct``).
        """
        if not hasattr(self, "keys_"):
            raise NotFittedError(self, "sample")
        if n < 0:
            raise ConfigError(f"NegativeSampler.sample: n must be >= 0, got {n}.")
        users = np.asarray(user_idx, dtype=np.int64).ravel()
        if len(users) and (users.min() < 0 or users.max() >= self.n_users_):
            bad = int(users[(users < 0) | (users >= self.n_users_)][0])
            raise DataError(
                f"NegativeSampler.sample: user index {bad} out of range 0..{self.n_users_ - 1}."
            )
        out = self._draw((len(users), n))  # (B, n)
        flat = out.reshape(-1)  # a view
        u = np.repeat(users, n)  # (B * n,) user of each slot
        bad = np.flatnonzero(self._is_positive(u, flat))
        if distinct:
            bad = np.union1d(bad, np.flatnonzero(_repeats_in_rows(out)))
        for _ in range(self.max_rounds - 1):
            if len(bad) == 0:
                break
            flat[bad] = self._draw(len(bad))
            still = bad[self._is_positive(u[bad], flat[bad])]
            if distinct:  # a redrawn slot may repeat an item of its row
                rows = np.unique(bad // n)
                rep = _repeats_in_rows(out[rows]).reshape(-1)
                slots = (rows[:, None] * n + np.arange(n)).reshape(-1)
                still = np.union1d(still, slots[rep])
            bad = still
        if len(bad):
            self._fill_exactly(flat, u, bad, n if distinct else 0)
        return out

    def _fill_exactly(
        self, flat: np.ndarray, users: np.ndarray, bad: np.ndarray, row_len: int
    ) -> None:
        """Draw the slots ``bad`` of ``flat`` from each user's complement (rare leftovers).

        row_len > 0 means distinct rows of that length: draw without replacement, avoiding
        the row's other items too.
        """
        group = bad // row_len if row_len else users[bad]
        order = np.argsort(group, kind="stable")
        bad = bad[order]
        starts = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0])
        for slots in np.split(bad, starts[1:]):
            user = int(users[slots[0]])
            banned = self.indices_[self.indptr_[user] : self.indptr_[user + 1]]
            if row_len:
                row = slots[0] // row_len
                others = np.setdiff1d(np.arange(row * row_len, (row + 1) * row_len), slots)
                banned = np.concatenate([banned, flat[others]])
            w = self.weights_.copy()
            w[banned] = 0.0
            if np.count_nonzero(w) < (len(slots) if row_len else 1):
                w = np.ones(self.n_items_)  # only never-seen (zero-weight) items are left
                w[banned] = 0.0
            need = len(slots) if row_len else 1
            if np.count_nonzero(w) < need:
                n_unseen = self.n_items_ - (self.indptr_[user + 1] - self.indptr_[user])
                want = f"{row_len} distinct negatives" if row_len else "a negative"
                raise DataError(
                    f"NegativeSampler: user index {user} has {n_unseen} unseen item(s) of "
                    f"{self.n_items_}; cannot draw {want}. Drop such users or lower n."
                )
            flat[slots] = self.rng_.choice(
                self.n_items_, size=len(slots), replace=not row_len, p=w / w.sum()
            )


def _clean(m: sp.spmatrix) -> sp.csr_matrix:
    """A CSR copy with duplicates summed, explicit zeros dropped and sorted indices."""
    csr = sp.csr_matrix(m, copy=True)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    csr.sort_indices()
    return csr


def _repeats_in_rows(a: np.ndarray) -> np.ndarray:
    """(B, n) bool: True where the value already occurred earlier in its row."""
    order = np.argsort(a, axis=1, kind="stable")
    srt = np.take_along_axis(a, order, axis=1)
    rep_sorted = np.zeros(a.shape, dtype=bool)
    rep_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
    rep = np.zeros(a.shape, dtype=bool)
    np.put_along_axis(rep, order, rep_sorted, axis=1)
    return rep


# ---------------------------------------------------------------------------- reservoirs
def reservoir_sample(
    stream: Iterable[T], m: int, seed: int | None = 0, method: str = "L"
) -> list[T]:
    """A uniform sample of ``m`` elements of ``stream`` (any iterable, length unknown).

    Every element ends up in the result with probability m/n (n = stream length); the
    result is in reservoir order, not stream order. If the stream has fewer than m
    elements, all of them are returned. ``method``: "R" (Algorithm R, one random number per
    element) or "L" (Algorithm L, skips ahead geometrically; much faster when n >> m).
    """
    if m < 0:
        raise ConfigError(f"reservoir_sample: m must be >= 0, got {m}.")
    if method not in ("R", "L"):
        raise ConfigError(f"reservoir_sample: method must be 'R' or 'L', got {method!r}.")
    rng = random.Random(seed)
    it = iter(stream)
    reservoir = list(itertools.islice(it, m))
    if len(reservoir) < m or m == 0:
        return reservoir
    if method == "R":
        for i, x in enumerate(it, start=m):
            j = rng.randrange(i + 1)
            if j < m:
                reservoir[j] = x
        return reservoir
    w = math.exp(math.log(_open01(rng)) / m)
    while True:
        skip = math.floor(math.log(_open01(rng)) / math.log1p(-w)) if w < 1.0 else 0
        nxt: Any = next(itertools.islice(it, skip, None), _END)
        if nxt is _END:
            return reservoir
        reservoir[rng.randrange(m)] = nxt
        w *= math.exp(math.log(_open01(rng)) / m)


_END = object()


def _open01(rng: random.Random) -> float:
    """A uniform draw in (0, 1) (log-safe)."""
    u = rng.random()
    while u == 0.0:
        u = rng.random()
    return u
