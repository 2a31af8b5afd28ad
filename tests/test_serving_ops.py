"""The operations wiring over HTTP (in-process): keys (401/403), feedback that takes effect on
the next request, the admin API (labels, rollback, load/unload), /metrics, rate limits."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from recforge.exceptions import ConfigError
from recforge.serving.app import create_app
from recforge.serving.feedback import SQLiteEventStore
from recforge.serving.repository import BundleLoader, VersionManager, VersionSource, publish
from recforge.serving.settings import ServerSettings
from tests.serving_fakes import set_bundle_version, tiny_bundle  # noqa: F401

R, F, A = "read-key-0123456789", "feedback-key-0123456789", "admin-key-0123456789"
KEYS = {"read_keys": (R,), "feedback_keys": (F,), "admin_keys": (A,)}


def _publish(bundle: Path, root: Path, tag: str, tmp: Path) -> int:
    src = tmp / f"src-{tag}"
    shutil.copytree(bundle, src)
    set_bundle_version(src, tag)
    return int(publish(src, root / "demo").name)


@pytest.fixture
def served(tiny_bundle, tmp_path):  # noqa: F811
    root = tmp_path / "root"
    for tag in ("one", "two"):
        _publish(tiny_bundle, root, tag, tmp_path)
    manager = VersionManager(VersionSource(root), BundleLoader())
    manager.sync()
    store = SQLiteEventStore(tmp_path / "fb.db")
    settings = ServerSettings(**KEYS)
    client = TestClient(create_app(manager, settings, store))
    yield client, manager, root
    store.close()


def h(key: str) -> dict:
    return {"X-API-Key": key}


def test_keys_401_403_and_reads(served):
    client, _, _ = served
    ev = {"events": [{"user": "u1", "item": 3, "type": "click"}]}
    assert client.post("/v1/recommend", json={"user": "u1"}).status_code == 401  # read key set
    assert client.post("/v1/recommend", json={"user": "u1"}, headers=h(R)).status_code == 200
    assert client.post("/v1/feedback", json=ev).status_code == 401
    assert client.post("/v1/feedback", json=ev, headers=h(R)).status_code == 403
    assert client.post("/v1/feedback", json=ev, headers=h("x" * 20)).status_code == 401
    assert client.put("/v1/admin/models/demo/policy", json={"policy": "latest"}).status_code == 401
    r = client.put("/v1/admin/models/demo/policy", json={"policy": "latest"}, headers=h(F))
    assert r.status_code == 403 and F not in r.text
    r = client.post(
        "/v1/feedback", json=ev, headers={"Authorization": f"Bearer {F}"}
    )  # either header
    assert r.status_code == 200
    assert client.get("/health/live").status_code == 200  # health needs no key
    assert client.get("/health/ready").status_code == 200


def test_feedback_takes_effect_on_the_next_request(served):
    client, _, _ = served
    user = "someone-new"  # cold: only the request's (and the stored) history can help
    before = client.post("/v1/recommend", json={"user": user, "k": 10}, headers=h(R)).json()
    assert before["cold"]
    clicked = [it["item"] for it in before["items"][:3]]
    events = [{"user": user, "item": i, "type": "click", "key": f"k{i}"} for i in clicked]
    r = client.post("/v1/feedback", json={"events": events}, headers=h(F))
    assert r.json() == {"stored": 3, "duplicates": 0}
    r = client.post("/v1/feedback", json={"events": events[:1]}, headers=h(F))
    assert r.json() == {"stored": 0, "duplicates": 1}  # a retry is stored once
    after = client.post(
        "/v1/recommend", json={"user": user, "k": 10, "explain": True}, headers=h(R)
    ).json()
    got = [it["item"] for it in after["items"]]
    assert not set(clicked) & set(got)  # seen items are filtered
    assert got != [it["item"] for it in before["items"]]  # ItemCF scored the new history
    bad = client.post(
        "/v1/feedback", json={"events": [{"user": "u", "item": 1, "type": "boom"}]}, headers=h(F)
    )
    assert bad.status_code == 400 and "'type'" in bad.text


def test_admin_labels_rollback_load_unload(served):
    client, manager, _ = served

    def version() -> str:
        return client.post("/v1/recommend", json={"user": "u1"}, headers=h(R)).json()["version"]

    assert version() == "two"
    r = client.put("/v1/admin/models/demo/labels/stable", json={"version": 1}, headers=h(A))
    assert r.status_code == 200 and r.json()["labels"] == {"stable": 1}
    assert version() == "one"  # rollback in one call
    r = client.post(
        "/v1/recommend", json={"user": "u1", "model": "demo@2"}, headers=h(R)
    )  # the other version by number
    assert r.json()["version"] == "two"
    client.put("/v1/admin/models/demo/labels/stable", json={"version": None}, headers=h(A))
    r = client.put("/v1/admin/models/demo/policy", json={"policy": "specific:1"}, headers=h(A))
    assert [v["version"] for v in r.json()["versions"]] == [1] and version() == "one"
    r = client.post("/v1/admin/models/demo/versions/1/unload", headers=h(A))
    assert r.status_code == 400 and "only available" in r.text
    r = client.post("/v1/admin/models/demo/versions/2/load", headers=h(A))
    assert {v["version"] for v in r.json()["versions"]} == {1, 2}
    r = client.put("/v1/admin/models/demo/policy", json={"policy": "newest"}, headers=h(A))
    assert r.status_code == 400 and "latest:N" in r.text
    r = client.post("/v1/recommend", json={"user": "u1", "model": "nope"}, headers=h(R))
    assert r.status_code == 404
    r = client.post("/v1/recommend", json={"user": "u1", "model": "demo@9"}, headers=h(R))
    assert r.status_code == 404 and "version 9" in r.text


def test_metrics_endpoint(served):
    client, _, _ = served
    client.post("/v1/recommend", json={"user": "u1", "explain": True}, headers=h(R))
    client.post(
        "/v1/feedback", json={"events": [{"user": "u1", "item": 3, "type": "click"}]}, headers=h(F)
    )
    assert client.get("/metrics").status_code == 401  # a read key is configured
    text = client.get("/metrics", headers=h(R)).text
    for needle in (
        'recforge_requests_total{endpoint="/v1/recommend",protocol="rest",status="200"} 1.0',
        "recforge_request_seconds_bucket",
        'recforge_stage_seconds_count{model="default",stage="core",version="two"} 1.0',
        'recforge_stage_seconds_count{model="default",stage="recall",version="two"} 1.0',
        'recforge_model_versions_loaded{model="demo"} 1.0',
        "recforge_feedback_commit_seconds_count 1.0",
        "recforge_feedback_queue_depth 0.0",
        'recforge_feedback_events_total{result="stored"} 1.0',
    ):
        assert needle in text, needle


def test_rate_limit_and_bind_refusal(tiny_bundle, tmp_path):  # noqa: F811
    root = tmp_path / "root"
    _publish(tiny_bundle, root, "one", tmp_path)
    manager = VersionManager(VersionSource(root), BundleLoader())
    manager.sync()
    client = TestClient(create_app(manager, ServerSettings(rate_limit_rps=1, rate_limit_burst=2)))
    codes = [client.post("/v1/recommend", json={"user": "u1"}).status_code for _ in range(4)]
    assert codes[:2] == [200, 200] and codes[-1] == 429
    assert client.get("/health/ready").status_code == 200  # health checks are never limited
    with pytest.raises(ConfigError, match="refusing to bind"):
        create_app(manager, ServerSettings(host="0.0.0.0"))
    create_app(manager, ServerSettings(host="0.0.0.0", **KEYS))


def test_grpc_keys_and_feedback_twin(served, tmp_path):
    import grpc

    from recforge.serving.demo import free_port
    from recforge.serving.grpc_server import create_grpc_server
    from recforge.serving.protos import recforge_pb2 as pb
    from recforge.serving.protos import recforge_pb2_grpc as pb_grpc

    client, manager, _ = served
    app = client.app
    port = free_port()
    server = create_grpc_server(manager, port, access=app.state.access, feedback=app.state.feedback)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.RecommenderStub(channel)
            assert stub.Health(pb.HealthRequest(), timeout=10).ready  # no key needed
            with pytest.raises(grpc.RpcError) as e:
                stub.Recommend(pb.RecommendRequest(user="g1", k=5), timeout=10)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            before = stub.Recommend(
                pb.RecommendRequest(user="g1", k=5), metadata=[("x-api-key", R)], timeout=10
            )
            ev = pb.FeedbackEvent(user="g1", item=before.items[0].item, type="click", key="g-1")
            with pytest.raises(grpc.RpcError) as e:
                stub.Feedback(
                    pb.FeedbackRequest(events=[ev]), metadata=[("x-api-key", R)], timeout=10
                )
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
            for expected in (1, 0):  # the retry is a duplicate
                r = stub.Feedback(
                    pb.FeedbackRequest(events=[ev]), metadata=[("x-api-key", F)], timeout=10
                )
                assert (r.stored, r.duplicates) == (expected, 1 - expected)
            after = stub.Recommend(
                pb.RecommendRequest(user="g1", k=5), metadata=[("x-api-key", R)], timeout=10
            )
            assert before.items[0].item not in [it.item for it in after.items]
            bad = pb.FeedbackEvent(user="g1", item="1", type="boom")
            with pytest.raises(grpc.RpcError) as e:
                stub.Feedback(
                    pb.FeedbackRequest(events=[bad]), metadata=[("x-api-key", F)], timeout=10
                )
            assert (
                e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'type'" in e.value.details()
            )
    finally:
        server.stop(grace=None)
