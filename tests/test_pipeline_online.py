"""The online recall path (``RecallPipeline.candidates``): NumPy only, one user, and the same
answer as the batch ``recommend`` when no request-time history is given."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from recforge.pipeline import RecallPipeline
from tests.conftest import make_tiny_interactions
from tests.test_pipeline import CONFIG

HISTORY_CONFIG = {
    "channels": [
        {"name": "itemcf", "model": "itemcf", "params": {"k": 10}, "quota": 6},
        {"name": "als", "model": "als", "params": {"factors": 8, "iterations": 3}, "quota": 5},
    ],
    "fallback": "most_popular",
}


@pytest.fixture(scope="module")
def data():
    return make_tiny_interactions()


@pytest.mark.parametrize("merge", ["quota", "weighted"])
def test_candidates_equal_batch_recommend(data, merge):
    cfg = copy.deepcopy(CONFIG)
    cfg["merge"] = merge
    pipe = RecallPipeline.from_config(cfg).fit(data)
    users = ["u0", "u5", "u11", "nobody"]
    batch = pipe.recommend(users, k=12)
    for user in users:
        want = batch.for_user(user)
        got = pipe.candidates(user, k=12)
        items = pipe.catalogue_.ids(got.items)
        assert list(items) == list(want["item"]), user
        np.testing.assert_allclose(got.score, want["score"].to_numpy(), rtol=1e-5, atol=1e-6)
        assert [tuple(got.found_by(r)) for r in range(len(items))] == list(want["channels"])
        for s, name in enumerate(got.sources):
            np.testing.assert_allclose(
                got.source_rank[:, s], want[f"{name}_rank"].to_numpy(dtype=float), equal_nan=True
            )
    assert pipe.candidates("nobody", k=5).cold
    assert not pipe.candidates("u0", k=5).cold


def test_history_reaches_history_models_and_is_excluded(data):
    pipe = RecallPipeline.from_config(HISTORY_CONFIG).fit(data)
    cat = pipe.catalogue_
    # a brand-new user with a history: itemcf answers (not only the fallback)
    hist = [17, 27, "not-an-item"]
    c = pipe.candidates("new-user", k=8, history=hist)
    assert not c.cold and c.unknown_history == ["not-an-item"]
    got = set(cat.ids(c.items))
    assert not got & {17, 27}
    assert any("itemcf" in c.found_by(r) for r in range(len(c.items)))
    # the same user without history is cold: fallback only
    assert pipe.candidates("new-user", k=8).cold
    # a known user: the request history changes the answer and is never returned
    before = list(cat.ids(pipe.candidates("u0", k=8).items))
    other = [i for i in data.frame.loc[data.frame["user"].isin(["u1", "u3"]), "item"]]
    after_c = pipe.candidates("u0", k=8, history=other)
    after = list(cat.ids(after_c.items))
    assert after != before and not set(after) & set(other)
    # explicit exclusions (catalogue indices)
    excl = pipe.candidates("u0", k=8, exclude=after_c.items[:2])
    assert not set(excl.items) & set(after_c.items[:2])
