"""REST and gRPC end to end against a real ``recforge serve`` process on loopback: the same
answers from both, and bad requests answered 4xx with the field named."""

from __future__ import annotations

import json

import grpc
import httpx
import pytest

from recforge.serving.demo import ServerProcess
from recforge.serving.protos import recforge_pb2 as pb
from recforge.serving.protos import recforge_pb2_grpc as pb_grpc
from tests.serving_fixtures import build_tiny_bundle, tiny_log

pytestmark = pytest.mark.xdist_group("server")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    bundle = build_tiny_bundle(tmp_path_factory.mktemp("srv") / "bundle")
    proc = ServerProcess(bundle)
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    grpc.channel_ready_future(channel).result(timeout=20)
    yield pb_grpc.RecommenderStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def users():
    return list(tiny_log().users[:5])


def test_rest_and_grpc_give_the_same_answers(server, stub, users):
    for user in [*users, "cold-user"]:
        body = {"user": user, "k": 7, "context": {"device": "mobile"}, "explain": True}
        rest = httpx.post(f"{server.url}/v1/recommend", json=body, timeout=10)
        assert rest.status_code == 200, rest.text
        r = rest.json()
        g = stub.Recommend(
            pb.RecommendRequest(
                user=str(user), k=7, context={"device": pb.Value(s="mobile")}, explain=True
            )
        )
        assert [str(e["item"]) for e in r["items"]] == [e.item for e in g.items]
        assert [e["score"] for e in r["items"]] == pytest.approx([e.score for e in g.items])
        assert r["version"] == g.version and r["cold"] == g.cold == (user == "cold-user")
        trace = json.loads(g.trace_json)
        assert [e["item"] for e in trace["items"]] == [e["item"] for e in r["trace"]["items"]]


def test_score_similar_models_health(server, stub, users):
    rest = httpx.post(f"{server.url}/v1/score", json={"user": users[0], "items": [1, 2, 3]}).json()
    g = stub.Score(pb.ScoreRequest(user=str(users[0]), items=["1", "2", "3"]))
    assert [e["score"] for e in rest["items"]] == pytest.approx([e.score for e in g.items])
    sim = httpx.post(f"{server.url}/v1/similar", json={"item": 1, "k": 4}).json()
    gs = stub.Similar(pb.SimilarRequest(item="1", k=4))
    assert [str(e["item"]) for e in sim["items"]] == [e.item for e in gs.items]
    models = httpx.get(f"{server.url}/v1/models").json()["models"]
    assert models[0]["name"] == "tiny" and models[0]["ranker"] == "deepfm"
    assert json.loads(stub.Models(pb.ModelsRequest()).models_json)[0]["version"] == sim["version"]
    assert httpx.get(f"{server.url}/health/live").status_code == 200
    assert httpx.get(f"{server.url}/health/ready").json() == {"ready": True}
    assert stub.Health(pb.HealthRequest()).ready
    assert httpx.get(f"{server.url}/openapi.json").json()["paths"]["/v1/recommend"]


@pytest.mark.parametrize(
    "body, status, field",
    [
        ({"user": "u1", "k": "ten"}, 422, "k"),
        ({"user": "u1", "k": 0}, 422, "k"),
        ({"user": "u1", "k": 10**9}, 422, "k"),
        ({"user": ["u1"]}, 422, "user"),
        ({"k": 5}, 422, "user"),
        ({"user": "u1", "colour": "red"}, 422, "colour"),
        ({"user": "u1", "context": {"nope": 1}}, 422, "context"),
        ({"user": "u1", "filters": {"colour": "red"}}, 422, "filters"),
        ({"user": "u1", "history": list(range(5000))}, 422, "history"),
        ({"user": "u1", "model": "other"}, 404, "model"),
    ],
)
def test_bad_rest_requests_are_4xx_naming_the_field(server, body, status, field):
    r = httpx.post(f"{server.url}/v1/recommend", json=body, timeout=10)
    assert r.status_code == status, r.text
    locs = [".".join(map(str, d["loc"])) for d in r.json()["detail"]]
    assert any(field in loc for loc in locs), locs


def test_oversize_and_malformed_bodies(server):
    big = {"user": "u1", "history": ["x" * 100] * 3000}  # ~300 KB > the 256 KB limit
    r = httpx.post(f"{server.url}/v1/recommend", json=big, timeout=10)
    assert r.status_code == 413
    r = httpx.post(
        f"{server.url}/v1/recommend",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422
    r = httpx.post(f"{server.url}/v1/similar", json={"item": "no-such-item"})
    assert r.status_code == 404


def test_bad_grpc_requests(stub):
    for request, code in (
        (pb.RecommendRequest(user="u1", k=-1), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.RecommendRequest(user="u1", k=5000), grpc.StatusCode.INVALID_ARGUMENT),
        (
            pb.RecommendRequest(user="u1", context={"nope": pb.Value(i=1)}),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (pb.RecommendRequest(user="u1", model="other"), grpc.StatusCode.NOT_FOUND),
        (
            pb.RecommendRequest(user="u1", history=["x"] * 300_000),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ),
    ):
        with pytest.raises(grpc.RpcError) as e:
            stub.Recommend(request)
        assert e.value.code() == code, (request, e.value.details())
    with pytest.raises(grpc.RpcError) as e:
        stub.Similar(pb.SimilarRequest(item="no-such-item"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_demo_sends_context_values_as_grpc_values():
    from recforge.serving.demo import _pb_value

    kinds = [_pb_value(v).WhichOneof("kind") for v in (True, 3, 0.5, "mobile")]
    assert kinds == ["b", "i", "d", "s"]
    assert _pb_value("afternoon").s == "afternoon" and _pb_value(3).i == 3
