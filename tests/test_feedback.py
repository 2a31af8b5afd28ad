"""Feedback stores: durable acknowledgement, group commit, idempotency, history read-back.

The same checks run on SQLite and on a real PostgreSQL server (installed and started by
tests/pg_server.py; skipped with the reason only where it cannot be installed)."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from recforge.exceptions import ConfigError
from recforge.serving.feedback import (
    Event,
    GroupCommitWriter,
    OverloadedError,
    SQLiteEventStore,
    open_store,
)
from tests.pg_server import running_postgres


@pytest.fixture(scope="module")
def pg_url():
    with running_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.xdist_group("pg"))])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = open_store(f"sqlite://{tmp_path / 'fb.db'}")
    else:
        import psycopg

        url = request.getfixturevalue("pg_url")
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("DROP TABLE IF EXISTS recforge_events")
        s = open_store(url)
    yield s
    s.close()


def test_append_ack_history_and_dedupe(store):
    r = store.append([Event("u1", "a", "click"), Event("u1", "b", "purchase", key="k1")])
    assert (r.stored, r.duplicates) == (2, 0)
    r = store.append([Event("u1", "c", "impression"), Event("u1", "b", "purchase", key="k1")])
    assert (r.stored, r.duplicates) == (1, 1)  # the retried event is stored once
    r = store.append([Event("u2", "x", "click", key="k2"), Event("u2", "x", "click", key="k2")])
    assert (r.stored, r.duplicates) == (1, 1)  # duplicates inside one request too
    assert store.history("u1") == ["a", "b"]  # impressions are not history; oldest first
    assert store.history("u1", limit=1) == ["b"]
    assert store.history("nobody") == []
    assert store.count() == 4
    assert store.stats()["commits"] >= 3


def test_events_export_in_commit_order_with_cursor_and_types(store, monkeypatch):
    from recforge.serving import feedback

    assert store.last_id() == 0 and list(store.events()) == []
    evs = [Event(f"u{i % 3}", f"i{i}", "click" if i % 2 else "view", timestamp=1000.0 + i)
           for i in range(7)]  # fmt: skip
    store.append(evs[:4])
    store.append([*evs[4:], Event("u0", "i0", "rating", value=4.0, key="r1")])
    monkeypatch.setattr(feedback, "EXPORT_BATCH", 3)  # several pages for 8 rows
    rows = list(store.events())
    assert [r.item for r in rows] == [e.item for e in evs] + ["i0"]
    ids = [r.id for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == 8 and store.last_id() == ids[-1]
    assert rows[-1].type == "rating" and rows[-1].value == 4.0 and rows[-1].key == "r1"
    assert rows[0].timestamp == 1000.0 and rows[0].received > 0
    assert [r.id for r in store.events(since=ids[2], until=ids[5])] == ids[3:6]
    assert [r.item for r in store.events(types=["view"])] == ["i0", "i2", "i4", "i6"]
    assert list(store.events(since=ids[-1])) == []
    with pytest.raises(ConfigError, match="'klick'"):
        store.events(types=["klick"])


def test_concurrent_requests_share_commits(store):
    """32 threads x 20 requests: every request acknowledged, fewer transactions than requests."""

    def send(t: int) -> int:
        n = 0
        for i in range(20):
            n += store.append([Event(f"u{t}", f"i{i}", "click", key=f"{t}-{i}")]).stored
        return n

    with ThreadPoolExecutor(32) as ex:
        assert sum(ex.map(send, range(32))) == 640
    assert store.count() == 640
    assert store.stats()["commits"] < 640
    assert store.history("u3")[-1] == "i19"


def test_event_validation_names_the_field(store):
    with pytest.raises(ConfigError, match="'type'"):
        store.append([Event("u", "i", "explode")])
    with pytest.raises(ConfigError, match="'value'"):
        store.append([Event("u", "i", "rating", value=float("nan"))])
    with pytest.raises(ConfigError, match="'key'"):
        store.append([Event("u", "i", "click", key="has space")])
    with pytest.raises(ConfigError, match="'user'"):
        store.append([Event("", "i", "click")])
    assert store.count() == 0


@pytest.mark.parametrize(("sync", "level"), [("FULL", 2), ("NORMAL", 1)])
def test_sqlite_wal_and_synchronous_set_explicitly(tmp_path, sync, level):
    s = open_store(f"sqlite://{tmp_path / 'fb.db'}?synchronous={sync}")
    try:
        assert s._wconn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s._wconn.execute("PRAGMA synchronous").fetchone()[0] == level
        assert s.stats()["synchronous"] == sync
    finally:
        s.close()
    assert sqlite3.connect(tmp_path / "fb.db").execute("PRAGMA integrity_check").fetchone() == (
        "ok",
    )


def test_sqlite_default_is_full(tmp_path):
    s = SQLiteEventStore(tmp_path / "fb.db")
    assert s.synchronous == "FULL"
    s.close()
    with pytest.raises(ConfigError, match="FULL or NORMAL"):
        SQLiteEventStore(tmp_path / "x.db", synchronous="OFF")
    with pytest.raises(ConfigError, match="unknown option"):
        open_store(f"sqlite://{tmp_path / 'y.db'}?fsync=0")


def test_a_failed_commit_fails_every_waiter_in_the_group():
    gate = threading.Event()

    def commit(events):
        gate.wait(5)
        raise OSError("disk full")

    w = GroupCommitWriter(commit)
    futs = [w.submit([Event("u", "i", "click")]) for _ in range(5)]
    gate.set()
    for f in futs:
        with pytest.raises(OSError, match="disk full"):
            f.result(5)
    assert w.queue_depth == 0
    w.close()


def test_full_queue_is_refused_not_unbounded():
    gate = threading.Event()
    w = GroupCommitWriter(lambda ev: (gate.wait(5), [True] * len(ev))[1], max_pending=3)
    w.submit([Event("u", "i", "click")] * 3)
    with pytest.raises(OverloadedError, match="queue full"):
        w.submit([Event("u", "i", "click")])
    gate.set()
    w.close()


def test_close_commits_what_is_queued(tmp_path):
    s = SQLiteEventStore(tmp_path / "fb.db")
    futs = [s._writer.submit([Event("u", f"i{i}", "click", 1.0, 1.0)]) for i in range(50)]
    s.close()
    assert all(f.result(1).stored == 1 for f in futs)
    assert sqlite3.connect(tmp_path / "fb.db").execute(
        "SELECT count(*) FROM events"
    ).fetchone() == (50,)
