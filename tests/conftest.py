"""Shared fixtures: tiny deterministic data, and the real-data directory (skips if absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recforge.data import Interactions

# Tests run two workers side by side on small data: one thread each (recforge.threads).
os.environ.setdefault("RECFORGE_THREADS", "1")


def data_dir() -> Path | None:
    """RECFORGE_DATA_DIR, else ../shared/data next to the repo; None if neither exists."""
    env = os.environ.get("RECFORGE_DATA_DIR")
    cands = [Path(env)] if env else []
    cands.append(Path(__file__).resolve().parents[1].parent / "shared" / "data")
    for c in cands:
        if c.is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def real_data() -> Path:
    d = data_dir()
    if d is None:
        pytest.skip(
            "real datasets not found: set RECFORGE_DATA_DIR or place them in ../shared/data"
        )
    return d


def make_tiny_interactions(n_users: int = 60, n_items: int = 40, seed: int = 0) -> Interactions:
    """Two taste groups so that CF has signal; string user ids, int item ids (raw ids kept)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        group = u % 2
        pool = np.arange(group * n_items // 2, (group + 1) * n_items // 2)
        n = rng.integers(5, 12)
        items = rng.choice(pool, size=n, replace=False)
        if rng.random() < 0.3:  # some cross-group noise
            items = np.append(items, rng.integers(0, n_items))
        for t, i in enumerate(items):
            rows.append((f"u{u}", int(i) * 10 + 7, float(t + u * 100), 1.0 + (t % 5)))
    df = pd.DataFrame(rows, columns=["user", "item", "timestamp", "rating"]).drop_duplicates(
        ["user", "item"]
    )
    item_ids = np.arange(n_items) * 10 + 7
    item_features = pd.DataFrame(
        {
            "category": [f"c{i % 4}" for i in range(n_items)],
            "price": rng.random(n_items).round(3),
            "title": [
                f"item {i} {'red' if i < n_items // 2 else 'blue'} thing" for i in range(n_items)
            ],
        },
        index=pd.Index(item_ids, name="item"),
    )
    user_features = pd.DataFrame(
        {
            "gender": ["m" if u % 3 else "f" for u in range(n_users)],
            "age": rng.integers(18, 60, n_users),
        },
        index=pd.Index([f"u{u}" for u in range(n_users)], name="user"),
    )
    return Interactions(df.reset_index(drop=True), user_features, item_features, name="tiny")


def make_tiny_ctr(n: int = 400, seed: int = 0, *, history: bool = False) -> pd.DataFrame:
    """A CTR frame with categorical, integer-id, numeric and multi-valued columns and a label
    that depends on them. ``history``: also a candidate ``item`` (whose category is ``cat``)
    and the user's behaviours before it, oldest first, as history rankers read them:
    ``hist_item``, ``hist_cat`` (lists, 0-7 long) and ``hist_session``; the label then also
    depends on whether the history holds items of the candidate's parity."""
    rng = np.random.default_rng(seed)
    cat = rng.choice(["a", "b", "c", "d"], n)
    uid = rng.integers(0, 30, n)
    num = rng.normal(size=n)
    tags = [
        list(rng.choice(["x", "y", "z", "w"], rng.integers(0, 3), replace=False)) for _ in range(n)
    ]
    logit = (
        1.5 * (cat == "a")
        - 1.0 * (cat == "d")
        + 0.8 * num
        + 0.7 * np.array(["x" in t for t in tags])
    )
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame({"cat": cat, "uid": uid, "num": num, "tags": tags, "label": label})
    if not history:
        return frame
    item = rng.integers(1, 21, n)
    lengths = rng.integers(0, 8, n)
    hist = [rng.integers(1, 21, k) for k in lengths]
    cat_of = np.array(list("abcd"))[np.arange(21) % 4]
    same = np.array([np.mean(h % 2 == i % 2) if len(h) else 0.5 for h, i in zip(hist, item)])
    logit = logit + 3.0 * (same - 0.5)
    frame["item"] = item
    frame["cat"] = cat_of[item]
    frame["hist_item"] = [h.tolist() for h in hist]
    frame["hist_cat"] = [cat_of[h].tolist() for h in hist]
    frame["hist_session"] = [np.arange(len(h)) // 3 for h in hist]
    frame["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


@pytest.fixture
def tiny() -> Interactions:
    return make_tiny_interactions()


@pytest.fixture
def tiny_ctr() -> pd.DataFrame:
    return make_tiny_ctr()
