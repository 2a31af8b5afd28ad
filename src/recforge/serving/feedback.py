"""Feedback events: acknowledged only once durable, stored once per idempotency key.

One interface (:class:`EventStore`), two stores: SQLite (the default, one server) here and
PostgreSQL (several replicas) in ``feedback_postgres.py``. Both write through one
:class:`GroupCommitWriter`: requests put their events on a queue; a single writer thread takes
everything queued, writes it in one transaction, COMMITs, and only then acknowledges every
request in that transaction. Under load many requests share one fsync; with one request in
flight the latency is one commit.

**SQLite durability.** The database runs in WAL mode with ``synchronous`` set explicitly:

- ``FULL`` (the default): the WAL is fsynced at every COMMIT, so an acknowledged event
  survives a power loss or an OS crash, not only a crash of the server process. An
  acknowledgement is a promise that the event is kept; group commit pays for the fsync.
- ``NORMAL``: the WAL is fsynced only at checkpoints; an acknowledged event survives a
  process crash (``kill -9``), but the last transactions can be lost on power loss.

Events are read back per user (``history``: items oldest first; ``seen``) so that accepted
feedback takes effect on the next request, and exported in commit order (``events``: the
stored rows with their ids, a cursor for ``recforge retrain --from-feedback``).
"""

from __future__ import annotations

import logging
import math
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from recforge.exceptions import ConfigError, RecforgeError

log = logging.getLogger(__name__)

EVENT_TYPES = ("impression", "click", "view", "like", "dislike", "rating", "cart", "purchase")
# which event types count as "seen"/history for the next recommendation (impressions do not)
HISTORY_TYPES = ("click", "view", "like", "rating", "cart", "purchase")
SYNCHRONOUS = ("FULL", "NORMAL")
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,128}$")


class OverloadedError(RecforgeError, RuntimeError):
    """The feedback queue is full; the client should retry later (HTTP 503)."""


@dataclass(frozen=True)
class Event:
    """One feedback event. ``timestamp``: seconds since the epoch (the server's clock when
    absent). ``key``: an idempotency key; an event whose key was stored before is a duplicate."""

    user: str
    item: str
    type: str
    value: float = 1.0
    timestamp: float | None = None
    key: str | None = None

    def check(self) -> Event:
        """The event with its timestamp filled in; a ConfigError naming the bad field."""
        for f in ("user", "item"):
            v = getattr(self, f)
            if not isinstance(v, str) or not v or len(v) > 256:
                raise ConfigError(f"feedback field {f!r}: a non-empty string of <= 256 chars.")
        if self.type not in EVENT_TYPES:
            raise ConfigError(
                f"feedback field 'type' {self.type!r}: one of {', '.join(EVENT_TYPES)}."
            )
        if not isinstance(self.value, int | float) or not math.isfinite(self.value):
            raise ConfigError("feedback field 'value': a finite number.")
        ts = time.time() if self.timestamp is None else self.timestamp
        if not isinstance(ts, int | float) or not math.isfinite(ts) or ts < 0:
            raise ConfigError("feedback field 'timestamp': seconds since the epoch, >= 0.")
        if self.key is not None and not _KEY_RE.match(self.key):
            raise ConfigError("feedback field 'key': 1-128 printable ASCII characters, no spaces.")
        return Event(self.user, self.item, self.type, float(self.value), float(ts), self.key)


@dataclass(frozen=True)
class StoredEvent:
    """An event as stored: ``id`` is the store's row id, increasing in commit order (the
    cursor for ``events(since=...)``); ``received`` is the server's clock at its commit."""

    id: int
    user: str
    item: str
    type: str
    value: float
    timestamp: float
    key: str | None
    received: float


EXPORT_BATCH = 10_000  # rows per read while exporting: memory stays flat for any log


def check_types(types: Sequence[str] | None) -> tuple[str, ...] | None:
    """``types`` as a tuple, each one of EVENT_TYPES (a ConfigError naming a bad one)."""
    if types is None:
        return None
    bad = [t for t in types if t not in EVENT_TYPES]
    if bad:
        raise ConfigError(f"event type {bad[0]!r}: one of {', '.join(EVENT_TYPES)}.")
    return tuple(types)


def paginate(fetch: Callable[[int, int], list[tuple]], since: int) -> Iterator[StoredEvent]:
    """Keyset pagination over ``fetch(after_id, limit)`` (rows ordered by id, the columns of
    StoredEvent): each batch of EXPORT_BATCH starts after the last id read, so a long export
    holds no transaction open and memory stays flat."""
    while True:
        n = EXPORT_BATCH
        rows = fetch(since, n)
        yield from (StoredEvent(*r) for r in rows)
        if len(rows) < n:
            return
        since = rows[-1][0]


@dataclass(frozen=True)
class AppendResult:
    stored: int
    duplicates: int


