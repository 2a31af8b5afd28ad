"""Evaluation protocols on MostPopular and tiny data, checked against brute force."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recforge import metrics as M
from recforge import models
from recforge.data import Interactions
from recforge.evaluation import evaluate_ranker, evaluate_scores, full_ranking, sampled_ranking
from recforge.exceptions import ConfigError, DataError
from tests.conftest import make_tiny_ctr, make_tiny_interactions

ALL = ("recall", "ndcg", "precision", "hit_rate", "mrr", "map", "coverage", "novelty")


@pytest.fixture(scope="module")
def split():
    data = make_tiny_interactions()
    f = data.frame
    train = data.subset(f.index % 4 != 0, "train")
    test = data.subset(f.index % 4 == 0, "test")
    model = models.get("most_popular").fit(train)
    return model, train, test


def brute_force(model, train, test, k):
    """Dense scores for every user, seen items dropped, sorted by hand; recforge.metrics on
    raw ids."""
    users = [u for u in pd.unique(test.frame["user"]) if u in model.user_vocab_]
    scores = np.asarray(model.score_users(model.user_vocab_.index(users)), dtype=np.float64)
    seen = train.frame.groupby("user")["item"].agg(set)
    items = model.item_vocab_.raw_ids
    ranked = []
    for row, u in zip(scores, users):
        order = sorted(range(len(items)), key=lambda j: (-row[j], j))  # ties: lower index first
        ranked.append([items[j] for j in order if items[j] not in seen.get(u, set())][:k])
    relevant = [set(test.frame.loc[test.frame["user"] == u, "item"]) for u in users]
    return ranked, relevant


def test_full_ranking_matches_brute_force(split):
    model, train, test = split
    res = full_ranking(model, test, k=(5, 10), metrics=ALL)
    for k in (5, 10):
        ranked, relevant = brute_force(model, train, test, k)
        assert res[f"recall@{k}"] == pytest.approx(M.recall_at_k(ranked, relevant, k))
        assert res[f"ndcg@{k}"] == pytest.approx(M.ndcg_at_k(ranked, relevant, k))
        assert res[f"precision@{k}"] == pytest.approx(M.precision_at_k(ranked, relevant, k))
        assert res[f"hit_rate@{k}"] == pytest.approx(M.hit_rate_at_k(ranked, relevant, k))
        assert res[f"mrr@{k}"] == pytest.approx(M.mrr(ranked, relevant, k))
        assert res[f"map@{k}"] == pytest.approx(M.map_at_k(ranked, relevant, k))
        assert res[f"coverage@{k}"] == pytest.approx(M.coverage(ranked, model.n_items))
        pop = train.frame["item"].value_counts().to_dict()
        assert res[f"novelty@{k}"] == pytest.approx(M.novelty(ranked, pop))
    assert res["n_users"] == test.frame["user"].nunique()
    assert res["n_users_skipped"] == 0
    assert 0 < res["recall@10"] < 1


def test_full_ranking_batching_is_invisible(split):
    model, train, test = split
    a = full_ranking(model, test, k=(3, 10), batch_size=1024)
    b = full_ranking(model, test, k=(3, 10), batch_size=7)
    assert a == b
    # excluding the training log again through `train` changes nothing
    assert full_ranking(model, test, k=(3, 10), batch_size=7, train=train) == a


def test_full_ranking_unknown_users_and_items(split):
    model, train, test = split
    extra = pd.DataFrame({"user": ["ghost", "ghost", "u0"], "item": [17, 27, 999_999]})
    test2 = Interactions(pd.concat([test.frame[["user", "item"]], extra], ignore_index=True))
    res = full_ranking(model, test2, k=10)
    assert res["n_users_skipped"] == 1
    assert res["n_users"] == test.frame["user"].nunique()  # u0 was already a test user
    # the unknown item counts as relevant for u0 and can never be hit: recall drops
    ranked, relevant = brute_force(model, train, test, 10)
    users = list(pd.unique(test.frame["user"]))
    relevant[users.index("u0")].add(999_999)
    assert res["recall@10"] == pytest.approx(M.recall_at_k(ranked, relevant, 10))


def test_full_ranking_without_exclude_seen_recommends_popular_items(split):
    model, train, test = split
    res = full_ranking(model, test, k=5, exclude_seen=False, metrics=("coverage",))
    assert res["coverage@5"] == pytest.approx(5 / model.n_items)  # same 5 items for everyone


def test_full_ranking_errors(split):
    model, _, test = split
    with pytest.raises(ConfigError, match="unknown metric"):
        full_ranking(model, test, metrics=("recal",))
    with pytest.raises(ConfigError, match="positive integer"):
        full_ranking(model, test, k=0)
    with pytest.raises(DataError, match="none of the"):
        full_ranking(model, Interactions(pd.DataFrame({"user": ["x"], "item": [1]})))
    with pytest.raises(DataError, match="Interactions"):
        full_ranking(model, test.frame)
    with pytest.raises(Exception, match="not fitted"):
        full_ranking(models.get("most_popular"), test)


def test_sampled_ranking_brute_force_and_determinism(split):
    model, train, test = split
    res = sampled_ranking(model, test, n_negatives=20, k=(1, 5), seed=3)
    assert res == sampled_ranking(model, test, n_negatives=20, k=(1, 5), seed=3)
    assert res["n_pairs"] == len(test.frame.drop_duplicates(["user", "item"]))
    assert res["n_pairs_skipped"] == 0
    for key in ("hit_rate@1", "hit_rate@5", "ndcg@5", "mrr", "auc"):
        assert 0 <= res[key] <= 1
    assert res["hit_rate@1"] <= res["hit_rate@5"]
    assert res["auc"] > 0.3  # popularity is informative on this data


def test_sampled_ranking_never_samples_interacted_items():
    # 3 items; u0 has seen 0 and tests on 1, so item 2 is the only valid negative
    train = Interactions(pd.DataFrame({"user": ["u0", "u1", "u1"], "item": [0, 1, 2]}))
    model = models.get("most_popular").fit(train)
    model.item_scores_ = np.array([0.0, 1.0, 2.0], dtype=np.float32)  # negative beats positive
    test = Interactions(pd.DataFrame({"user": ["u0", "u0"], "item": [1, 7]}))
    res = sampled_ranking(model, test, n_negatives=5, k=1)
    assert res["n_pairs"] == 1 and res["n_pairs_skipped"] == 1  # item 7 unknown
    # 5 draws with replacement, all item 2, all above the positive: rank 6
    assert res["hit_rate@1"] == 0.0 and res["auc"] == 0.0 and res["mrr"] == pytest.approx(1 / 6)
    model.item_scores_ = np.array([0.0, 3.0, 2.0], dtype=np.float32)
    res = sampled_ranking(model, test, n_negatives=5, k=1)
    assert res["hit_rate@1"] == 1.0 and res["auc"] == 1.0
    model.item_scores_ = np.ones(3, dtype=np.float32)  # ties are pessimistic for ranks
    res = sampled_ranking(model, test, n_negatives=5, k=1)
    assert res["mrr"] == pytest.approx(1 / 6) and res["auc"] == 0.5


class ColumnScorer:
    """A ranker stand-in whose probability is a column of the frame, so that the
    evaluation is checked against scikit-learn on known numbers."""

    def __init__(self, column: str) -> None:
        self.column = column

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return frame[self.column].to_numpy(dtype=np.float64)


def test_evaluate_ranker_matches_sklearn():
    from sklearn import metrics as skm

    df = make_tiny_ctr(400, seed=2)
    df["p"] = (1 / (1 + np.exp(-df["num"]))).round(2)
    res = evaluate_ranker(ColumnScorer("p"), df, label="label", group="uid")
    y, p = df["label"].to_numpy(), df["p"].to_numpy()
    assert res["auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert res["logloss"] == pytest.approx(skm.log_loss(y, p))
    assert res["f1"] == pytest.approx(skm.f1_score(y, p >= 0.5))
    assert res["accuracy"] == pytest.approx(skm.accuracy_score(y, p >= 0.5))
    assert res["gauc"] == pytest.approx(M.gauc(y, p, df["uid"]))
    assert res["n_rows"] == 400
    assert "gauc" not in evaluate_ranker(ColumnScorer("p"), df)
    with pytest.raises(DataError, match="'clicked'"):
        evaluate_ranker(ColumnScorer("p"), df, label="clicked")
    assert np.isnan(evaluate_scores([1, 0], [0.4, 0.3], groups=["a", "b"])["gauc"])


def test_negative_sampler_avoids_forbidden_items():
    import scipy.sparse as sp

    from recforge.evaluation import _csr_keys, _sample_negatives

    rng = np.random.default_rng(0)
    dense = rng.random((50, 30)) < 0.8  # users saw ~80% of the items
    dense[0, :29] = True
    dense[0, 29] = False  # user 0 has a single allowed item
    forbid = sp.csr_matrix(dense)
    users = np.repeat(np.arange(50), 2)
    negs = _sample_negatives(rng, users, 40, 30, forbid, _csr_keys(forbid, 30))
    assert negs.shape == (100, 40)
    assert not dense[users[:, None], negs].any()
    assert (negs[:2] == 29).all()
