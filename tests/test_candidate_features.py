"""Recall features and crosses: the same values when a ranker's training frame is built and
when the server assembles a request (no train/serve skew)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recforge import models
from recforge.data.splits import user_temporal_split
from recforge.pipeline import RecallPipeline
from recforge.pipeline.candidate_features import (
    candidate_frame,
    cross_parts,
    cross_values,
    gap_to_best,
    interaction_counts,
    recall_columns,
    with_counts,
)
from recforge.pipeline.recall import Candidates
from recforge.serving import Recommender, write_bundle
from recforge.serving.build import request_contexts
from tests.serving_fixtures import RECALL, tiny_log


def test_cross_values_and_names():
    out = cross_values([["night", None, "morning"], ["cat01", "cat02", float("nan")]])
    assert out.tolist() == ["night|cat01", None, None]
    assert cross_parts("daypart|category") == ["daypart", "category"]
    assert cross_parts("category") is None and cross_parts("a|") is None


def test_recall_columns_by_hand():
    nan = np.nan
    cand = Candidates(
        items=np.array([7, 3, 5]),
        score=np.array([0.9, 0.5, 0.1]),
        sources=["cf", "fallback"],
        source_rank=np.array([[0, nan], [1, 0], [nan, 1]], dtype=np.float32),
        source_score=np.array([[2.0, nan], [1.0, 9.0], [nan, 8.0]], dtype=np.float32),
        cold=False,
        unknown_history=[],
    )
    c = recall_columns(cand, np.array([0, 2]))
    assert c["recall_rank"] == pytest.approx(np.log1p([0, 2]))
    assert c["recall_score"] == pytest.approx([0.9, 0.1])
    assert c["recall_rank_cf"] == pytest.approx(np.log1p([0, 3]))  # absent -> n candidates
    assert c["recall_score_cf"][0] == 2.0 and np.isnan(c["recall_score_cf"][1])
    assert c["recall_rank_fallback"] == pytest.approx(np.log1p([3, 1]))
    # gap to the source's best score over all three candidates, not just the rows asked
    assert c["recall_gap_cf"][0] == 0.0 and np.isnan(c["recall_gap_cf"][1])
    assert c["recall_gap_fallback"] == pytest.approx([np.nan, -1.0], nan_ok=True)


def test_gap_to_best_per_group():
    nan = np.nan
    scores = np.array([[3.0, nan], [1.0, 5.0], [2.0, 4.0], [7.0, nan]])
    out = gap_to_best(scores, ["a", "a", "a", "b"])
    expect = [[0.0, nan], [-2.0, 0.0], [-1.0, -1.0], [0.0, nan]]
    np.testing.assert_allclose(out, expect)
    np.testing.assert_allclose(gap_to_best(scores[:3]), expect[:3])


def test_interaction_counts_and_with_counts():
    log = pd.DataFrame({"user": ["u1", "u1", "u2"], "item": ["a", "b", "a"]})
    users, items = interaction_counts(log)
    assert users.loc["u1", "user_activity"] == pytest.approx(np.log1p(2))
    assert items.loc["a", "item_pop"] == pytest.approx(np.log1p(2))
    side = pd.DataFrame({"genre": ["x", "y"]}, index=pd.Index(["a", "c"], name="item"))
    u, i = with_counts(log, None, side)
    assert i.loc["c", "item_pop"] == 0.0 and i.loc["c", "genre"] == "y"  # unseen item: 0
    assert i.loc["b", "item_pop"] == pytest.approx(np.log1p(1)) and pd.isna(i.loc["b", "genre"])
    assert list(u.columns) == ["user_activity"] and i.index.name == "item"


def test_a_ranker_on_candidates_is_served_the_features_it_was_trained_on(tmp_path):
    inter = tiny_log()
    early, later = user_temporal_split(inter, test_ratio=0.3)
    pipe = RecallPipeline.from_config(RECALL).fit(early)
    users = sorted(set(later.users) & set(early.users))[:60]
    contexts = request_contexts(later, ["device", "daypart"])
    # the volumes of the recall's training log ride in the user/item tables
    user_table, item_table = with_counts(early.frame, inter.user_features, inter.item_features)
    frame = candidate_frame(
        pipe,
        users,
        top=30,
        labels=later.frame,
        contexts=contexts,
        user_features=user_table,
        item_features=item_table,
        crosses=[("daypart", "category"), ("device", "category")],
    )
    assert frame.groupby("user").size().max() == 30 and frame["label"].sum() > 0
    assert {"recall_rank_ease", "recall_score_itemcf", "daypart|category"} <= set(frame.columns)
    assert {"recall_gap_ease", "item_pop", "user_activity"} <= set(frame.columns)
    ranker = models.get("lr", epochs=1, num_threads=1)
    ranker.fit(frame.drop(columns=["user", "item"]), label="label")
    bundle = write_bundle(
        tmp_path / "b",
        pipeline=pipe,
        ranker=ranker,
        user_features=user_table,
        item_features=item_table,
        rerank={"rank_top": 30},
    )
    rec = Recommender.load(bundle)
    sources = {v["column"]: v["source"] for v in rec.fields.values()}
    assert sources["recall_rank_als"] == "recall" and sources["device|category"] == "cross"
    assert sources["recall_gap_als"] == "recall" and sources["item_pop"] == "item"
    assert sources["user_activity"] == "user"
    assert rec.context_fields == ["daypart", "device"]

    user = users[0]
    rows = frame[frame["user"] == user]
    cand = rec.pipeline.candidates(user)
    served = rec._assemble(cand.items[:30], user, contexts[user], (cand, np.arange(30)))
    trained = ranker.encoder_.transform(rows.drop(columns=["user", "item", "label"]))
    np.testing.assert_array_equal(served.categorical, trained.categorical)
    np.testing.assert_allclose(served.numeric, trained.numeric, rtol=1e-5, atol=1e-6)

    r = rec.recommend(user, k=5, context=contexts[user])
    expect = rows.assign(p=ranker.predict_proba(rows.drop(columns=["user", "item", "label"])))
    best = expect.sort_values("p", ascending=False, kind="stable")["item"].head(5).tolist()
    assert r.items == best
    scored = rec.score(user, r.items, context=contexts[user])  # recall features looked up
    assert [s["score"] for s in scored["items"]] == pytest.approx(r.scores, rel=1e-5)