class EventStore(Protocol):
    """Where feedback goes. ``append`` returns only after the events are durable."""

    def append(self, events: Sequence[Event], timeout: float | None = None) -> AppendResult: ...

    def history(self, user: str, limit: int = 50) -> list[str]:
        """The user's item ids from history-type events, oldest first, the last ``limit``."""
        ...

    def count(self) -> int: ...

    def last_id(self) -> int:
        """The id of the newest stored event (0 when there is none)."""
        ...

    def events(
        self, since: int = 0, until: int | None = None, types: Sequence[str] | None = None
    ) -> Iterator[StoredEvent]:
        """Stored events with ``since < id <= until`` (``until`` None: up to the newest),
        of the given ``types`` (None: all), oldest first, read in batches of EXPORT_BATCH."""
        ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------- group commit
class GroupCommitWriter:
    """One writer thread: everything queued goes into one transaction, acknowledged after
    COMMIT. ``commit(events) -> list[bool]`` (True = stored, False = duplicate) runs one
    transaction in the writer thread and raises on failure (every waiter then gets the error).

    ``max_batch``: events per transaction at most; ``max_pending``: events queued at most
    (beyond it ``submit`` raises OverloadedError instead of queueing without bound).
    ``on_commit(n_events, seconds)`` is called after each COMMIT (metrics).
    """

    def __init__(
        self,
        commit: Callable[[list[Event]], list[bool]],
        *,
        max_batch: int = 5000,
        max_pending: int = 100_000,
        on_commit: Callable[[int, float], None] | None = None,
        name: str = "recforge-feedback-writer",
    ) -> None:
        self._commit = commit
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.on_commit = on_commit
        self._q: queue.Queue[tuple[list[Event], Future] | None] = queue.Queue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self.commits = 0
        self.events_committed = 0
        self.last_commit_s = 0.0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        """Events submitted and not yet acknowledged."""
        return self._pending

    def submit(self, events: list[Event]) -> Future:
        if self._closed:
            raise OverloadedError("the feedback store is closed.")
        with self._pending_lock:
            if self._pending + len(events) > self.max_pending:
                raise OverloadedError(
                    f"feedback queue full ({self._pending} events pending); retry shortly."
                )
            self._pending += len(events)
        fut: Future = Future()
        self._q.put((events, fut))
        return fut

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            batch = [item]
            n = len(item[0])
            stop = False
            while n < self.max_batch:  # take everything already waiting: the group
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                n += len(nxt[0])
            self._write(batch, n)
            if stop:
                return

    def _write(self, batch: list[tuple[list[Event], Future]], n: int) -> None:
        events = [e for evs, _ in batch for e in evs]
        t0 = time.perf_counter()
        try:
            flags = self._commit(events)
        except BaseException as e:  # every waiter of this transaction gets the failure
            log.exception("feedback commit of %d events failed", n)
            for _, fut in batch:
                fut.set_exception(e)
        else:
            dt = time.perf_counter() - t0
            self.commits += 1
            self.events_committed += n
            self.last_commit_s = dt
            if self.on_commit is not None:
                self.on_commit(n, dt)
            i = 0
            for evs, fut in batch:
                f = flags[i : i + len(evs)]
                i += len(evs)
                stored = sum(f)
                fut.set_result(AppendResult(stored, len(evs) - stored))
        finally:
            with self._pending_lock:
                self._pending -= n

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then stop the thread."""
        if not self._closed:
            self._closed = True
            self._q.put(None)
            self._thread.join(timeout)


def first_occurrences(events: Sequence[Event]) -> dict[str, int]:
    """{idempotency key: index of its first event}: later events with a key are duplicates
    inside the same group, before the database is asked about earlier groups."""
    first: dict[str, int] = {}
    for i, e in enumerate(events):
        if e.key is not None:
            first.setdefault(e.key, i)
    return first


class GroupCommitStore:
    """What both stores share: ``append`` through the writer, ``stats``, ``close``.
    A subclass sets ``kind``, ``_wconn`` and ``_writer`` (built over its ``_commit``)."""

    kind = "?"
    _writer: GroupCommitWriter
    _wconn: Any

    def append(self, events: Sequence[Event], timeout: float | None = 30.0) -> AppendResult:
        """Validate, queue, and return once the events' transaction has committed."""
        checked = [e.check() for e in events]
        if not checked:
            return AppendResult(0, 0)
        return self._writer.submit(checked).result(timeout=timeout)

    def stats(self) -> dict[str, Any]:
        w = self._writer
        return {
            "store": self.kind,
            "queue_depth": w.queue_depth,
            "commits": w.commits,
            "events_committed": w.events_committed,
            "last_commit_seconds": w.last_commit_s,
        }

    def observe_commits(self, hook: Callable[[int, float], None]) -> None:
        """Call ``hook(n_events, seconds)`` after each COMMIT (metrics)."""
        self._writer.on_commit = hook

    def close(self) -> None:
        self._writer.close()
        self._wconn.close()


