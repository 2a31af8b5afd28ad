"""Train / validation / test splits of an interaction log.

Every split returns ``(train, test)`` when it has no validation part and
``(train, valid, test)`` when it has one, as ``Interactions`` sharing the feature tables.
The parts are disjoint sets of rows of the input.

``filter_cold`` (default True) drops validation and test rows whose user or item does not
occur in train: a model cannot score an id it never saw, and full-ranking evaluation would
raise ``UnknownIdError`` on it. The dropped rows go nowhere (they are not moved to train);
pass ``filter_cold=False`` to keep them, e.g. to evaluate a cold-start fallback. Each
part's ``meta`` says what was dropped: ``dropped_cold_rows`` and, for the random split,
``dropped_train_pairs``.

All splits are vectorised (sorting and group counts, no per-user Python loop) and
deterministic: the random split by its ``seed``; the time-based ones break timestamp ties
by row order. What each split leaks, and when to use it:

* ``temporal_split``: one global time cut; test = the latest ``test_ratio`` of rows (rows
  sharing the cut timestamp all go to the later part, so no timestamp straddles the cut).
  No leak: train holds only the past. The default of train jobs when the log has
  timestamps.
* ``user_temporal_split``: per user, the latest fraction of their rows by time. Leaks the
  future: train holds other users' interactions from after a test user's test period
  (what became popular, which items co-occur later), which flatters popularity and CF.
  Use it to compare with published per-user protocols, not as a deployment estimate.
* ``leave_one_out``: per user, the latest row to test and the one before to validation.
  The sequential-recommendation protocol (SASRec, BERT4Rec); the same future leak as
  ``user_temporal_split``.
* ``random_split``: rows at random. Ignores time altogether (train holds the future of
  every test row); for logs without timestamps, or to match a published random protocol.
  A (user, item) pair both in train and in test would be masked by full ranking (a seen
  item) yet counted relevant, so such test and validation rows are dropped (counted).

The time-based splits keep a test row whose pair also occurs in train (the user consumed
the item again): that is the re-consumption the protocol measures; full ranking with
``exclude_seen`` cannot hit it, so evaluate such logs with ``exclude_seen=False`` if
re-consumption matters.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from recforge.data.interactions import Interactions
from recforge.exceptions import ConfigError, DataError

log = logging.getLogger(__name__)

Split = tuple[Interactions, Interactions] | tuple[Interactions, Interactions, Interactions]


def random_split(
    inter: Interactions,
    test_ratio: float = 0.2,
    valid_ratio: float = 0.0,
    *,
    seed: int = 0,
    filter_cold: bool = True,
    drop_train_pairs: bool = True,
) -> Split:
    """Rows assigned at random: round(n * ratio) rows to test (and validation), less the
    rows dropped afterwards: cold ones (``filter_cold``) and, with ``drop_train_pairs``,
    those whose (user, item) pair also occurs in train (logged, and counted in the part's
    ``meta["dropped_train_pairs"]``)."""
    _check_ratios(test_ratio, valid_ratio)
    n = len(inter)
    perm = np.random.default_rng(seed).permutation(n)
    part = np.zeros(n, dtype=np.int8)  # 0 train, 1 valid, 2 test
    n_test, n_valid = round(n * test_ratio), round(n * valid_ratio)
    part[perm[:n_test]] = 2
    part[perm[n_test : n_test + n_valid]] = 1
    return _assemble(inter, part, valid_ratio > 0, filter_cold, "random", drop_train_pairs)


def temporal_split(
    inter: Interactions,
    test_ratio: float = 0.2,
    valid_ratio: float = 0.0,
    *,
    filter_cold: bool = True,
) -> Split:
    """A global time cut: train is everything before the validation and test periods."""
    _check_ratios(test_ratio, valid_ratio)
    ts = _timestamps(inter, "temporal_split")
    n = len(inter)
    srt = np.sort(ts)
    part = np.zeros(n, dtype=np.int8)
    if n == 0:
        return _assemble(inter, part, valid_ratio > 0, filter_cold, "temporal")
    n_test, n_later = round(n * test_ratio), round(n * (test_ratio + valid_ratio))
    if n_later > n_test:
        part[ts >= srt[n - n_later]] = 1
    if n_test > 0:
        part[ts >= srt[n - n_test]] = 2
    return _assemble(inter, part, valid_ratio > 0, filter_cold, "temporal")


def user_temporal_split(
    inter: Interactions,
    test_ratio: float = 0.2,
    valid_ratio: float = 0.0,
    *,
    filter_cold: bool = True,
) -> Split:
    """Per user, the latest ``test_ratio`` of their rows to test and the ``valid_ratio``
    before those to validation, rounded per user (half up); every user keeps at least one
    train row, so a user with a single row stays in train only."""
    _check_ratios(test_ratio, valid_ratio)
    ts = _timestamps(inter, "user_temporal_split")
    rank, size = _rank_in_user(inter, ts)
    n_test = np.minimum(np.floor(size * test_ratio + 0.5), size - 1)
    n_valid = np.minimum(np.floor(size * valid_ratio + 0.5), size - 1 - n_test)
    from_end = size - 1 - rank  # 0 = the user's latest row
    part = np.where(from_end < n_test, 2, np.where(from_end < n_test + n_valid, 1, 0)).astype(
        np.int8
    )
    return _assemble(inter, part, valid_ratio > 0, filter_cold, "user_temporal")


def leave_one_out(inter: Interactions, valid: bool = True, *, filter_cold: bool = True) -> Split:
    """Per user: the latest row to test and, if ``valid``, the second latest to validation.

    Users need at least 2 rows (3 with ``valid``) to give any: a user with fewer stays in
    train only, so that every evaluated user has history. Timestamp ties are broken by row
    order (a later row counts as later).
    """
    ts = _timestamps(inter, "leave_one_out")
    rank, size = _rank_in_user(inter, ts)
    from_end = size - 1 - rank
    eligible = size >= (3 if valid else 2)
    part = np.zeros(len(inter), dtype=np.int8)
    part[eligible & (from_end == 0)] = 2
    if valid:
        part[eligible & (from_end == 1)] = 1
    return _assemble(inter, part, valid, filter_cold, "leave_one_out")


# ---------------------------------------------------------------------------- helpers
def _check_ratios(test_ratio: float, valid_ratio: float) -> None:
    if not 0 <= test_ratio < 1 or not 0 <= valid_ratio < 1 or test_ratio + valid_ratio >= 1:
        raise ConfigError(
            f"split ratios must be in [0, 1) with test_ratio + valid_ratio < 1; got "
            f"test_ratio={test_ratio}, valid_ratio={valid_ratio}."
        )


def _timestamps(inter: Interactions, where: str) -> np.ndarray:
    if not inter.has("timestamp"):
        raise DataError(
            f"{where} on {inter.name!r} needs a 'timestamp' column, found {list(inter.frame.columns)}; "
            f"name it with Interactions.from_frame(df, timestamp_col=...) or use random_split.",
            column="timestamp",
        )
    col = inter.frame["timestamp"]
    if col.isna().any():
        row = int(np.flatnonzero(col.isna().to_numpy())[0])
        raise DataError(
            f"{where}: missing timestamp in row {row}; fill or drop it.", column="timestamp"
        )
    if pd.api.types.is_datetime64_any_dtype(col):
        return col.to_numpy().astype("datetime64[ns]").astype(np.int64)
    if not pd.api.types.is_numeric_dtype(col):
        raise DataError(
            f"{where}: timestamp must be numeric or datetime, got dtype {col.dtype}; convert it "
            f"with pd.to_datetime or astype(int).",
            column="timestamp",
        )
    return col.to_numpy()


def _rank_in_user(inter: Interactions, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row: its position in its user's time order (0 = earliest), and the user's
    row count. Ties broken by row order. Both (n,) int64."""
    codes, _ = pd.factorize(inter.frame["user"], sort=False)
    n = len(codes)
    order = np.lexsort((np.arange(n), ts, codes))  # by user, then time, then row
    sorted_codes = codes[order]
    starts = np.r_[True, sorted_codes[1:] != sorted_codes[:-1]] if n else np.zeros(0, dtype=bool)
    first = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - first
    size = np.bincount(codes, minlength=codes.max() + 1 if n else 0)[codes].astype(np.int64)
    return rank, size


