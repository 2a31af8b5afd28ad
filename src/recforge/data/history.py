"""DIN-style CTR samples with behaviour histories, built from an interaction log.

``history_samples(interactions, attributes=("category",), max_len=50)`` turns every event
that has at least ``min_history`` earlier events of its user into one positive sample and
``n_negatives`` negative samples:

* the history: the user's events strictly before the target, oldest first, truncated to
  the most recent ``max_len`` (columns ``hist_item`` and ``hist_<attribute>``, one NumPy
  array per row);
* the target: the clicked item (``label`` 1), or an item the user never interacted with
  anywhere in the log (``label`` 0), drawn by ``NegativeSampler`` (uniform, or by
  popularity^alpha), each with its attributes (columns ``item`` and ``<attribute>``);
* with ``session_gap`` (seconds of inactivity) or ``session_max_events`` (a session ends
  after that many events), ``hist_session``: the session number of every history event
  (0 = the user's first session), as DSIN reads it;
* ``events_after``: how many events of the user come after the target (0 = the last one),
  for leave-one-out splits; drop it before training.

Everything is array arithmetic over the time-sorted log: no Python loop per event (the
list cells are views cut from one flat array).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from recforge.data.interactions import Interactions
from recforge.data.sampling import NegativeSampler
from recforge.exceptions import ConfigError, DataError

HISTORY_PREFIX = "hist_"
SESSION_COLUMN = "hist_session"


def history_samples(
    interactions: Interactions,
    *,
    attributes: Sequence[str] = (),
    max_len: int = 50,
    min_history: int = 1,
    n_negatives: int = 1,
    negatives: str = "uniform",
    alpha: float = 0.75,
    session_gap: float | None = None,
    session_max_events: int | None = None,
    targets: pd.DataFrame | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """CTR samples with histories (see the module docstring).

    Args:
        interactions: the log; needs ``timestamp`` (ties keep the log's order), and
            ``item_features`` holding ``attributes`` when any are named.
        attributes: item feature columns (scalar values) carried for targets and histories.
        max_len: most recent events kept per history.
        min_history: events with fewer earlier events of the user are not targets.
        n_negatives: negative targets per positive.
        negatives: "uniform" or "popularity" (``NegativeSampler`` strategy).
        alpha: popularity exponent for ``negatives="popularity"``.
        session_gap: a gap longer than this (timestamp units) starts a new session.
        session_max_events: a session also ends after this many events.
        targets: only events whose (user, item, timestamp) is a row of this frame are
            targets (e.g. one split of the log, the histories still coming from all of it).
        seed: seeds the negative sampler.

    Returns:
        A DataFrame, ``(1 + n_negatives)`` rows per target (the positive first), with
        ``user``, ``item``, the attributes, ``hist_item``, ``hist_<attribute>``,
        ``hist_session`` (with sessions), ``events_after`` and ``label`` (int8); targets
        in user order, then time order.
    """
    if max_len < 1 or min_history < 0 or n_negatives < 0:
        raise ConfigError(
            f"history_samples: need max_len >= 1, min_history >= 0, n_negatives >= 0; got "
            f"max_len={max_len}, min_history={min_history}, n_negatives={n_negatives}."
        )
    if not interactions.has("timestamp"):
        raise DataError(
            f"history_samples: {interactions.name} has no timestamp column; histories need "
            f"the order of events."
        )
    attributes = list(attributes)
    itf = interactions.item_features
    if attributes:
        missing = [a for a in attributes if itf is None or a not in itf.columns]
        if missing:
            found = [] if itf is None else list(itf.columns)
            raise DataError(
                f"history_samples: attribute(s) {missing} are not item feature columns of "
                f"{interactions.name}; found {found}."
            )
    frame = interactions.frame
    order = np.lexsort((np.asarray(frame["timestamp"]), _codes(frame["user"])))
    log = frame.iloc[order].reset_index(drop=True)  # sorted by user, then time (stable)
    n = len(log)
    user_codes = _codes(log["user"])
    new_user = np.r_[True, user_codes[1:] != user_codes[:-1]]
    user_start = np.maximum.accumulate(np.where(new_user, np.arange(n), 0))  # (n,)
    position = np.arange(n) - user_start  # events of the user before each event
    user_end = np.r_[np.flatnonzero(new_user)[1:], n]  # one past each user's last event
    events_after = np.repeat(user_end, np.diff(np.r_[np.flatnonzero(new_user), n])) - 1
    events_after -= np.arange(n)

    is_target = position >= max(min_history, 0)
    if targets is not None:
        key = ["user", "item", "timestamp"]
        is_target &= pd.MultiIndex.from_frame(log[key]).isin(pd.MultiIndex.from_frame(targets[key]))
    targets = np.flatnonzero(is_target)
    h = np.minimum(position[targets], max_len)  # history length per target
    flat = np.repeat(targets - h, h) + _ranges(h)  # log rows of every history event, in order
    cuts = np.cumsum(h)[:-1]

    values = {"item": log["item"].to_numpy()}
    if attributes:
        feats = itf[attributes].reindex(log["item"].to_numpy())
        for a in attributes:
            values[a] = feats[a].to_numpy()
    hist = {f"{HISTORY_PREFIX}{k}": np.split(v[flat], cuts) for k, v in values.items()}
    if session_gap is not None or session_max_events is not None:
        sessions = _sessions(log["timestamp"].to_numpy(), new_user, session_gap, session_max_events)
        hist[SESSION_COLUMN] = np.split(sessions[flat], cuts)

    g = 1 + n_negatives
    rows = np.repeat(targets, g)  # log row of each output row
    item_ids = log["item"].to_numpy()[rows].copy()
    label = np.zeros((len(targets), g), dtype=np.int8)
    label[:, 0] = 1
    if n_negatives:
        user_vocab, item_vocab = interactions.vocabs()
        sampler = NegativeSampler(strategy=negatives, alpha=alpha, seed=seed).fit(
            interactions.to_csr(user_vocab, item_vocab)
        )
        u_idx = user_vocab.index(log["user"].to_numpy()[targets])
        neg = item_vocab.ids(sampler.sample(u_idx, n_negatives).ravel())
        item_ids.reshape(len(targets), g)[:, 1:] = neg.reshape(len(targets), n_negatives)
    out = pd.DataFrame({"user": log["user"].to_numpy()[rows], "item": item_ids})
    if attributes:
        target_feats = itf[attributes].reindex(item_ids)
        for a in attributes:
            out[a] = target_feats[a].to_numpy()
    which = np.repeat(np.arange(len(targets)), g)
    for col, cells in hist.items():
        arr = np.empty(len(cells), dtype=object)
        arr[:] = cells
        out[col] = arr[which]
    out["events_after"] = events_after[rows]
    out["label"] = label.ravel()
    return out


def history_columns(frame: pd.DataFrame) -> dict[str, str]:
    """``{"hist_X": "X"}`` for every ``hist_X`` column whose target column ``X`` is in the
    frame (the default pairing of the history rankers)."""
    return {
        c: c[len(HISTORY_PREFIX) :]
        for c in frame.columns
        if c.startswith(HISTORY_PREFIX) and c[len(HISTORY_PREFIX) :] in frame.columns
    }


def _codes(col: pd.Series) -> np.ndarray:
    return pd.factorize(col, sort=False)[0].astype(np.int64)


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(l)`` for every l in ``lengths``."""
    total = int(lengths.sum())
    return np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def _sessions(
    ts: np.ndarray, new_user: np.ndarray, gap: float | None, max_events: int | None
) -> np.ndarray:
    """Session number of every event within its user (0 = first): a new session starts at
    a user's first event, after a gap > ``gap``, and after ``max_events`` events."""
    t = pd.to_numeric(pd.Series(ts)).to_numpy(dtype=np.float64)
    start = new_user.copy()
    if gap is not None:
        start |= np.r_[True, np.diff(t) > gap]
    if max_events is not None:
        if max_events < 1:
            raise ConfigError(
                f"history_samples: session_max_events must be >= 1, got {max_events}."
            )
        first = np.maximum.accumulate(np.where(start, np.arange(len(t)), 0))
        start |= (np.arange(len(t)) - first) % max_events == 0
    number = np.cumsum(start)  # global session number, 1-based
    user_first = np.maximum.accumulate(np.where(new_user, number, 0))
    return (number - user_first).astype(np.int64)
