"""Splits: disjoint parts, ratios, time order, leave-one-out semantics, cold filtering."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from recforge.data import Interactions
from recforge.data.splits import leave_one_out, random_split, temporal_split, user_temporal_split
from recforge.data.synth import SIZES, make_synthetic
from recforge.exceptions import ConfigError, DataError


@pytest.fixture(scope="module")
def inter() -> Interactions:
    return make_synthetic(**SIZES["tiny"], seed=5)


def row_keys(part: Interactions) -> set:
    f = part.frame
    return set(zip(f["user"], f["item"], f["timestamp"]))


def assert_disjoint_cover(whole: Interactions, parts: tuple) -> None:
    keys = [row_keys(p) for p in parts]
    assert sum(len(p) for p in parts) == len(whole)
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            assert not keys[i] & keys[j], "a row is in two parts"
    assert set().union(*keys) == row_keys(whole)


def assert_warm(train: Interactions, *others: Interactions) -> None:
    for part in others:
        assert set(part.frame["user"]) <= set(train.frame["user"])
        assert set(part.frame["item"]) <= set(train.frame["item"])


def test_random_split_ratios_disjoint_deterministic(inter):
    parts = random_split(inter, 0.2, 0.1, seed=1, filter_cold=False)
    assert len(parts) == 3
    assert_disjoint_cover(inter, parts)
    train, valid, test = parts
    assert len(test) == round(0.2 * len(inter)) and len(valid) == round(0.1 * len(inter))
    again = random_split(inter, 0.2, 0.1, seed=1, filter_cold=False)
    pd.testing.assert_frame_equal(again[2].frame, test.frame)
    other = random_split(inter, 0.2, 0.1, seed=2, filter_cold=False)
    assert row_keys(other[2]) != row_keys(test)
    assert train.user_features is inter.user_features  # feature tables shared


def test_filter_cold_is_the_default(tiny):
    train, test = random_split(tiny, 0.5, seed=0)
    assert_warm(train, test)
    _, test_all = random_split(tiny, 0.5, seed=0, filter_cold=False)
    assert len(test) <= len(test_all)


def test_temporal_split_is_one_global_cut(inter):
    train, valid, test = temporal_split(inter, 0.2, 0.1, filter_cold=False)
    assert_disjoint_cover(inter, (train, valid, test))
    assert train.frame["timestamp"].max() < valid.frame["timestamp"].min()
    assert valid.frame["timestamp"].max() < test.frame["timestamp"].min()
    assert abs(len(test) / len(inter) - 0.2) < 0.01
    assert abs(len(valid) / len(inter) - 0.1) < 0.01
    train, test = temporal_split(inter, 0.2)
    assert_warm(train, test)


def test_temporal_split_keeps_ties_together():
    df = pd.DataFrame(
        {"user": list("abcdef"), "item": [1, 2, 3, 4, 5, 6], "timestamp": [1, 2, 3, 3, 3, 4]}
    )
    train, test = temporal_split(Interactions(df), 0.5, filter_cold=False)
    assert sorted(test.frame["timestamp"]) == [3, 3, 3, 4] and sorted(train.frame["timestamp"]) == [
        1,
        2,
    ]


def test_user_temporal_split_cuts_each_user_by_time(inter):
    train, valid, test = user_temporal_split(inter, 0.2, 0.1, filter_cold=False)
    assert_disjoint_cover(inter, (train, valid, test))
    assert abs(len(test) / len(inter) - 0.2) < 0.02
    assert abs(len(valid) / len(inter) - 0.1) < 0.02
    t_max = train.frame.groupby("user")["timestamp"].max()
    v = valid.frame.groupby("user")["timestamp"]
    te = test.frame.groupby("user")["timestamp"]
    assert (t_max[v.min().index] <= v.min()).all()
    assert (v.max() <= te.min()[v.max().index]).all()
    assert set(test.frame["user"]) <= set(train.frame["user"])  # every user keeps train rows


def test_user_temporal_split_single_row_user_stays_in_train():
    df = pd.DataFrame(
        {"user": ["a", "b", "b", "b", "b"], "item": [1, 1, 2, 3, 4], "timestamp": [5, 1, 2, 3, 4]}
    )
    train, test = user_temporal_split(Interactions(df), 0.25, filter_cold=False)
    assert "a" in set(train.frame["user"]) and "a" not in set(test.frame["user"])
    assert test.frame["item"].tolist() == [4]


def test_leave_one_out_takes_each_users_latest(inter):
    train, valid, test = leave_one_out(inter, valid=True, filter_cold=False)
    assert_disjoint_cover(inter, (train, valid, test))
    f = inter.frame.sort_values(["user", "timestamp"], kind="stable")
    last = f.groupby("user").tail(1).set_index("user")["item"]
    second = f.groupby("user").nth(-2).set_index("user")["item"]
    assert test.frame["user"].is_unique and valid.frame["user"].is_unique
    assert (test.frame.set_index("user")["item"] == last[test.frame["user"]]).all()
    assert (valid.frame.set_index("user")["item"] == second[valid.frame["user"]]).all()
    assert len(test) == inter.n_users  # every synthetic user has >= 5 rows

    train, test = leave_one_out(inter, valid=False)
    assert_warm(train, test)


def test_leave_one_out_short_users_stay_in_train_and_ties_follow_row_order():
    df = pd.DataFrame(
        {
            "user": ["a", "a", "b", "b", "b", "c"],
            "item": [1, 2, 1, 2, 3, 3],
            "timestamp": [1, 2, 1, 2, 2, 9],
        }
    )
    train, valid, test = leave_one_out(Interactions(df), valid=True, filter_cold=False)
    assert test.frame.values.tolist() == [["b", 3, 2]]  # tie at t=2: the later row is latest
    assert valid.frame.values.tolist() == [["b", 2, 2]]
    assert set(train.frame["user"]) == {"a", "b", "c"}
    train, test = leave_one_out(Interactions(df), valid=False, filter_cold=False)
    assert sorted(test.frame["user"]) == ["a", "b"]


def test_time_splits_name_the_missing_timestamp_column(tiny):
    no_ts = Interactions(tiny.frame.drop(columns=["timestamp"]))
    for split in (temporal_split, user_temporal_split, leave_one_out):
        with pytest.raises(DataError, match="timestamp"):
            split(no_ts)
    assert len(random_split(no_ts, 0.2)) == 2  # random split needs no time


def test_bad_ratios_are_rejected(tiny):
    for test_ratio, valid_ratio in [(1.0, 0.0), (-0.1, 0.0), (0.6, 0.5)]:
        with pytest.raises(ConfigError, match="ratio"):
            random_split(tiny, test_ratio, valid_ratio)


def test_datetime_timestamps_work():
    df = pd.DataFrame(
        {
            "user": ["a"] * 4,
            "item": [1, 2, 3, 4],
            "timestamp": pd.to_datetime([f"2024-01-0{d}" for d in (4, 1, 3, 2)]),
        }
    )
    train, test = leave_one_out(Interactions(df), valid=False, filter_cold=False)
    assert test.frame["item"].tolist() == [1]


def test_splits_are_vectorised_on_a_large_log():
    rng = np.random.default_rng(0)
    n = 600_000
    df = pd.DataFrame(
        {
            "user": rng.integers(0, 100_000, n),
            "item": rng.integers(0, 20_000, n),
            "timestamp": rng.integers(0, 10**9, n),
        }
    )
    big = Interactions(df)
    start = time.perf_counter()
    train, valid, test = leave_one_out(big)
    user_temporal_split(big, 0.2)
    assert time.perf_counter() - start < 20  # seconds, on a loaded 2-core machine
    assert len(test) > 90_000


def test_random_split_drops_test_pairs_that_are_in_train(caplog):
    """A pair in train and test is masked by full ranking (seen) yet counted relevant, so it
    can never be hit; random_split drops such rows from test and validation and says how
    many."""
    import logging

    frame = pd.DataFrame(
        {"user": np.repeat(np.arange(20), 6), "item": np.tile([0, 1, 2, 0, 1, 2], 20)}
    )  # every pair twice
    inter = Interactions(frame)
    with caplog.at_level(logging.INFO, logger="recforge.data.splits"):
        train, valid, test = random_split(inter, 0.3, 0.2, seed=0)
    pairs = set(zip(train.frame["user"], train.frame["item"]))
    for part in (valid, test):
        assert not set(zip(part.frame["user"], part.frame["item"])) & pairs
    n_test = round(len(inter) * 0.3)
    assert test.meta["dropped_train_pairs"] > 0
    assert len(test) + test.meta["dropped_train_pairs"] + test.meta["dropped_cold_rows"] == n_test
    assert f"dropped {test.meta['dropped_train_pairs']} test rows whose (user, item)" in caplog.text
    kept = random_split(inter, 0.3, seed=0, drop_train_pairs=False)[1]
    assert kept.meta.get("dropped_train_pairs") is None and len(kept) > len(test)