def _assemble(
    inter: Interactions,
    part: np.ndarray,
    with_valid: bool,
    filter_cold: bool,
    kind: str,
    drop_train_pairs: bool = False,
) -> Split:
    """Interactions for each part; drops cold valid/test rows when ``filter_cold`` and rows
    whose (user, item) pair is in train when ``drop_train_pairs``; counts go to the parts'
    ``meta`` (``dropped_cold_rows``, ``dropped_train_pairs``)."""
    train_mask = part == 0
    masks = {"valid": part == 1, "test": part == 2}
    dropped: dict[str, dict[str, int]] = {key: {} for key in masks}
    users_col, items_col = inter.frame["user"].to_numpy(), inter.frame["item"].to_numpy()
    if filter_cold:
        users = pd.Index(pd.unique(users_col[train_mask]))
        items = pd.Index(pd.unique(items_col[train_mask]))
        warm = (users.get_indexer(users_col) >= 0) & (items.get_indexer(items_col) >= 0)
        for key, mask in masks.items():
            dropped[key]["dropped_cold_rows"] = int((mask & ~warm).sum())
            masks[key] = mask & warm
    if drop_train_pairs:
        pairs = pd.MultiIndex.from_arrays([users_col, items_col])
        in_train = pairs.isin(pairs[train_mask])
        for key, mask in masks.items():
            dropped[key]["dropped_train_pairs"] = int((mask & in_train).sum())
            masks[key] = mask & ~in_train
    why = {
        "dropped_cold_rows": "cold (user or item not in train)",
        "dropped_train_pairs": "whose (user, item) pair is also in train",
    }
    for key, counts in dropped.items():
        for what, count in counts.items():
            if count:
                log.info("%s split: dropped %d %s rows %s", kind, count, key, why[what])
    train = inter.subset(train_mask, f"{inter.name}/train")
    test = inter.subset(masks["test"], f"{inter.name}/test")
    test.meta.update(dropped["test"])
    if with_valid:
        valid = inter.subset(masks["valid"], f"{inter.name}/valid")
        valid.meta.update(dropped["valid"])
        return train, valid, test
    return train, test
