"""What the ranker sees of the funnel: per-candidate recall features and feature crosses,
computed by the same functions when a training frame is built and when a request is served.

A ranker that re-ranks recall candidates must learn on what the funnel feeds it: each
user's candidates from the recall pipeline, labelled by what the user went on to consume
(``candidate_frame``), with the candidate's place in the recall (``recall_columns``):

* ``recall_rank``: log(1 + merged position); ``recall_score``: the merged score;
* per source s (every channel, then the fallback): ``recall_rank_<s>`` = log(1 + rank in
  s), or log(1 + number of candidates) when s did not return the item, and
  ``recall_score_<s>``, the raw score in s (NaN when s did not return it; the encoder
  reads NaN as the column mean), and ``recall_gap_<s>``, that score minus the best score
  s gave any of the user's candidates (``gap_to_best``: 0 for s's top item; raw scores
  are on a per-user scale, the gap says how close the item came to s's favourite);

the user's and item's volume in the training log (``interaction_counts``:
``user_activity`` = log(1 + the user's interactions), ``item_pop`` = log(1 + the item's);
ordinary user/item table columns, so a bundle written with those tables serves them);
and crosses of a request or user column with an item column (``cross_values``): the column
``"daypart|category"`` holds ``"<daypart>|<category>"`` per row, so that a ranker without
feature interactions of its own (trees, LR) still has "what this context wants of this
kind of item" as one feature. ``serving.bundle.field_sources`` maps ``recall_*`` columns
to the request's candidates and ``a|b`` columns to crosses, and ``serving.core`` calls
these functions per request: no train/serve skew.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

RECALL_PREFIX = "recall_"
CROSS_SEP = "|"


def recall_columns(cand: Any, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Recall features (module docstring) of candidate ``rows`` (positions into ``cand``,
    a ``Candidates``); returns column name -> (len(rows),) float64."""
    rows = np.asarray(rows, dtype=np.int64)
    n_cand = max(len(cand.items), 1)
    out = {
        "recall_rank": np.log1p(rows.astype(np.float64)),
        "recall_score": cand.score[rows].astype(np.float64),
    }
    for s, name in enumerate(cand.sources):
        rank = cand.source_rank[rows, s].astype(np.float64)
        out[f"recall_rank_{name}"] = np.log1p(np.where(np.isnan(rank), n_cand, rank))
        out[f"recall_score_{name}"] = cand.source_score[rows, s].astype(np.float64)
    if len(cand.sources):
        gaps = gap_to_best(cand.source_score.astype(np.float64))[rows]
        for s, name in enumerate(cand.sources):
            out[f"recall_gap_{name}"] = gaps[:, s]
    return out


def gap_to_best(scores: np.ndarray, groups: Sequence[Any] | None = None) -> np.ndarray:
    """``scores`` (n, n_sources; NaN where a source did not return the row) minus each
    column's best (NaN-skipping max) over the rows of the same group (``groups``: (n,)
    labels, e.g. the user of each candidate row; None: all rows are one user's
    candidates). Returns (n, n_sources) float64, <= 0, NaN where the score is NaN."""
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if groups is None:  # one user's candidates (every request): no DataFrame on this path
        if not len(values):
            return values
        return values - np.fmax.reduce(values, axis=0)[None, :]  # fmax skips NaN
    frame = pd.DataFrame(values)
    return values - frame.groupby(np.asarray(groups, dtype=object)).transform("max").to_numpy()


