"""Multi-channel recall: config parsing, quota/weighted merges, provenance, fallback,
save/load and recall evaluation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recforge.exceptions import ConfigError, NotFittedError
from recforge.pipeline import RecallPipeline, evaluate_recall, recall_config
from tests.conftest import make_tiny_interactions

CONFIG = {
    "channels": [
        {
            "name": "als",
            "model": "als",
            "params": {"factors": 8, "iterations": 3, "num_threads": 1},
            "quota": 6,
        },
        {
            "name": "i2v",
            "model": "item2vec",
            "params": {"vector_size": 8, "epochs": 3},
            "quota": 4,
            "weight": 0.5,
            "index": {"kind": "hnsw", "hnsw_m": 8},
        },
        {"name": "pop", "model": "most_popular", "quota": 3},
    ],
    "fallback": "most_popular",
    "merge": "quota",
}


@pytest.fixture(scope="module")
def data():
    return make_tiny_interactions()


@pytest.fixture(scope="module")
def split(data):
    order = np.random.default_rng(0).permutation(len(data))
    cut = int(0.8 * len(data))
    return data.subset(np.sort(order[:cut])), data.subset(np.sort(order[cut:]))


@pytest.fixture(scope="module")
def fitted(split):
    return RecallPipeline.from_config(CONFIG).fit(split[0])


def test_config_rejects_unknown_keys(tmp_path):
    with pytest.raises(ConfigError, match="quotaa"):
        recall_config({"channels": [{"name": "a", "model": "als", "quotaa": 3}]})
    with pytest.raises(ConfigError, match="mergee"):
        recall_config({"channels": [{"name": "a", "model": "als"}], "mergee": "quota"})
    with pytest.raises(ConfigError, match="unknown parameter"):
        RecallPipeline.from_config(
            {"channels": [{"name": "a", "model": "als", "params": {"factorz": 3}}]}
        )
    with pytest.raises(ConfigError, match="unknown key"):
        RecallPipeline.from_config(
            {"channels": [{"name": "a", "model": "als", "index": {"kind": "hnsw", "ef": 1}}]}
        )
    with pytest.raises(ConfigError, match="unique"):
        RecallPipeline.from_config(
            {"channels": [{"name": "a", "model": "als"}, {"name": "a", "model": "bpr"}]}
        )
    path = tmp_path / "recall.yaml"
    path.write_text(
        "recall:\n  channels:\n    - {name: x, model: ease, quota: 5}\n  merge: weighted\n"
    )
    cfg = recall_config(path)
    assert cfg.merge == "weighted" and cfg.channels[0].quota == 5
    with pytest.raises(NotFittedError):
        RecallPipeline.from_config(cfg).recommend(["u0"])


def test_quota_merge_round_robin_with_provenance(fitted, split):
    train = split[0]
    users = ["u0", "u3"]
    result = fitted.recommend(users, k=10)
    seen = train.frame.groupby("user")["item"].agg(set)
    for u in users:
        cand = result.for_user(u)
        assert len(cand) == 10 and cand["item"].is_unique
        assert not set(cand["item"]) & seen[u]
        assert list(cand["rank"]) == list(range(10))
        # replay the round-robin from each channel's own list
        lists = {}
        for name, ch in ((c.name, c) for c in fitted.channels):
            ids, _ = (
                ch.retriever().recommend([u], k=ch.quota)
                if ch.ann_ is None
                else ch.ann_.recommend([u], k=ch.quota)
            )
            lists[name] = [i for i in ids[0] if i is not None]
        expected = []
        for r in range(max(len(v) for v in lists.values())):
            for name in ("als", "i2v", "pop"):
                if r < len(lists[name]) and lists[name][r] not in expected:
                    expected.append(lists[name][r])
        assert list(cand["item"]) == expected[:10]
        for name in ("als", "i2v", "pop"):
            found = cand[cand[f"{name}_rank"].notna()]
            assert all(name in t for t in found["channels"])
            np.testing.assert_array_equal(
                found["item"].to_numpy(), np.asarray(lists[name])[found[f"{name}_rank"].astype(int)]
            )


def test_weighted_merge_sums_normalised_scores(split):
    cfg = {**CONFIG, "merge": "weighted"}
    pipe = RecallPipeline.from_config(cfg).fit(split[0])
    cand = pipe.recommend(["u1"], k=8).for_user("u1")
    assert (np.diff(cand["score"].to_numpy()) <= 1e-12).all()
    # recompute one item's merged score from the per-channel raw scores
    w = {"als": 1.0, "i2v": 0.5, "pop": 1.0}
    total = np.zeros(len(cand))
    for name, ch in ((c.name, c) for c in pipe.channels):
        _, scores = ch.retriever().recommend_idx(ch.model.user_vocab_.index(["u1"]), k=ch.quota)
        s = scores[0][np.isfinite(scores[0])]
        lo, hi = s.min(), s.max()
        raw = cand[f"{name}_score"].to_numpy()
        norm = np.where(np.isnan(raw), 0.0, (raw - lo) / (hi - lo) if hi > lo else 1.0)
        total += w[name] * norm
    np.testing.assert_allclose(cand["score"].to_numpy(), total, rtol=1e-6)


def test_unknown_users_get_the_fallback(fitted):
    result = fitted.recommend(["nobody", "u0", "ghost"], k=5)
    cold = result.for_user("nobody")
    assert len(cold) == 5 and all(t == ("fallback",) for t in cold["channels"])
    pd.testing.assert_series_equal(cold["item"], result.for_user("ghost")["item"])
    items = result.items()
    assert len(items) == 3 and len(items[1]) == 5


def test_save_load_roundtrip(fitted, tmp_path):
    path = fitted.save(tmp_path / "recall")
    assert (path / "recall.json").exists()
    assert (path / "channels" / "i2v" / "index" / "index.faiss").exists()
    assert (path / "channels" / "als" / "model" / "manifest.json").exists()
    loaded = RecallPipeline.load(path)
    a = fitted.recommend(["u0", "u5", "nobody"], k=9).frame
    b = loaded.recommend(["u0", "u5", "nobody"], k=9).frame
    pd.testing.assert_frame_equal(a, b)


def test_evaluate_recall_reports_unique_contributions(fitted, split):
    test = split[1]
    out = evaluate_recall(fitted, test, ks=(5, 10))
    assert 0 < out["recall@5"] <= out["recall@10"] <= 1
    # recompute recall@10 by hand
    result = fitted.recommend(list(pd.unique(test.frame["user"])), k=10)
    rel = test.frame.groupby("user")["item"].agg(set)
    manual = np.mean(
        [len(set(i) & rel[u]) / len(rel[u]) for u, i in zip(result.user_ids, result.items())]
    )
    assert out["recall@10"] == pytest.approx(manual)
    for name in ("als", "i2v", "pop"):
        assert (
            0
            <= out[f"unique_recall@10/{name}"]
            <= out[f"channel_recall@10/{name}"]
            <= out["recall@10"]
        )
    assert sum(out[f"unique_hits/{n}"] for n in ("als", "i2v", "pop")) <= out["n_relevant"]


def test_personalised_fallback_gives_cold_users_a_global_list_not_another_users():
    import numpy as np

    from recforge.pipeline.recall import RecallPipeline
    from tests.conftest import make_tiny_interactions

    data = make_tiny_interactions()
    pipe = RecallPipeline.from_config(
        {"channels": [{"name": "cf", "model": "itemcf", "quota": 1}], "fallback": "itemcf", "k": 8}
    ).fit(data)
    got = pipe.recommend(["never-seen-user"], k=8).items()[0]
    counts = data.frame["item"].value_counts(sort=False)
    order = np.lexsort((np.arange(len(counts)), -counts.to_numpy()))  # popularity, first seen
    assert list(got) == list(counts.index[order][:8])
