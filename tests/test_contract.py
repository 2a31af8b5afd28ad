"""The contract every registered model passes (scikit-learn's estimator checks, implicit's
shared test mixin). A new model only registers itself and sets ``smoke_params``."""

from __future__ import annotations

import numpy as np
import pytest

from recforge import models
from recforge.exceptions import ConfigError, NotFittedError, UnknownIdError
from tests.conftest import make_tiny_ctr, make_tiny_interactions

RETRIEVAL = sorted(models.available("retrieval"))
RANKERS = sorted(models.available("ranker"))


def build(name):
    cls = models.get_class(name)
    return models.get(name, **cls.smoke_params)


@pytest.fixture(scope="module")
def data():
    return make_tiny_interactions()


@pytest.fixture(scope="module")
def ctr():
    df = make_tiny_ctr(400, seed=1, history=True)  # list-valued history columns for all
    return df.iloc[:300].reset_index(drop=True), df.iloc[300:].reset_index(drop=True)


def test_registry_rejects_unknown_names_and_params():
    with pytest.raises(ConfigError, match="unknown model"):
        models.get("no_such_model")
    name = next(iter(models.available()))
    with pytest.raises(ConfigError, match="unknown parameter"):
        models.get(name, definitely_not_a_param=1)


@pytest.mark.parametrize("name", RETRIEVAL)
def test_retrieval_contract(name, data, tmp_path):
    model = build(name)
    assert not model.is_fitted
    with pytest.raises(NotFittedError):
        model.recommend(["u0"], k=5)
    with pytest.raises(ConfigError):
        models.get(name, not_a_param=3)

    assert model.fit(data) is model
    users = ["u0", "u1", "u7"]
    ids, scores = model.recommend(users, k=5)
    assert ids.shape == (3, 5) and scores.shape == (3, 5)
    assert set(ids.ravel()) <= set(data.items)  # raw ids out
    assert np.all(np.diff(scores, axis=1) <= 1e-6), "scores must be sorted descending"
    seen = data.frame.groupby("user")["item"].agg(set)
    for u, row, s in zip(users, ids, scores):
        finite = np.isfinite(s)
        assert not (set(row[finite]) & seen[u]), "exclude_seen=True returned a seen item"
    ids1, _ = model.recommend("u0", k=3)
    assert ids1.shape == (1, 3)
    with pytest.raises(UnknownIdError):
        model.recommend(["nobody"], k=3)

    try:
        sim_ids, sim_scores = model.similar_items([data.items[0]], k=4)
        assert sim_ids.shape == (1, 4)
        assert data.items[0] not in sim_ids[0]
    except NotImplementedError:
        sim_ids = None

    path = model.save(tmp_path / name)
    loaded = models.load(path)
    assert type(loaded) is type(model)
    ids2, scores2 = loaded.recommend(users, k=5)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_allclose(scores, scores2, rtol=1e-5, atol=1e-6)
    if sim_ids is not None:
        np.testing.assert_array_equal(sim_ids, loaded.similar_items([data.items[0]], k=4)[0])
    assert_incomplete_content_is_an_artifact_error(path, tmp_path)


HISTORY = [n for n in RETRIEVAL if models.get_class(n).supports_history]


def test_history_models_are_the_ones_serving_relies_on():
    assert {"itemcf", "ease", "item2vec", "simplex", "youtube_dnn"} <= set(HISTORY)


