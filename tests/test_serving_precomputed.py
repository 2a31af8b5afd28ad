"""Precomputed recommendations: a batch-recommend job's lists answer plain requests while
fresh; history, explain, a larger k, a stale store or an uncovered user take the live funnel;
an unfinished job or one over another bundle version is refused."""

from __future__ import annotations

import os
import shutil
import time

import pytest
from fastapi.testclient import TestClient

from recforge.exceptions import ConfigError
from recforge.serving.app import create_app
from recforge.serving.batch import SUCCESS, batch_recommend
from recforge.serving.core import Recommender
from recforge.serving.precomputed import Precomputed
from recforge.serving.settings import ServerSettings
from recforge.serving.source import SingleBundle
from tests.serving_fakes import set_bundle_version, tiny_recall_bundle  # noqa: F401

USERS = ["u1", "u3", "u5"]


@pytest.fixture
def served(tiny_recall_bundle, tmp_path):  # noqa: F811
    recs = tmp_path / "recs"
    batch_recommend(tiny_recall_bundle, recs, users=USERS, k=20)
    rec = Recommender.load(tiny_recall_bundle)
    live = {u: rec.recommend(u, k=10).items for u in USERS}
    store = Precomputed.load(recs, max_age_s=3600)
    rec.use_precomputed(store)
    return rec, store, live, recs


def _reverse(store: Precomputed, user) -> list:
    """Reverse ``user``'s stored list in place; returns the list as it was."""
    a, b = store.spans[user]
    items = store.items[a:b].tolist()
    store.items, store.scores = store.items.copy(), store.scores.copy()  # Arrow's are read-only
    store.items[a:b] = store.items[a:b][::-1].copy()
    store.scores[a:b] = store.scores[a:b][::-1].copy()
    return items


def test_plain_requests_come_from_the_lists_while_fresh(served):
    rec, store, live, _ = served
    assert store.k == 20 and sorted(store.spans) == USERS
    assert all(rec.recommend(u, k=10).items == live[u] for u in USERS)  # same bundle, same lists
    items = _reverse(store, "u3")  # make the stored list recognisable: the server answers from it
    assert rec.recommend("u3", k=5).items == items[::-1][:5]
    client = TestClient(create_app(SingleBundle(rec), ServerSettings()))
    r = client.post("/v1/recommend", json={"user": "u3", "k": 5})
    assert r.status_code == 200 and [x["item"] for x in r.json()["items"]] == items[::-1][:5]
    # what the lists cannot answer goes live
    assert rec.recommend("u3", k=5, explain=True).items == live["u3"][:5]
    assert rec.recommend("u3", k=21).items[:5] == live["u3"][:5]  # more than the job's k
    hist = rec.recommend("u3", k=5, history=[items[0]]).items
    assert hist != items[::-1][:5] and items[0] not in hist
    assert (
        rec.recommend("u2", k=5).items
        == Recommender.load(rec.bundle.path).recommend("u2", k=5).items
    )  # a user the job did not cover
    assert rec.info()["precomputed"]["users"] == 3 and rec.info()["precomputed"]["fresh"]


def test_a_stale_store_answers_nothing(served):
    rec, _, live, recs = served
    old = time.time() - 7200
    os.utime(recs / SUCCESS, (old, old))
    stale = Precomputed.load(recs, max_age_s=3600)
    _reverse(stale, "u3")
    rec.use_precomputed(stale)
    assert not stale.fresh() and rec.recommend("u3", k=5).items == live["u3"][:5]


def test_unfinished_or_foreign_jobs_are_refused(tiny_recall_bundle, tmp_path):  # noqa: F811
    other = tmp_path / "other"
    shutil.copytree(tiny_recall_bundle, other)
    set_bundle_version(other, "another-version")
    recs = tmp_path / "recs"
    batch_recommend(other, recs, users=USERS, k=5)
    rec = Recommender.load(tiny_recall_bundle)
    with pytest.raises(ConfigError, match="another-version"):
        rec.use_precomputed(Precomputed.load(recs))
    (recs / SUCCESS).unlink()
    with pytest.raises(ConfigError, match="not finished"):
        Precomputed.load(recs)
    with pytest.raises(ConfigError, match="not the output"):
        Precomputed.load(tmp_path)
