"""The REST API against its own OpenAPI schema (schemathesis, generated requests): no 5xx
for anything a client can send; every write endpoint without a key is a 401."""

from __future__ import annotations

import shutil

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from recforge.serving.app import create_app
from recforge.serving.feedback import SQLiteEventStore
from recforge.serving.repository import BundleLoader, VersionManager, VersionSource, publish
from recforge.serving.settings import ServerSettings
from tests.serving_fakes import set_bundle_version, tiny_bundle  # noqa: F401

R, F, A = "read-key-0123456789", "feedback-key-0123456789", "admin-key-0123456789"
KEYS = {"read_keys": (R,), "feedback_keys": (F,), "admin_keys": (A,)}


@pytest.fixture(scope="module")
def app(tiny_bundle, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("fuzz")
    for tag in ("one", "two"):
        src = tmp / tag
        shutil.copytree(tiny_bundle, src)
        set_bundle_version(src, tag)
        publish(src, tmp / "root" / "demo")
    manager = VersionManager(VersionSource(tmp / "root"), BundleLoader())
    manager.sync()
    store = SQLiteEventStore(tmp / "fb.db")
    yield create_app(manager, ServerSettings(**KEYS), store)
    store.close()


@pytest.fixture(scope="module")
def api_schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_no_5xx_for_generated_requests(api_schema):
    """Every operation of the schema, 10 generated requests each (seeded), with the admin
    key so that every endpoint is reached past its key check."""
    ops = [result.ok() for result in api_schema.get_all_operations()]
    assert len(ops) >= 10
    codes: dict[str, list[int]] = {}
    for op in ops:
        _fuzz(op, codes.setdefault(f"{op.method.upper()} {op.path}", []))
    reached = [k for k, v in codes.items() if any(200 <= c < 300 for c in v)]
    # generated requests get past validation: recommend, score, models answer 2xx
    assert {"POST /v1/recommend", "POST /v1/score", "GET /v1/models"} <= set(reached), codes


def _fuzz(op, codes: list[int]) -> None:
    @given(case=op.as_strategy())
    @settings(
        max_examples=10,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case) -> None:
        response = case.call(headers={"X-API-Key": A})
        codes.append(response.status_code)
        assert response.status_code < 500, (op.method, op.path, response.text[:500])

    check()


def test_every_write_endpoint_without_a_key_is_401(app):
    client = TestClient(app)
    spec = client.get("/openapi.json").json()
    writes = [
        (method, path)
        for path, ops in spec["paths"].items()
        for method in ops
        if method in ("post", "put", "patch", "delete")
    ]
    assert any("/feedback" in p for _, p in writes) and any("/admin/" in p for _, p in writes)
    for method, path in writes:
        url = path.replace("{name}", "demo").replace("{version}", "1").replace("{label}", "stable")
        r = client.request(method.upper(), url, json={})
        assert r.status_code == 401, (method, path, r.status_code, r.text[:200])
        assert "WWW-Authenticate" in r.headers