def interaction_counts(log: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Volume features of a training log (rows of ``user``, ``item``): a user table with
    ``user_activity`` = log(1 + the user's rows) and an item table with ``item_pop`` =
    log(1 + the item's rows), indexed by raw id. Join them to the user/item feature tables
    given to ``candidate_frame`` and ``serving.write_bundle`` (``with_counts``) so that
    the ranker is trained and served the same values."""
    users = np.log1p(log["user"].value_counts().astype(np.float64)).rename("user_activity")
    items = np.log1p(log["item"].value_counts().astype(np.float64)).rename("item_pop")
    users.index.name, items.index.name = "user", "item"
    return users.to_frame(), items.to_frame()


def with_counts(
    log: pd.DataFrame, user_features: pd.DataFrame | None, item_features: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``user_features`` / ``item_features`` (or empty tables) with the
    ``interaction_counts`` of ``log`` added as columns (0 for an id absent from ``log``:
    log(1 + 0)); the two returned tables are indexed by every id of either source."""
    counts = interaction_counts(log)
    out = []
    for table, extra in zip((user_features, item_features), counts):
        base = pd.DataFrame(index=extra.index) if table is None else table
        index = base.index.union(extra.index, sort=False)
        joined = base.reindex(index).join(extra.reindex(index).fillna(0.0))
        joined.index.name = base.index.name or extra.index.name
        out.append(joined)
    return out[0], out[1]


def missing_recall_columns(names: Sequence[str], n: int, n_cand: int) -> dict[str, np.ndarray]:
    """Recall features of ``n`` items no source returned (a caller-supplied item)."""
    out = {}
    for name in names:
        if name.startswith("recall_rank"):
            out[name] = np.full(n, np.log1p(float(max(n_cand, 1))))
        else:
            out[name] = np.full(n, np.nan)
    return out


def cross_parts(column: str) -> list[str] | None:
    """The columns a cross column name joins (``"daypart|category"`` -> both), else None."""
    parts = column.split(CROSS_SEP)
    return parts if len(parts) >= 2 and all(parts) else None


def cross_values(parts: Sequence[Sequence[Any]]) -> np.ndarray:
    """Row-wise ``"a|b"`` strings of equal-length value sequences; None where a part is
    missing (None/NaN), which the encoder reads as unknown. Returns (n,) object."""
    cols = [pd.Series(np.asarray(p, dtype=object)) for p in parts]
    missing = np.zeros(len(cols[0]), dtype=bool)
    for c in cols:
        missing |= c.isna().to_numpy()
    joined = cols[0].astype(str)
    for c in cols[1:]:
        joined = joined + CROSS_SEP + c.astype(str)
    out = joined.to_numpy(dtype=object)
    out[missing] = None
    return out


def candidate_frame(
    pipeline: Any,
    users: Sequence[Any],
    *,
    top: int,
    labels: pd.DataFrame | None = None,
    contexts: Mapping[Any, Mapping[str, Any]] | None = None,
    user_features: pd.DataFrame | None = None,
    item_features: pd.DataFrame | None = None,
    crosses: Sequence[tuple[str, str]] = (),
    drop: Sequence[str] = ("title",),
) -> pd.DataFrame:
    """Each user's best ``top`` recall candidates (``pipeline.candidates``, the serving
    path) as ranker rows: ``user``, ``item``, the recall features, the user's request
    context (``contexts``: user -> {column: value}), the user and item feature columns
    (except ``drop``: free text), the ``crosses`` (pairs of column names, as ``a|b``) and,
    with ``labels`` (rows of ``user``, ``item``), ``label`` (int8): 1 where the user
    consumed the candidate in ``labels``. Rows are grouped by user, best recall first."""
    parts: list[dict[str, Any]] = []
    for u in users:
        cand = pipeline.candidates(u)
        rows = np.arange(min(top, len(cand.items)))
        if not len(rows):
            continue
        cols: dict[str, Any] = {
            "user": np.full(len(rows), u, dtype=object),
            "item": pipeline.catalogue_.ids(cand.items[rows]),
        }
        cols.update(recall_columns(cand, rows))
        parts.append(cols)
    if not parts:
        raise ValueError("candidate_frame: no user got any candidate.")
    names = list(dict.fromkeys(k for p in parts for k in p))
    frame = pd.DataFrame(
        {k: np.concatenate([p.get(k, _absent(k, len(p["user"]))) for p in parts]) for k in names}
    )
    if contexts:
        ctx = pd.DataFrame.from_dict(dict(contexts), orient="index")
        for col in ctx.columns:
            frame[col] = ctx[col].reindex(frame["user"].to_numpy()).to_numpy(dtype=object)
    for table, key in ((user_features, "user"), (item_features, "item")):
        if table is None:
            continue
        t = table.drop(columns=[c for c in drop if c in table.columns])
        t = t.reindex(frame[key].to_numpy())
        for col in t.columns:
            if col not in frame.columns:
                frame[col] = t[col].to_numpy()
    for a, b in crosses:
        frame[f"{a}{CROSS_SEP}{b}"] = cross_values([frame[a].to_numpy(), frame[b].to_numpy()])
    if labels is not None:
        pos = pd.MultiIndex.from_frame(labels[["user", "item"]].drop_duplicates())
        hit = pd.MultiIndex.from_arrays([frame["user"], frame["item"]]).isin(pos)
        frame["label"] = hit.astype(np.int8)
    return frame


def _absent(name: str, n: int) -> np.ndarray:
    """A recall column a user's candidates lack (a source absent for them)."""
    return np.full(n, np.nan)