# ---------------------------------------------------------------------------- SQLite
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    user TEXT NOT NULL,
    item TEXT NOT NULL,
    type TEXT NOT NULL,
    value REAL NOT NULL,
    ts REAL NOT NULL,
    key TEXT UNIQUE,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_user ON events (user, id);
"""


class SQLiteEventStore(GroupCommitStore):
    """Feedback in one SQLite file (WAL, ``synchronous`` FULL by default; see the module doc).

    Reads use one connection per thread; WAL lets them run beside the writer.
    """

    kind = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        max_batch: int = 5000,
        max_pending: int = 100_000,
        on_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        sync = synchronous.upper()
        if sync not in SYNCHRONOUS:
            raise ConfigError(f"sqlite synchronous {synchronous!r}: use FULL or NORMAL.")
        self.path = Path(path)
        self.synchronous = sync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wconn = self._connect()
        mode = self._wconn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise ConfigError(f"{self.path}: SQLite refused WAL mode (got {mode!r}).")
        self._wconn.execute(f"PRAGMA synchronous={sync}")
        self._wconn.executescript(_SCHEMA)
        self._local = threading.local()
        self._writer = GroupCommitWriter(
            self._commit, max_batch=max_batch, max_pending=max_pending, on_commit=on_commit
        )

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _commit(self, events: list[Event]) -> list[bool]:
        c = self._wconn
        now = time.time()
        first = first_occurrences(events)
        c.execute("BEGIN IMMEDIATE")
        try:
            keys = list(first)
            stored_before = set()
            for i in range(0, len(keys), 900):  # keys already in the table: duplicates
                chunk = keys[i : i + 900]
                marks = ",".join("?" * len(chunk))
                rows = c.execute(f"SELECT key FROM events WHERE key IN ({marks})", chunk)
                stored_before.update(r[0] for r in rows)
            flags = [
                e.key is None or (first[e.key] == i and e.key not in stored_before)
                for i, e in enumerate(events)
            ]
            c.executemany(
                "INSERT INTO events (user, item, type, value, ts, key, received) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (e.user, e.item, e.type, e.value, e.timestamp, e.key, now)
                    for e, ok in zip(events, flags, strict=True)
                    if ok
                ],
            )
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return flags

    def history(self, user: str, limit: int = 50) -> list[str]:
        marks = ",".join("?" * len(HISTORY_TYPES))
        rows = self._reader().execute(
            f"SELECT item FROM events WHERE user = ? AND type IN ({marks}) "
            "ORDER BY id DESC LIMIT ?",
            (user, *HISTORY_TYPES, limit),
        )
        return [r[0] for r in rows][::-1]

    def count(self) -> int:
        return int(self._reader().execute("SELECT count(*) FROM events").fetchone()[0])

    def last_id(self) -> int:
        return int(self._reader().execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])

    def events(
        self, since: int = 0, until: int | None = None, types: Sequence[str] | None = None
    ) -> Iterator[StoredEvent]:
        types = check_types(types)
        where = "id > ?" + ("" if until is None else " AND id <= ?")
        args: list[Any] = [] if until is None else [until]
        if types is not None:
            where += f" AND type IN ({','.join('?' * len(types))})"
            args += types
        sql = (
            "SELECT id, user, item, type, value, ts, key, received FROM events "
            f"WHERE {where} ORDER BY id LIMIT ?"
        )
        conn = self._reader()
        return paginate(lambda after, n: conn.execute(sql, (after, *args, n)).fetchall(), since)

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "synchronous": self.synchronous}


def with_stored_history(
    store: EventStore | None, user: object, given: Sequence, limit: int
) -> list:
    """The user's stored history (oldest first, the last ``limit``) followed by a request's own
    ``history``: what makes accepted feedback take effect on the next request."""
    if store is None or limit <= 0:
        return list(given)
    return [*store.history(str(user), limit=limit), *given]


def open_store(url: str, **kw: Any) -> EventStore:
    """``sqlite://PATH?synchronous=NORMAL`` (``sqlite:///var/fb.db`` is /var/fb.db; a bare path
    works too) or ``postgresql://...``."""
    if url.startswith(("postgresql://", "postgres://")):
        from recforge.serving.feedback_postgres import PostgresEventStore

        return PostgresEventStore(url, **kw)
    path, _, query = url.removeprefix("sqlite://").partition("?")
    for part in filter(None, query.split("&")):
        k, _, v = part.partition("=")
        if k != "synchronous":
            raise ConfigError(f"feedback store URL {url!r}: unknown option {k!r} (synchronous=).")
        kw["synchronous"] = v
    if not path:
        raise ConfigError(f"feedback store URL {url!r}: no file path; e.g. sqlite:///var/fb.db")
    return SQLiteEventStore(path, **kw)
