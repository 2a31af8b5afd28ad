"""Feedback in PostgreSQL: the store for several server replicas (psycopg 3).

The same group commit as SQLite (one writer thread per replica, one transaction per group,
acknowledged after COMMIT, which PostgreSQL makes durable with its default
``synchronous_commit=on``); replicas dedupe through the unique idempotency key
(``ON CONFLICT (key) DO NOTHING``). Reads use one connection per thread.

Export (``events``) is in id order. Ids come from a sequence, drawn when a row is inserted,
so with several replicas a transaction holding a smaller id can commit after one holding a
larger id: a reader that stops at the newest id may see a smaller one appear later.
``recforge retrain`` reads every event each run, so such a late event is used next time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from recforge.exceptions import ConfigError
from recforge.serving.feedback import (
    HISTORY_TYPES,
    Event,
    GroupCommitStore,
    GroupCommitWriter,
    StoredEvent,
    check_types,
    first_occurrences,
    paginate,
)

TABLE = "recforge_events"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id BIGSERIAL PRIMARY KEY,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    type TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    key TEXT UNIQUE,
    received DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS {TABLE}_user ON {TABLE} (user_id, id);
"""
_INSERT = f"""
INSERT INTO {TABLE} (user_id, item_id, type, value, ts, key, received)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::float8[], %s::float8[],
                     %s::text[], %s::float8[])
ON CONFLICT (key) DO NOTHING
RETURNING key
"""


class PostgresEventStore(GroupCommitStore):
    """Feedback events in one PostgreSQL table, shared by every replica."""

    kind = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        max_batch: int = 5000,
        max_pending: int = 100_000,
        on_commit: Callable[[int, float], None] | None = None,
        synchronous: str | None = None,
    ) -> None:
        if synchronous is not None:
            raise ConfigError("synchronous= is a SQLite option; PostgreSQL commits durably.")
        try:
            import psycopg
        except ImportError as e:  # pragma: no cover - psycopg is a dependency
            raise ConfigError(f"the PostgreSQL store needs psycopg: {e}") from None
        self._psycopg = psycopg
        self.url = url
        self._wconn = psycopg.connect(url, autocommit=True)
        self._wconn.execute(_SCHEMA)
        self._local = threading.local()
        self._writer = GroupCommitWriter(
            self._commit, max_batch=max_batch, max_pending=max_pending, on_commit=on_commit
        )

    def _reader(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._local.conn = self._psycopg.connect(self.url, autocommit=True)
        return conn

    def _commit(self, events: list[Event]) -> list[bool]:
        first = first_occurrences(events)  # the database sees each key once per group
        rows = [e for i, e in enumerate(events) if e.key is None or first[e.key] == i]
        now = time.time()
        cols = (
            [e.user for e in rows],
            [e.item for e in rows],
            [e.type for e in rows],
            [e.value for e in rows],
            [e.timestamp for e in rows],
            [e.key for e in rows],
            [now] * len(rows),
        )
        with self._wconn.transaction():
            stored_keys = {r[0] for r in self._wconn.execute(_INSERT, cols).fetchall()}
        return [
            e.key is None or (first[e.key] == i and e.key in stored_keys)
            for i, e in enumerate(events)
        ]

    def history(self, user: str, limit: int = 50) -> list[str]:
        rows = self._reader().execute(
            f"SELECT item_id FROM {TABLE} WHERE user_id = %s AND type = ANY(%s) "
            "ORDER BY id DESC LIMIT %s",
            (user, list(HISTORY_TYPES), limit),
        )
        return [r[0] for r in rows.fetchall()][::-1]

    def count(self) -> int:
        return int(self._reader().execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])

    def last_id(self) -> int:
        return int(
            self._reader().execute(f"SELECT coalesce(max(id), 0) FROM {TABLE}").fetchone()[0]
        )

    def events(
        self, since: int = 0, until: int | None = None, types: Sequence[str] | None = None
    ) -> Iterator[StoredEvent]:
        types = check_types(types)
        where = "id > %s" + ("" if until is None else " AND id <= %s")
        args: list[Any] = [] if until is None else [until]
        if types is not None:
            where += " AND type = ANY(%s)"
            args.append(list(types))
        sql = (
            f"SELECT id, user_id, item_id, type, value, ts, key, received FROM {TABLE} "
            f"WHERE {where} ORDER BY id LIMIT %s"
        )
        conn = self._reader()
        return paginate(lambda after, n: conn.execute(sql, (after, *args, n)).fetchall(), since)
