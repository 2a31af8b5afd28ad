"""EASE^R: the closed form equals per-column constrained ridge regressions."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recforge import models
from recforge.exceptions import ConfigError, DataError
from recforge.models.retrieval.ease import ease_weights
from tests.conftest import make_tiny_interactions


def test_closed_form_equals_ridge_with_zero_diagonal():
    rng = np.random.default_rng(0)
    x = (rng.random((40, 12)) < 0.3).astype(np.float64)
    lam = 3.0
    b = ease_weights(x.T @ x, lam)
    assert np.all(np.diag(b) == 0)
    for j in range(12):
        others = [i for i in range(12) if i != j]
        xo = x[:, others]
        ref = np.linalg.solve(xo.T @ xo + lam * np.eye(11), xo.T @ x[:, j])
        np.testing.assert_allclose(b[others, j], ref, rtol=1e-8, atol=1e-10)


def test_scores_are_x_times_b_and_similar_items():
    data = make_tiny_interactions()
    model = models.get("ease", l2=5.0).fit(data)
    x = model.seen_.toarray()
    np.testing.assert_allclose(model.score_users(np.arange(4)), x[:4] @ model.weights_, rtol=1e-5)
    ids, _ = model.recommend([f"u{u}" for u in range(10)], k=5)
    in_group = [(np.asarray(row) < 200) == (u % 2 == 0) for u, row in enumerate(ids)]
    assert np.mean(in_group) > 0.8
    sims, scores = model.similar_items([7], k=3)
    i = model.item_vocab_.index([7])[0]
    row = model.weights_[i].copy()
    row[i] = -np.inf
    np.testing.assert_array_equal(model.item_vocab_.index(sims[0]), np.argsort(-row)[:3])


def test_weight_column_and_limits(tmp_path):
    data = make_tiny_interactions()
    frame = data.frame.assign(weight=data.frame["rating"])
    weighted = type(data)(frame)
    model = models.get("ease", l2=5.0, weight_col="weight").fit(weighted)
    loaded = models.load(model.save(tmp_path / "ease"))
    np.testing.assert_allclose(loaded.score_users(np.arange(3)), model.score_users(np.arange(3)))
    assert not np.allclose(model.weights_, models.get("ease", l2=5.0).fit(weighted).weights_)
    with pytest.raises(DataError, match="max_items"):
        models.get("ease", max_items=10).fit(data)
    with pytest.raises(ConfigError, match="l2"):
        models.get("ease", l2=0.0).fit(data)


def test_inverse_in_place_matches_numpy(monkeypatch):
    from recforge.models.retrieval import ease

    monkeypatch.setattr(ease, "_BLOCK", 16)  # the mirroring: ragged and several row blocks
    rng = np.random.default_rng(1)
    for n, dtype, rtol in [(97, np.float64, 1e-8), (16, np.float64, 1e-8), (130, np.float32, 2e-3)]:
        x = rng.random((n + 20, n))
        a = (x.T @ x + 3.0 * np.eye(n)).astype(dtype)
        ref = np.linalg.inv(a.astype(np.float64))
        buf = a.copy()
        out = ease.spd_inverse_inplace(buf)
        assert out is buf
        np.testing.assert_allclose(out, ref, rtol=rtol, atol=rtol * np.abs(ref).max())
    with pytest.raises(DataError, match="positive definite"):
        ease.spd_inverse_inplace(-np.eye(5))


def test_user_side_fit_equals_item_side(monkeypatch):
    from recforge.models.retrieval import ease

    monkeypatch.setattr(ease, "_BLOCK", 7)
    rng = np.random.default_rng(3)
    x = sp.csr_matrix((rng.random((30, 50)) < 0.15).astype(np.float32))  # fewer users than items
    ref = ease_weights(x.toarray().astype(np.float64).T @ x.toarray().astype(np.float64), 4.0)
    b = ease.ease_weights_users(x, 4.0)
    assert b.dtype == np.float32 and np.all(np.diag(b) == 0)
    np.testing.assert_allclose(b, ref, atol=1e-4 * np.abs(ref).max())


def test_float32_fit_in_place_matches_float64():
    rng = np.random.default_rng(2)
    x = (rng.random((200, 60)) < 0.2).astype(np.float32)
    b64 = ease_weights(x.astype(np.float64).T @ x.astype(np.float64), 10.0)
    g = np.ascontiguousarray(x.T @ x)
    b32 = ease_weights(g, 10.0, overwrite=True)
    assert b32 is g and b32.dtype == np.float32
    np.testing.assert_allclose(b32, b64, atol=1e-5 * np.abs(b64).max())


def test_refuses_when_memory_is_short(monkeypatch):
    from recforge.models.retrieval import ease

    monkeypatch.setattr(ease, "available_memory", lambda: 1000)
    with pytest.raises(DataError, match="available"):
        models.get("ease", l2=5.0).fit(make_tiny_interactions())
