"""API keys (kinds, 401/403, constant-time lookup, never shown), bind refusal, rate limits."""

from __future__ import annotations

import time

import pytest

from recforge.exceptions import ConfigError
from recforge.serving.metrics import ServingMetrics
from recforge.serving.repository import VersionManager, VersionSource
from recforge.serving.security import (
    AccessPolicy,
    ApiKeys,
    AuthError,
    RateLimiter,
    is_loopback,
    presented_key,
)
from tests.serving_fakes import FakeLoader, write_fake

R, F, A = "r" * 20, "f" * 20, "a" * 20


def test_kinds_401_403():
    p = AccessPolicy(ApiKeys((R,), (F,), (A,)), host="127.0.0.1")
    assert p.authorize("read", R) == "read"
    assert p.authorize("read", A) == "admin"  # higher kinds open lower ones
    assert p.authorize("feedback", F) == "feedback"
    for kind, key, status in [
        ("read", None, 401),
        ("feedback", None, 401),
        ("feedback", "x" * 20, 401),
        ("feedback", R, 403),
        ("admin", F, 403),
    ]:
        with pytest.raises(AuthError) as e:
            p.authorize(kind, key)
        assert e.value.status == status
        assert R not in str(e.value) and F not in str(e.value)


def test_feedback_and_admin_need_keys_by_default_read_is_open_on_loopback():
    p = AccessPolicy(ApiKeys(), host="127.0.0.1")
    assert p.authorize("read", None) is None
    with pytest.raises(AuthError, match="RECFORGE_FEEDBACK_KEYS") as e:
        p.authorize("feedback", None)
    assert e.value.status == 401
    with pytest.raises(AuthError, match="RECFORGE_ADMIN_KEYS"):
        p.authorize("admin", None)


def test_refuses_a_public_bind_without_keys():
    for host in ("0.0.0.0", "10.1.2.3", "::", "example.org"):
        assert not is_loopback(host)
        with pytest.raises(ConfigError, match="refusing to bind"):
            AccessPolicy(ApiKeys(), host=host).check_bind()
    AccessPolicy(ApiKeys((R,), (F,), (A,)), host="0.0.0.0").check_bind()
    assert AccessPolicy(ApiKeys((R,)), host="0.0.0.0").read_required
    for host in ("127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost"):
        assert is_loopback(host)


def test_keys_are_never_shown_and_must_be_long():
    k = ApiKeys((R,), (F,), (A,))
    assert R not in repr(k) and F not in repr(k) and A not in str(k)
    with pytest.raises(ConfigError, match="at least 16"):
        ApiKeys(admin=("short",))
    assert ApiKeys.from_strings(read=f" {R}, ", admin=A).read == (R,)


def test_presented_key_headers():
    assert presented_key({"x-api-key": R}) == R
    assert presented_key({"authorization": f"Bearer {R}"}) == R
    assert presented_key({"authorization": f"Basic {R}"}) is None
    assert presented_key({}) is None


def test_rate_limiter_token_bucket():
    rl = RateLimiter(rate=50, burst=5)
    waits = [rl.allow("c") for _ in range(6)]
    assert waits[:5] == [0.0] * 5 and waits[5] > 0
    assert rl.allow("other") == 0.0  # per client
    time.sleep(waits[5] + 0.01)
    assert rl.allow("c") == 0.0
    assert RateLimiter(0).allow("c") == 0.0


def test_metrics_follow_the_version_manager(tmp_path):
    mx = ServingMetrics()
    write_fake(tmp_path / "m" / "1", 1)
    write_fake(tmp_path / "m" / "2", 2, nan=True)
    m = VersionManager(VersionSource(tmp_path), FakeLoader())
    mx.watch_versions(m)
    m.sync()
    text = mx.render().decode()
    assert 'recforge_model_versions_loaded{model="m"} 1.0' in text
    assert 'recforge_model_load_failures_total{model="m"} 1.0' in text
    mx.on_commit(12, 0.003)
    mx.track_queue_depth(lambda: 7)
    text = mx.render().decode()
    assert "recforge_feedback_queue_depth 7.0" in text
    assert "recforge_feedback_commit_events_count 1.0" in text