@pytest.mark.parametrize("name", HISTORY)
def test_recommend_from_history_contract(name, data):
    """A training user's own history, given at request time, gives that user's recommend()
    (same scores, same order); unknown items are ignored; a new history changes the answer."""
    model = build(name).fit(data)
    frame = data.frame.sort_values(["user", "timestamp"], kind="stable")
    for user in ["u0", "u3"]:
        hist = frame.loc[frame["user"] == user, "item"].tolist()
        ids, scores = model.recommend(user, k=5)
        h_ids, h_scores = model.recommend_from_history([*hist, "no-such-item"], k=5)
        assert h_ids.shape == (5,) and np.isfinite(h_scores).all()
        if type(model).history_is_exact:
            np.testing.assert_allclose(h_scores, scores[0], rtol=1e-4, atol=1e-5)
        else:  # a history-only user vector: most of the user's own top 5 comes back
            assert len(set(h_ids) & set(ids[0])) >= 2, (h_ids, ids[0])
        assert not set(h_ids) & set(hist)
    other = frame.loc[frame["user"] == "u1", "item"].tolist()[:3]
    assert list(model.recommend_from_history(other, k=5)[0]) != list(h_ids)
    excl = model.recommend_from_history(other, k=5, exclude=[h_ids[0]])[0]
    assert h_ids[0] not in excl
    empty_ids, _ = model.recommend_from_history([], k=3)  # a brand-new user: no error
    assert empty_ids.shape == (3,)


@pytest.mark.parametrize("name", RANKERS)
def test_ranker_contract(name, ctr, tmp_path):
    train, test = ctr
    model = build(name)
    with pytest.raises(NotFittedError):
        model.predict_proba(test)
    assert model.fit(train, label="label", valid=test) is model
    p = model.predict_proba(test)
    assert p.shape == (len(test),)
    assert np.all((p >= 0) & (p <= 1)) and np.isfinite(p).all()
    try:  # the serving path (pre-encoded rows) gives the same probabilities
        enc = model.predict_proba_encoded(model.encoder_.transform(test))
        np.testing.assert_allclose(enc, p, rtol=1e-5, atol=1e-6)
    except NotImplementedError:
        pass
    # unseen categories at inference must not crash
    odd = test.copy()
    odd["cat"] = "never-seen"
    assert np.isfinite(model.predict_proba(odd)).all()

    path = model.save(tmp_path / name)
    loaded = models.load(path)
    np.testing.assert_allclose(loaded.predict_proba(test), p, rtol=1e-5, atol=1e-6)
    assert_incomplete_content_is_an_artifact_error(path, tmp_path)


def assert_incomplete_content_is_an_artifact_error(path, tmp_path):
    """A directory re-signed with valid checksums but missing a tensor or a state entry
    (written by other code, or edited) loads as an ArtifactError, never a raw KeyError,
    RuntimeError or TypeError."""
    import json
    import shutil

    from safetensors.numpy import load_file, save_file

    from recforge.artifacts import sha256_file
    from recforge.exceptions import ArtifactError

    arrays = load_file(str(path / "weights.safetensors"))
    state = json.loads((path / "state.json").read_text())
    cases = [("array", k) for k in dict.fromkeys([min(arrays), max(arrays)] if arrays else [])]
    cases += [("state", k) for k in dict.fromkeys([min(state), max(state)])]
    for what, key in cases:
        bad = tmp_path / f"bad-{what}-{key.replace('/', '_')}"
        shutil.copytree(path, bad)
        if what == "array":
            save_file(
                {k: v for k, v in arrays.items() if k != key}, str(bad / "weights.safetensors")
            )
        else:
            (bad / "state.json").write_text(
                json.dumps({k: v for k, v in state.items() if k != key})
            )
        manifest = json.loads((bad / "manifest.json").read_text())
        manifest["files"] = {f: sha256_file(bad / f) for f in manifest["files"]}
        (bad / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ArtifactError, match=str(bad)):
            models.load(bad)


@pytest.mark.parametrize(
    "manifest",
    [
        '["not", "an", "object"]',
        '{"name": "x", "kind": "retrieval", "format_version": "1", "files": {}}',
    ],
)
def test_malformed_manifest_is_an_artifact_error(tmp_path, manifest):
    from recforge.exceptions import ArtifactError

    (tmp_path / "manifest.json").write_text(manifest)
    with pytest.raises(ArtifactError, match="manifest.json"):
        models.load(tmp_path)
