"""DIN-style samples with histories: what came before the target, the most recent max_len
of it, negatives the user never clicked, sessions by an inactivity gap; and the encoder
keeping the LAST values of a history."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recforge.data import Interactions
from recforge.data.features import FeatureEncoder, pad_lists
from recforge.data.history import history_columns, history_samples
from recforge.exceptions import DataError


@pytest.fixture
def log():
    frame = pd.DataFrame(
        {  # u1's rows are out of time order on purpose
            "user": ["u1", "u1", "u2", "u1", "u2", "u1", "u2", "u1"],
            "item": [10, 11, 12, 13, 10, 14, 15, 16],
            "timestamp": [0, 10, 0, 20, 5, 1000, 8, 30],
        }
    )
    items = pd.DataFrame(
        {"cat": ["a", "b", "a", "c", "b", "a", "c", "z"]},
        index=pd.Index([10, 11, 12, 13, 14, 15, 16, 17], name="item"),
    )
    return Interactions(frame, item_features=items)


def test_histories_hold_the_most_recent_events_before_the_target(log):
    df = history_samples(log, attributes=["cat"], max_len=3, n_negatives=2, seed=1)
    pos = df[df["label"] == 1]
    # u1 in time order: 10, 11, 13, 16, 14 ; u2: 12, 10, 15
    assert pos["item"].tolist() == [11, 13, 16, 14, 10, 15]
    assert [list(h) for h in pos["hist_item"]] == [
        [10],
        [10, 11],
        [10, 11, 13],
        [11, 13, 16],  # truncated to the last 3
        [12],
        [12, 10],
    ]
    assert [list(h) for h in pos["hist_cat"]] == [
        ["a"],
        ["a", "b"],
        ["a", "b", "c"],
        ["b", "c", "c"],
        ["a"],
        ["a", "a"],
    ]
    assert pos["cat"].tolist() == ["b", "c", "c", "b", "a", "a"]
    assert pos["events_after"].tolist() == [3, 2, 1, 0, 1, 0]
    assert df["label"].tolist() == [1, 0, 0] * 6  # positive first, then its negatives
    clicked = log.frame.groupby("user")["item"].agg(set)
    neg = df[df["label"] == 0]
    assert all(i not in clicked[u] for u, i in zip(neg["user"], neg["item"]))
    # a negative shares its positive's history and carries its own attributes
    for _, row in neg.iterrows():
        assert row["cat"] == log.item_features.loc[row["item"], "cat"]
    assert history_columns(df) == {"hist_item": "item", "hist_cat": "cat"}


def test_sessions_split_by_gap_and_length(log):
    df = history_samples(log, max_len=10, n_negatives=0, session_gap=100, session_max_events=3)
    last_u1 = df[(df["user"] == "u1") & (df["events_after"] == 0)].iloc[0]
    # u1: 10, 11, 13 | 16 (3 events max) | 14 after a gap of 970 -> history 10 11 13 16
    assert list(last_u1["hist_session"]) == [0, 0, 0, 1]
    gap_only = history_samples(log, max_len=10, n_negatives=0, session_gap=100)
    assert list(gap_only.iloc[3]["hist_session"]) == [0, 0, 0, 0]


def test_min_history_and_errors(log):
    df = history_samples(log, max_len=5, n_negatives=0, min_history=2)
    assert df["hist_item"].map(len).min() == 2
    with pytest.raises(DataError, match="price"):
        history_samples(log, attributes=["price"])


def test_encoder_keeps_the_last_values_of_a_history_and_the_first_of_other_lists():
    lists = [[3, 3, 3, 3, 1, 2], [3], []]
    frame = pd.DataFrame(
        {
            "item": [1, 2, 3],
            "hist": lists,
            "hist_np": [np.asarray(x, dtype=np.int64) for x in lists],  # the fast path
            "tags": lists,
        }
    )
    enc = FeatureEncoder(
        max_len=3, share={"hist": "item", "hist_np": "item"}, keep_last=["hist", "hist_np"]
    )
    x = enc.fit(frame).transform(frame)
    vocab = {v: i + 1 for i, v in enumerate(enc._vocabs["item"])}
    assert x.multi["hist"][0].tolist() == [vocab[3], vocab[1], vocab[2]]
    np.testing.assert_array_equal(x.multi["hist"], x.multi["hist_np"])
    tags = enc._vocabs["tags"]
    assert [tags[c - 1] for c in x.multi["tags"][0]] == [3, 3, 3]
    assert x.multi["hist"][2].tolist() == [0, 0, 0]
    enc2 = FeatureEncoder.from_json(enc.to_json())
    np.testing.assert_array_equal(enc2.transform(frame).multi["hist"], x.multi["hist"])
    raw = pad_lists(frame["hist"], 4, keep_last=True)
    assert raw.tolist() == [[3, 3, 1, 2], [3, 0, 0, 0], [0, 0, 0, 0]]


def test_beauty_brand_and_category_from_the_attribute_lists(real_data):
    if not (real_data / "amazon-beauty" / "Beauty.txt").exists():
        pytest.skip("amazon-beauty not in the data folder")
    from benchmarks.ctr_history import load_beauty

    itf = load_beauty(real_data).item_features
    assert len(itf) == 12101 and (itf["cat"] != -1).all()  # every item has a category
    assert 0.5 < (itf["brand"] != -1).mean() < 0.7  # S3-Rec lists a brand for ~62% of items
    assert not set(itf["brand"]) - {-1} & set(itf["cat"])  # brand ids are never categories


def test_targets_restrict_the_samples_but_not_the_histories(log):
    last = log.frame.sort_values("timestamp").groupby("user").tail(1)  # u1: 14, u2: 15
    df = history_samples(log, max_len=10, n_negatives=0, targets=last)
    assert sorted(df["item"]) == [14, 15]
    assert list(df.set_index("item").loc[14, "hist_item"]) == [10, 11, 13, 16]
