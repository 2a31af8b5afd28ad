"""The serving core on tiny data: the bundle as one checked unit, the funnel per request,
filters, cold users, unknown items, request-time history, the explain trace."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from recforge.exceptions import ArtifactError, DataError, UnknownIdError
from recforge.serving import Recommender, verify_bundle
from tests.serving_fixtures import build_tiny_bundle, tiny_log


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("b") / "bundle")


@pytest.fixture(scope="module")
def rec(bundle_dir):
    return Recommender.load(bundle_dir)


@pytest.fixture(scope="module")
def log():
    return tiny_log()


def test_bundle_is_one_unit_with_field_sources(bundle_dir, rec):
    manifest = verify_bundle(bundle_dir)
    assert manifest["version"] == rec.bundle.version
    files = manifest["files"]
    assert any(f.startswith("recall/channels/als/index/") for f in files)  # Faiss index inside
    assert any(f.startswith("ranker/") for f in files)
    assert "features/user.parquet" in files and "features/item.parquet" in files
    src = {k: v["source"] for k, v in manifest["fields"].items()}
    assert src["user"] == "user_id" and src["item"] == "item_id"
    assert src["age"] == "user" and src["category"] == "item" and src["device"] == "context"
    assert src["daypart"] == "context"  # the generator's time-of-day context
    assert rec.context_fields == ["daypart", "device"]


def test_recommend_runs_the_funnel(rec, log):
    user = log.users[0]
    seen = set(log.frame.loc[log.frame["user"] == user, "item"])
    r = rec.recommend(user, k=10, context={"device": "mobile"}, explain=True)
    assert len(r.items) == 10 and len(set(r.items)) == 10  # deduplicated
    assert not set(r.items) & seen  # training history never returned
    assert r.scores == sorted(r.scores, reverse=True)
    assert not r.cold and r.version == rec.bundle.version
    t = r.trace
    assert set(t["stage_ms"]) == {"recall", "filter", "features", "rank", "rerank", "total"}
    assert t["n_recalled"] >= t["n_after_filters"] >= t["n_ranked"] >= 10
    for pos, e in enumerate(t["items"]):
        assert e["position"] == pos and e["item"] == r.items[pos]
        assert e["found_by"] and set(e["found_by"]) <= {"itemcf", "als", "ease", "fallback"}
        assert all(e["channels"][c]["rank"] >= 0 for c in e["found_by"])
        assert e["ranker_score"] == pytest.approx(r.scores[pos])
        assert e["recall_rank"] < t["n_ranked"]  # the ranker only sees the top rank_top
    # the ranker decides the order: scores equal the ranker on the same candidates
    again = rec.score(user, r.items, context={"device": "mobile"})
    np.testing.assert_allclose([e["score"] for e in again["items"]], r.scores, rtol=1e-5)


def test_scores_match_the_ranker_on_a_frame(rec, log):
    """The pre-encoded feature join gives what predict_proba gives on the joined frame."""
    user = log.users[3]
    items = list(log.items[:20])
    encoded = rec.score(user, items, context={"device": "desktop"})
    frame = rec._frame(rec.catalogue.index(items), user, {"device": "desktop"})
    direct = rec.ranker.predict_proba(frame)
    np.testing.assert_allclose([e["score"] for e in encoded["items"]], direct, rtol=1e-5, atol=1e-6)


def test_cold_user_and_unknown_items_never_error(rec):
    r = rec.recommend("never-seen-user", k=5, history=["no-such-item"], explain=True)
    assert r.cold and len(r.items) == 5
    assert r.trace["unknown_history"] == ["no-such-item"]
    assert all(e["found_by"] == ["fallback"] for e in r.trace["items"])
    s = rec.score("never-seen-user", [r.items[0], "no-such-item"])
    assert s["unknown_items"] == ["no-such-item"] and len(s["items"]) == 2
    assert all(np.isfinite(e["score"]) for e in s["items"])


def test_request_history_changes_the_result(rec, log):
    user = log.users[1]
    before = rec.recommend(user, k=10).items
    other = log.frame.loc[log.frame["user"] == log.users[7], "item"].tolist()
    after = rec.recommend(user, k=10, history=other, explain=True)
    assert after.items != before
    assert not set(after.items) & set(other)  # history items are seen items
    assert after.trace["history_used"] == len(other)
    # a brand-new user with a history is not cold: history-aware channels answer
    fresh = rec.recommend("new-user", k=10, history=other[-5:], explain=True)
    assert not fresh.cold
    assert any(set(e["found_by"]) & {"itemcf", "ease"} for e in fresh.trace["items"])


def test_filters_and_exclusions(rec, log):
    user = log.users[2]
    cats = log.item_features["category"]
    wanted = cats.iloc[0]
    r = rec.recommend(user, k=5, filters={"category": [wanted]})
    assert r.items and all(cats.loc[i] == wanted for i in r.items)
    top = rec.recommend(user, k=5).items
    r2 = rec.recommend(user, k=5, exclude=top[:2])
    assert not set(r2.items) & set(top[:2])
    # ids arrive as strings from JSON/gRPC clients: read in the vocabulary's type
    assert rec.recommend(str(user) if not isinstance(user, str) else user, k=3).items


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"k": 0}, "k"),
        ({"k": 10**6}, "k"),
        ({"k": "ten"}, "k"),
        ({"context": {"no_such": 1}}, "context.no_such"),
        ({"context": {"device": [1, 2]}}, "context.device"),
        ({"filters": {"colour": ["red"]}}, "filters.colour"),
    ],
)
def test_bad_requests_name_the_field(rec, log, kwargs, field):
    with pytest.raises(DataError) as e:
        rec.recommend(log.users[0], **kwargs)
    assert e.value.column == field


def test_mmr_diversifies_by_category(bundle_dir, tmp_path, log):
    div = build_tiny_bundle(
        tmp_path / "div", rerank={"rank_top": 50, "mmr_lambda": 0.9, "diversity_field": "category"}
    )
    plain, diverse = Recommender.load(bundle_dir), Recommender.load(div)
    cats = log.item_features["category"]
    n_plain = [len({cats.loc[i] for i in plain.recommend(u, k=8).items}) for u in log.users[:10]]
    n_div = [len({cats.loc[i] for i in diverse.recommend(u, k=8).items}) for u in log.users[:10]]
    assert np.mean(n_div) > np.mean(n_plain)


def test_similar(rec, log):
    item = log.items[0]
    out = rec.similar(item, k=5)
    assert out["channel"] == "itemcf" and len(out["items"]) <= 5
    assert item not in [e["item"] for e in out["items"]]
    with pytest.raises(UnknownIdError):
        rec.similar("no-such-item")


def test_bundle_without_ranker_ranks_by_recall(tmp_path, log):
    rec = Recommender.load(build_tiny_bundle(tmp_path / "nr", ranker=False))
    r = rec.recommend(log.users[0], k=5, explain=True)
    assert len(r.items) == 5 and r.trace["ranker"] is None


def _copy(bundle_dir, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(bundle_dir, dst)
    return dst


def test_tampered_bundles_are_refused(bundle_dir, tmp_path):
    # a flipped byte in the ranker's weights
    b = _copy(bundle_dir, tmp_path)
    w = b / "ranker" / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        Recommender.load(b)
    shutil.rmtree(b)
    # the index and the ranker from different trainings: a swapped-in file is caught
    b = _copy(bundle_dir, tmp_path)
    (b / "features" / "item.parquet").write_bytes(b"not parquet")
    with pytest.raises(ArtifactError, match="item.parquet"):
        verify_bundle(b)
    shutil.rmtree(b)
    # an added file, an emptied file list, a path escaping the directory
    b = _copy(bundle_dir, tmp_path)
    (b / "recall" / "extra.bin").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="not listed"):
        verify_bundle(b)
    shutil.rmtree(b)
    for edit, match in (
        (lambda m: m.update(files={}), "files"),
        (lambda m: m["files"].update({"../outside": "0" * 64}), "outside|safe"),
        (lambda m: m.update(recall="../x"), "safe"),
    ):
        b = _copy(bundle_dir, tmp_path)
        m = json.loads((b / "bundle.json").read_text())
        edit(m)
        (b / "bundle.json").write_text(json.dumps(m))
        with pytest.raises(ArtifactError, match=match):
            Recommender.load(b)
        shutil.rmtree(b)


def test_write_bundle_is_atomic_and_replaces(bundle_dir, tmp_path):
    target = tmp_path / "b"
    build_tiny_bundle(target, ranker=False)
    first = verify_bundle(target)["version"]
    build_tiny_bundle(target, ranker=False)  # replaced as a whole, no leftovers beside it
    assert verify_bundle(target)["version"] != first
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_warmup(rec):
    warm = rec.warmup()
    assert warm["known_ms"] > 0 and warm["cold_ms"] > 0


def test_bundle_job_configs_parse():
    """configs/bundles/*.yaml and the demo bundle's job are valid bundle jobs."""
    from pathlib import Path

    from recforge.serving.build import BundleJob

    root = Path(__file__).resolve().parents[1]
    files = [
        *sorted((root / "configs" / "bundles").glob("*.yaml")),
        root / "src/recforge/serving/demo_bundle.yaml",
    ]
    assert len(files) >= 2
    for f in files:
        job = BundleJob.from_yaml(f)
        assert job.ranker is not None and job.recall["channels"]


def test_bundle_job_rejects_unknown_keys(tmp_path):
    from recforge.exceptions import ConfigError
    from recforge.serving.build import BundleJob

    with pytest.raises(ConfigError, match="rerankk"):
        BundleJob.from_dict(
            {"recall": {"channels": [{"name": "a", "model": "itemcf"}]}, "rerankk": {}}
        )
    with pytest.raises(ConfigError, match="quotaa"):
        BundleJob.from_dict(
            {"recall": {"channels": [{"name": "a", "model": "itemcf", "quotaa": 1}]}}
        )
    with pytest.raises(ConfigError, match="rank_top"):
        BundleJob.from_dict({"recall": {"path": "x"}, "rerank": {"rank_top": "many"}})
    with pytest.raises(ConfigError, match="mmr_lambda"):
        BundleJob.from_dict({"recall": {"path": "x"}, "rerank": {"mmr_lambda": 2.0}})


def test_bundle_with_onnx_scores_like_torch(rec, log, tmp_path):
    """A bundle that carries its ranker as ONNX is scored by onnxruntime: same answers."""
    pytest.importorskip("onnxruntime")
    from recforge.serving import write_bundle

    path = write_bundle(
        tmp_path / "onnx",
        pipeline=rec.pipeline,
        ranker=rec.ranker,
        user_features=rec.bundle.user_table,
        item_features=rec.bundle.item_table,
        rerank={"rank_top": 50},
        onnx=True,
    )
    assert "ranker.onnx" in verify_bundle(path)["files"]
    fast = Recommender.load(path)
    assert fast.info()["scorer"] == "onnxruntime" and rec.info()["scorer"] == "torch"
    for user in [log.users[0], log.users[5], "cold-user"]:
        a = rec.recommend(user, k=10, context={"device": "mobile"})
        b = fast.recommend(user, k=10, context={"device": "mobile"})
        assert a.items == b.items
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)
    onnx_file = path / "ranker.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="ranker.onnx"):
        Recommender.load(path)
