"""The business view of recommended lists: click-through per list position and value per user.

    view = business_view(lists, held_out, prices=item_features["price"], k=10)
    view["ctr@10"], view["ctr_by_position"], view["arpu@10"]

Offline, a recommended item counts as *clicked* when the user interacted with it in the
held-out period (the replay assumption every offline Recall@k makes: the held-out log
stands in for the user's reaction to the list). From that:

* ``ctr@k``: clicked recommended items / recommended items (list slots actually filled);
* ``ctr_by_position``: for list position p = 1..k, the share of users whose item at p was
  clicked (the position curve a team watches; it falls with p when the order is good);
* with item prices, per user: revenue = the sum of the prices of held-out interactions
  (clicks or purchases, whatever the held-out rows are) whose item was recommended;
  ``arpu@k`` is its mean over the users (ARPU-style, users with no revenue included),
  ``held_out_arpu`` the mean of every held-out interaction's price (what a list could
  at most capture) and ``revenue_share@k`` the captured share of it.

Plain functions over Python lists and pandas; no model or serving import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from recforge.exceptions import DataError


def business_view(
    lists: Mapping[Any, Sequence[Any]],
    held_out: pd.DataFrame,
    *,
    k: int = 10,
    prices: Mapping[Any, float] | pd.Series | None = None,
    user_col: str = "user",
    item_col: str = "item",
) -> dict[str, Any]:
    """CTR per position and revenue per user of ``lists`` (user -> ranked item ids) against
    ``held_out`` (rows of ``user_col``, ``item_col``: what each user went on to click or
    buy). Users of ``lists`` with no held-out row count with zero clicks and revenue.

    Returns {"n_users", "k", "ctr@k", "ctr_by_position" (list of k floats), and with
    ``prices`` (item id -> price) "arpu@k", "held_out_arpu", "revenue_share@k"}. An item
    without a price counts 0 in revenue.
    """
    if k < 1:
        raise DataError(f"business_view: k must be >= 1, got {k!r}.", column="k")
    for col in (user_col, item_col):
        if col not in held_out.columns:
            raise DataError(
                f"business_view: held_out has no {col!r} column (columns: "
                f"{list(held_out.columns)}).",
                column=col,
            )
    counts = held_out.groupby([user_col, item_col], sort=False).size()
    clicked: dict[Any, dict[Any, int]] = {}
    for (u, i), c in counts.items():
        clicked.setdefault(u, {})[i] = int(c)
    users = list(lists)
    hits = np.zeros((len(users), k), dtype=bool)  # (U, k) item at position p was clicked
    filled = np.zeros((len(users), k), dtype=bool)  # (U, k) the list has a position p
    price_of = None if prices is None else pd.Series(prices).to_dict()
    revenue = np.zeros(len(users))
    for r, u in enumerate(users):
        top = list(lists[u])[:k]
        seen = clicked.get(u, {})
        filled[r, : len(top)] = True
        hits[r, : len(top)] = [i in seen for i in top]
        if price_of is not None:
            revenue[r] = sum(_price(price_of, i) * seen[i] for i in set(top) if i in seen)
    n_slots = int(filled.sum())
    out: dict[str, Any] = {
        "n_users": len(users),
        "k": k,
        f"ctr@{k}": round(float(hits.sum() / n_slots), 4) if n_slots else 0.0,
        "ctr_by_position": [round(float(x), 4) for x in _mean_where(hits, filled)],
    }
    if price_of is not None:
        if len(users):
            rows = held_out[held_out[user_col].isin(set(users))]
            total = float(sum(_price(price_of, i) for i in rows[item_col])) / len(users)
        else:
            total = 0.0
        arpu = float(revenue.mean()) if len(users) else 0.0
        out[f"arpu@{k}"] = round(arpu, 2)
        out["held_out_arpu"] = round(total, 2)
        out[f"revenue_share@{k}"] = round(arpu / total, 4) if total > 0 else 0.0
    return out


def _price(price_of: dict[Any, float], item: Any) -> float:
    p = price_of.get(item)
    return 0.0 if p is None or not np.isfinite(p) else float(p)


def _mean_where(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Column means of ``x`` over the rows where ``mask`` holds (0 for an empty column)."""
    n = mask.sum(axis=0)
    return np.where(n > 0, (x & mask).sum(axis=0) / np.maximum(n, 1), 0.0)
