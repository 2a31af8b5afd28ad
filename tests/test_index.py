"""Faiss indexes against the exact Flat index, save/load, and the ANN recommender."""

from __future__ import annotations

import numpy as np
import pytest

from recforge.exceptions import ArtifactError, ConfigError, DataError
from recforge.index import (
    AnnIndex,
    AnnRecommender,
    ann_bench,
    build_index,
    exact_search,
    recall_vs_exact,
)
from recforge.models.retrieval.mf import ALS
from recforge.models.retrieval.popular import MostPopular
from tests.conftest import make_tiny_interactions


def _clustered(n: int, d: int = 32, n_clusters: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    return (centres[rng.integers(0, n_clusters, n)] + 0.3 * rng.normal(size=(n, d))).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def vectors():
    return _clustered(6000), _clustered(200, seed=1)


def test_flat_is_exact(vectors):
    x, q = vectors
    idx, scores = build_index(x, kind="flat").search(q, 10)
    ref = np.argsort(-(q @ x.T), axis=1)[:, :10]
    assert recall_vs_exact(idx, ref) > 0.999
    np.testing.assert_allclose(scores[:, 0], (q @ x.T).max(1), rtol=1e-4)
    l2_idx, l2_scores = build_index(x, kind="flat", metric="l2").search(q, 5)
    d2 = ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(l2_idx[:, 0], d2.argmin(1))
    assert (np.diff(l2_scores, axis=1) <= 1e-6).all()  # negative distances: higher is better


@pytest.mark.parametrize(
    "kind,params,threshold",
    [
        ("ivf_flat", {"nlist": 64, "nprobe": 8}, 0.95),
        ("hnsw", {"hnsw_m": 32, "ef_search": 256, "mips": True}, 0.95),
        ("hnsw", {"hnsw_m": 32, "ef_search": 256, "metric": "l2"}, 0.95),
    ],
)
def test_approximate_recall_vs_flat(vectors, kind, params, threshold):
    x, q = vectors
    exact = exact_search(x, q, 10, metric=params.get("metric", "ip"))
    index = build_index(x, kind=kind, **params)
    assert recall_vs_exact(index.search(q, 10)[0], exact) >= threshold


def test_ivf_pq_with_exact_refine(tmp_path):
    # PQ training is slow; a small 16-d set keeps this test quick
    x, q = _clustered(3000, d=16), _clustered(100, d=16, seed=1)
    exact = exact_search(x, q, 10)
    index = build_index(x, kind="ivf_pq", nlist=16, nprobe=8, m=4, nbits=6, refine=8)
    found = index.search(q, 10)[0]
    assert recall_vs_exact(found, exact) >= 0.8
    loaded = AnnIndex.load(index.save(tmp_path / "pq"))
    assert loaded.config.refine == 8
    np.testing.assert_array_equal(loaded.search(q, 10)[0], found)


def test_save_load_roundtrip_uses_faiss_format(vectors, tmp_path):
    x, q = vectors
    index = build_index(x, kind="ivf_flat", nlist=32, nprobe=4)
    path = index.save(tmp_path / "idx")
    assert (path / "index.faiss").read_bytes()[:4] == b"IwFl"  # Faiss's IVF-flat fourcc
    loaded = AnnIndex.load(path)
    assert loaded.config.nprobe == 4 and loaded.config.nlist == 32
    np.testing.assert_array_equal(loaded.search(q, 10)[0], index.search(q, 10)[0])
    loaded.set_search_params(nprobe=32)
    assert recall_vs_exact(loaded.search(q, 10)[0], exact_search(x, q, 10)) > 0.99
    (path / "index.json").unlink()
    with pytest.raises(ArtifactError, match="index.json"):
        AnnIndex.load(path)


def test_bad_inputs(vectors):
    x, _ = vectors
    with pytest.raises(ConfigError, match="kind"):
        build_index(x, kind="annoy")
    with pytest.raises(ConfigError, match="unknown key"):
        build_index(x, kind="hnsw", ef=3)
    with pytest.raises(ConfigError, match="divid"):
        build_index(x, kind="ivf_pq", m=5, nlist=8)
    with pytest.raises(DataError, match="dimension"):
        build_index(x, kind="flat").search(np.zeros((1, 3)), 2)


def test_ann_recommender_matches_exact_model(tmp_path):
    data = make_tiny_interactions()
    model = ALS(factors=8, iterations=5, num_threads=1).fit(
        data
    )  # (not via the registry: no torch import)
    users = [f"u{u}" for u in range(20)]
    ann = AnnRecommender(model, {"kind": "flat"})
    ids, scores = ann.recommend(users, k=5)
    ref_ids, ref_scores = model.recommend(users, k=5)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5)
    hnsw = AnnRecommender(model, {"kind": "hnsw"})
    h_ids, _ = hnsw.recommend(users, k=5)
    seen = data.frame.groupby("user")["item"].agg(set)
    assert all(not (set(row) & seen[u]) for u, row in zip(users, h_ids))
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(h_ids, ref_ids)]) > 0.9
    loaded = AnnRecommender.load(hnsw.save(tmp_path / "ann"))
    np.testing.assert_array_equal(loaded.recommend(users, k=5)[0], h_ids)
    with pytest.raises(ConfigError, match="embedding"):
        AnnRecommender(MostPopular().fit(data))


def test_ann_bench_table(vectors):
    x, q = vectors
    table = ann_bench(
        x[:2000],
        q[:50],
        ["flat", "hnsw"],
        k=10,
        n_single=20,
        configs={"hnsw": {"ef_construction": 40}},
    )
    assert list(table["index"]) == ["flat", "hnsw"]
    assert table.loc[0, "recall@10"] == 1.0
    assert {"qps", "p50_ms", "p99_ms", "build_s"} <= set(table.columns)
    assert (table["p99_ms"] >= table["p50_ms"]).all()


def test_ivf_pq_on_too_few_vectors_is_a_config_error():
    import numpy as np
    import pytest

    from recforge.exceptions import ConfigError
    from recforge.index import build_index

    x = np.random.default_rng(0).normal(size=(100, 16)).astype(np.float32)
    with pytest.raises(ConfigError, match="lower nbits"):
        build_index(x, kind="ivf_pq", nlist=4, m=4, nbits=8)
    build_index(x, kind="ivf_pq", nlist=4, m=4, nbits=6)  # 64 centroids <= 100 vectors


def test_small_pq_training_warns_once_not_per_sub_quantiser(capfd, caplog):
    import logging

    x = np.random.default_rng(0).normal(size=(600, 16)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="recforge.index.faiss_index"):
        build_index(x, kind="ivf_pq", nlist=8, m=8, nbits=6)
    assert "WARNING clustering" not in capfd.readouterr().err  # faiss' own, once per m
    assert sum("faiss recommends" in r.getMessage() for r in caplog.records) == 1
