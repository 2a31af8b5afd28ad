"""ItemCF, UserCF, the sparse top-k similarity and dense k-NN search."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

from recforge.exceptions import ConfigError
from recforge.models.retrieval.knn import ItemCF, UserCF, knn_search, topk_similarity
from tests.conftest import make_tiny_interactions


@pytest.fixture(scope="module")
def x() -> sp.csr_matrix:
    rng = np.random.default_rng(3)
    dense = (rng.random((30, 12)) < 0.35).astype(np.float64)
    dense[:, 5] = 0.0  # an item nobody saw
    return sp.csr_matrix(dense)


def dense_similarity(x, similarity, shrink=0.0, alpha=0.5, w=None):
    """Direct dense reference of the module docstring formulas, diagonal zeroed."""
    x = np.asarray(x.toarray(), dtype=np.float64)
    if similarity == "jaccard":
        x = (x > 0).astype(np.float64)
    w = np.ones(x.shape[0]) if w is None else w
    c = x.T @ (w[:, None] * x)
    sq = (x * x).sum(axis=0)
    if similarity == "cosine":
        denom = np.sqrt(np.outer(sq, sq))
    elif similarity == "asymmetric_cosine":
        denom = np.outer(sq**alpha, sq ** (1 - alpha))
    else:
        n = (w[:, None] * x).sum(axis=0)
        denom = n[:, None] + n[None, :] - c
    denom = denom + shrink
    s = np.divide(c, denom, out=np.zeros_like(c), where=denom > 0)
    np.fill_diagonal(s, 0.0)
    return s


@pytest.mark.parametrize(
    "similarity,shrink,alpha",
    [("cosine", 0.0, 0.5), ("cosine", 3.0, 0.5), ("jaccard", 0.0, 0.5), ("jaccard", 1.0, 0.5),
     ("asymmetric_cosine", 0.0, 0.8), ("asymmetric_cosine", 2.0, 0.2)],
)  # fmt: skip
def test_similarity_matches_dense_reference(x, similarity, shrink, alpha):
    s = topk_similarity(x, similarity=similarity, k=100, shrink=shrink, alpha=alpha)
    ref = dense_similarity(x, similarity, shrink, alpha)
    np.testing.assert_allclose(s.toarray(), ref, rtol=1e-5, atol=1e-7)
    if similarity == "asymmetric_cosine" and alpha != 0.5:
        assert not np.allclose(ref, ref.T)  # really asymmetric


def test_asymmetric_cosine_with_half_alpha_is_cosine(x):
    a = topk_similarity(x, similarity="asymmetric_cosine", alpha=0.5, k=100).toarray()
    c = topk_similarity(x, similarity="cosine", k=100).toarray()
    np.testing.assert_allclose(a, c, rtol=1e-6)


def test_weighted_values_enter_cosine_not_jaccard(x):
    xv = x.copy()
    xv.data = np.arange(1, xv.nnz + 1, dtype=np.float64) % 5 + 1
    cos = topk_similarity(xv, similarity="cosine", k=100).toarray()
    np.testing.assert_allclose(cos, dense_similarity(xv, "cosine"), rtol=1e-5)
    jac = topk_similarity(xv, similarity="jaccard", k=100).toarray()
    np.testing.assert_allclose(jac, dense_similarity(x, "jaccard"), rtol=1e-5)


def test_topk_pruning_keeps_the_k_largest_per_row(x):
    ref = dense_similarity(x, "cosine")
    k = 3
    s = topk_similarity(x, similarity="cosine", k=k)
    assert np.diff(s.indptr).max() <= k
    dense = s.toarray()
    for i in range(ref.shape[0]):
        kept = np.flatnonzero(dense[i])
        np.testing.assert_allclose(dense[i, kept], ref[i, kept], rtol=1e-5)
        positive = np.sort(ref[i][ref[i] > 0])[::-1]
        assert len(kept) == min(k, len(positive))
        if len(kept):  # nothing dropped is larger than what was kept
            assert ref[i].max() == pytest.approx(dense[i].max(), rel=1e-5)
            assert dense[i, kept].min() >= positive[len(kept) - 1] - 1e-6
    assert np.all(np.diag(dense) == 0) and dense[5].sum() == 0 and dense[:, 5].sum() == 0


def test_blocked_computation_equals_one_block(x):
    one = topk_similarity(x, similarity="jaccard", k=4, shrink=0.5)
    many = topk_similarity(x, similarity="jaccard", k=4, shrink=0.5, block_rows=1)
    np.testing.assert_array_equal(one.toarray(), many.toarray())


def test_iuf_weights_heavy_users_down_as_documented():
    # user 0 saw 2 items (0, 1); user 1 saw all 6 items -> both create the pair (0, 1)
    dense = np.zeros((2, 6))
    dense[0, [0, 1]] = 1
    dense[1, :] = 1
    x = sp.csr_matrix(dense)
    plain = topk_similarity(x, k=10).toarray()
    iuf = topk_similarity(x, k=10, obs_weights=1 / np.log1p(np.array([2.0, 6.0]))).toarray()
    norms = np.sqrt(dense.sum(axis=0))
    assert plain[0, 1] == pytest.approx(2 / (norms[0] * norms[1]), rel=1e-6)
    # numerator 1/log(3) + 1/log(7), denominators unweighted (ItemCF-IUF)
    assert iuf[0, 1] == pytest.approx(
        (1 / np.log(3) + 1 / np.log(7)) / (norms[0] * norms[1]), rel=1e-6
    )
    assert iuf[2, 3] == pytest.approx((1 / np.log(7)) / 1.0, rel=1e-6)  # only the heavy user
    # the model applies exactly these weights
    data = make_tiny_interactions()
    m = ItemCF(k=1000, iuf=True, shrink=0.0).fit(data)
    w = 1 / np.log1p(np.diff(m.seen_.indptr))
    ref = dense_similarity(m.seen_, "cosine", w=w)
    np.testing.assert_allclose(m.similarity_.toarray(), ref, rtol=1e-5, atol=1e-7)


def test_normalize_divides_rows_by_their_max():
    data = make_tiny_interactions()
    s = ItemCF(k=5, normalize=True).fit(data).similarity_
    raw = ItemCF(k=5).fit(data).similarity_
    row_max = s.max(axis=1).toarray().ravel()
    has = np.diff(s.indptr) > 0
    np.testing.assert_allclose(row_max[has], 1.0, rtol=1e-6)
    ratio = s.toarray()[has] * raw.max(axis=1).toarray()[has]
    np.testing.assert_allclose(ratio, raw.toarray()[has], rtol=1e-5, atol=1e-7)


def test_itemcf_scores_are_history_times_similarity():
    data = make_tiny_interactions()
    m = ItemCF(similarity="jaccard", k=7, shrink=1.0).fit(data)
    users = np.arange(m.n_users)
    ref = m.seen_.toarray() @ m.similarity_.toarray()
    np.testing.assert_allclose(m.score_users(users), ref, rtol=1e-5, atol=1e-6)


def test_usercf_similarity_and_scores_match_dense():
    data = make_tiny_interactions()
    m = UserCF(k=1000, iif=True).fit(data)
    w = 1 / np.log1p(np.asarray(m.seen_.sum(axis=0)).ravel())
    ref = dense_similarity(sp.csr_matrix(m.seen_.T), "cosine", w=w)
    np.testing.assert_allclose(m.similarity_.toarray(), ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        m.score_users(np.arange(5)), ref[:5] @ m.seen_.toarray(), rtol=1e-5, atol=1e-6
    )
    m5 = UserCF(k=5, similarity="jaccard").fit(data)
    assert np.diff(m5.similarity_.indptr).max() <= 5


def group_of(item_id: int, n_items: int = 40) -> int:
    return int((item_id - 7) // 10 >= n_items // 2)


@pytest.mark.parametrize(
    "name,params",
    [("itemcf", {"k": 20}), ("itemcf", {"similarity": "jaccard", "iuf": True, "k": 20}),
     ("itemcf", {"similarity": "asymmetric_cosine", "alpha": 0.7, "shrink": 2.0}),
     ("usercf", {"k": 10}), ("usercf", {"similarity": "jaccard", "iif": True, "k": 10})],
)  # fmt: skip
def test_recommendations_stay_in_the_taste_group(name, params):
    data = make_tiny_interactions()
    model = {"itemcf": ItemCF, "usercf": UserCF}[name](**params).fit(data)
    users = [f"u{u}" for u in range(60)]
    ids, scores = model.recommend(users, k=5)
    same = [group_of(i) == u % 2 for u, row in enumerate(ids) for i in row]
    assert np.mean(same) > 0.9


def test_similar_items_are_from_the_same_group():
    data = make_tiny_interactions()
    items = [7, 17, 207, 307]  # two from each group
    for model in (ItemCF(k=10).fit(data), UserCF(k=10).fit(data)):
        ids, scores = model.similar_items(items, k=5)
        assert all(group_of(j) == group_of(i) for i, row in zip(items, ids) for j in row)
        assert not any(i in row for i, row in zip(items, ids))


@pytest.mark.parametrize(
    "model",
    [ItemCF(similarity="asymmetric_cosine", alpha=0.3, k=8, iuf=True, normalize=True),
     ItemCF(k=8, weight_col="rating"), UserCF(k=6, iif=True, shrink=1.0)],
)  # fmt: skip
def test_save_load_round_trip(model, tmp_path):
    data = make_tiny_interactions()
    model.fit(data)
    loaded = type(model).load(model.save(tmp_path / "m"))  # models.load would import every model
    assert loaded.get_params() == model.get_params()
    users = ["u0", "u3", "u10"]
    a, sa = model.recommend(users, k=6)
    b, sb = loaded.recommend(users, k=6)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-6)
    np.testing.assert_array_equal(model.similarity_.toarray(), loaded.similarity_.toarray())


def test_weight_col_changes_scores():
    data = make_tiny_interactions()
    plain = ItemCF(k=20).fit(data).score_users(np.arange(4))
    weighted = ItemCF(k=20, weight_col="rating").fit(data).score_users(np.arange(4))
    assert not np.allclose(plain, weighted)


def test_bad_parameters_raise_config_error():
    data = make_tiny_interactions()
    with pytest.raises(ConfigError, match="cosine, jaccard, asymmetric_cosine") as e:
        ItemCF(similarity="cosin").fit(data)
    assert "did you mean 'cosine'" in str(e.value)
    assert not ItemCF(similarity="cosin").is_fitted
    for bad in ({"k": 0}, {"k": 2.5}, {"shrink": -1}, {"alpha": 1.5}):
        with pytest.raises(ConfigError):
            UserCF(**bad).fit(data)
    with pytest.raises(ConfigError, match="euclidean, manhattan, cosine, dot"):
        knn_search(np.zeros((1, 2)), np.zeros((3, 2)), 1, metric="l2")


@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "cosine"])
def test_knn_search_matches_sklearn(metric):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(200, 7))
    queries = rng.normal(size=(25, 7))
    idx, val = knn_search(queries, vectors, 6, metric=metric, batch_size=7)
    nn = NearestNeighbors(n_neighbors=6, metric=metric, algorithm="brute").fit(vectors)
    dist, ref = nn.kneighbors(queries)
    np.testing.assert_array_equal(idx, ref)
    expected = 1 - dist if metric == "cosine" else dist
    np.testing.assert_allclose(val, expected, rtol=1e-5, atol=1e-6)


def test_knn_search_dot_and_exclude():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(50, 4))
    idx, val = knn_search(vectors[:10], vectors, 3, metric="dot", exclude=np.arange(10))
    brute = vectors[:10] @ vectors.T
    brute[np.arange(10), np.arange(10)] = -np.inf
    np.testing.assert_array_equal(idx, np.argsort(-brute, axis=1)[:, :3])
    np.testing.assert_allclose(val, np.sort(brute, axis=1)[:, ::-1][:, :3], rtol=1e-5)
    assert not np.any(idx == np.arange(10)[:, None])
    assert knn_search(vectors[:2], vectors[:3], 10)[0].shape == (2, 3)


def test_dense_and_sparse_row_pruning_agree():
    from recforge.models.retrieval.knn import _prune_rows, _prune_rows_dense

    m = sp.random(40, 60, density=0.3, random_state=6, format="csr")
    m.data = np.round(m.data * 4) / 4 + 0.25  # many ties
    for k in (1, 3, 10, 100):
        a, b = _prune_rows(m, k), _prune_rows_dense(m, k)
        np.testing.assert_array_equal(a.toarray(), b.toarray())
        assert np.diff(a.indptr).max() <= k


# ---------------------------------------------------------------------------- benchmark
def test_bench_registry_and_data_dir_errors(tmp_path, monkeypatch):
    from benchmarks import BENCHES, get_bench, resolve_data_dir, run_bench
    from benchmarks.cf_ml100k import run

    assert get_bench("cf_ml100k") is run and "cf_ml100k" in BENCHES
    with pytest.raises(ConfigError, match="did you mean 'cf_ml100k'"):
        run_bench("cf_ml100")
    monkeypatch.delenv("RECFORGE_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no ../shared/data from here
    with pytest.raises(ConfigError, match="RECFORGE_DATA_DIR"):
        resolve_data_dir(tmp_path / "nope")
    assert resolve_data_dir(tmp_path) == tmp_path


def test_update_docs_replaces_only_its_section(tmp_path):
    from benchmarks.cf_ml100k import SECTION, update_docs

    doc = tmp_path / "B.md"
    doc.write_text(
        f"# Benchmarks\n\n## Someone else\n\nkeep me\n\n{SECTION}\n\nold table\n\n## Later\n\nme too\n"
    )
    update_docs(f"{SECTION}\n\nnew table\n", doc)
    text = doc.read_text()
    assert "old table" not in text and "new table" in text
    assert (
        text.index("keep me")
        < text.index("new table")
        < text.index("## Later")
        < text.index("me too")
    )
    fresh = update_docs(f"{SECTION}\n\nx\n", tmp_path / "new.md").read_text()
    assert fresh.startswith("# Benchmarks") and SECTION in fresh


@pytest.mark.realdata
def test_itemcf_on_ml100k_holds_up_against_implicit_cosine(real_data):
    from implicit.nearest_neighbours import CosineRecommender

    from benchmarks import cf_ml100k as bench

    train, test = bench.random_split(bench.load_positives(real_data))
    assert (len(train), len(test)) == (44300, 11075)
    model = ItemCF(**bench.TUNED["itemcf"])
    ours = bench.evaluate_recforge(model, train, test)
    k_peer = bench.TUNED["implicit_cosine"]["K"]
    peer = bench.evaluate_implicit(lambda: CosineRecommender(K=k_peer, num_threads=1), train, test)
    assert 0.17 < ours["recall@10"] < 0.30, ours
    assert ours["recall@10"] >= peer["recall@10"] - 0.005, (ours, peer)
    assert ours["ndcg@10"] >= peer["ndcg@10"] - 0.005, (ours, peer)
    # the implicit path (metric functions on ranked lists) equals full_ranking's numbers
    _, _, users, relevant = bench.held_out_sets(train, test)
    ranked, _ = model.recommend_idx(users, k=20)
    again = bench.score_ranked(ranked, relevant)
    for key, value in again.items():
        assert value == pytest.approx(ours[key], abs=1e-12)
