"""API keys and rate limits: secure by default.

Three kinds of key. ``read`` (recommend, score, similar, models): optional, and required
whenever the server binds anything but loopback. ``feedback`` and ``admin``: always required;
with none configured those endpoints answer 401 and say which setting enables them. A key of a
higher kind also opens the lower ones (admin > feedback > read). Keys come in a header
(``X-API-Key: K`` or ``Authorization: Bearer K``), never in a URL (URLs get logged); they are
compared in constant time (SHA-256 digests through ``hmac.compare_digest``, every key checked)
and never logged or echoed. Without a key: 401; with a key of the wrong kind: 403.

The server refuses to bind a non-loopback address without a read key.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from recforge.exceptions import ConfigError, RecforgeError

KINDS = ("read", "feedback", "admin")
_RANK = {k: i for i, k in enumerate(KINDS)}
MIN_KEY_LENGTH = 16


class AuthError(RecforgeError, PermissionError):
    """A request without a valid key (``status`` 401) or with the wrong kind of key (403)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost``; anything else (0.0.0.0 included) is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class ApiKeys:
    """The configured keys of each kind (several per kind allow rotation)."""

    read: tuple[str, ...] = ()
    feedback: tuple[str, ...] = ()
    admin: tuple[str, ...] = ()
    _digests: tuple[tuple[bytes, str], ...] = field(default=(), init=False, repr=False)

    def __post_init__(self) -> None:
        digests = []
        for kind in KINDS:
            for k in getattr(self, kind):
                if not isinstance(k, str) or len(k) < MIN_KEY_LENGTH:
                    raise ConfigError(
                        f"{kind} API key: at least {MIN_KEY_LENGTH} characters "
                        f"(e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')."
                    )
                digests.append((_digest(k), kind))
        object.__setattr__(self, "_digests", tuple(digests))

    def __repr__(self) -> str:  # never show a key, even in a traceback
        n = {k: len(getattr(self, k)) for k in KINDS}
        return f"ApiKeys(read={n['read']} key(s), feedback={n['feedback']}, admin={n['admin']})"

    @classmethod
    def from_strings(cls, read: str = "", feedback: str = "", admin: str = "") -> ApiKeys:
        """From comma-separated lists (as in the RECFORGE_*_KEYS environment variables)."""

        def split(s: str) -> tuple[str, ...]:
            return tuple(x.strip() for x in (s or "").split(",") if x.strip())

        return cls(split(read), split(feedback), split(admin))

    def kind_of(self, presented: str) -> str | None:
        """The highest kind whose key equals ``presented``; every key is compared."""
        d = _digest(presented)
        best = None
        for digest, kind in self._digests:
            if hmac.compare_digest(d, digest) and (best is None or _RANK[kind] > _RANK[best]):
                best = kind
        return best


class AccessPolicy:
    """Decides, per request, whether a presented key may use an endpoint of a given kind."""

    def __init__(self, keys: ApiKeys, *, host: str) -> None:
        self.keys = keys
        self.host = host
        self.read_required = bool(keys.read) or not is_loopback(host)

    def check_bind(self) -> None:
        """Refuse a non-loopback bind without a read key (and so without any key)."""
        if not is_loopback(self.host) and not self.keys.read:
            raise ConfigError(
                f"refusing to bind {self.host}: a server reachable from other machines needs "
                "API keys; set RECFORGE_READ_KEYS (and RECFORGE_FEEDBACK_KEYS, "
                "RECFORGE_ADMIN_KEYS), or bind 127.0.0.1."
            )

    def authorize(self, kind: str, presented: str | None) -> str | None:
        """The kind of the presented key; AuthError(401/403) when it may not use ``kind``."""
        if kind not in _RANK:
            raise ValueError(kind)
        if kind == "read" and not self.read_required:
            return None
        if not presented:
            configured = any(_RANK[k] >= _RANK[kind] and getattr(self.keys, k) for k in KINDS)
            hint = (
                ""
                if configured
                else f" No {kind} key is configured: set RECFORGE_{kind.upper()}_KEYS on the server."
            )
            raise AuthError(401, f"this endpoint needs a {kind} API key (header X-API-Key).{hint}")
        got = self.keys.kind_of(presented)
        if got is None:
            raise AuthError(401, "the API key is not valid.")
        if _RANK[got] < _RANK[kind]:
            raise AuthError(403, f"a {got} key cannot use this endpoint; it needs a {kind} key.")
        return got


def presented_key(headers) -> str | None:
    """The key from ``X-API-Key`` or ``Authorization: Bearer``; None when absent."""
    if k := headers.get("x-api-key"):
        return k
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class RateLimiter:
    """A token bucket per client: ``rate`` requests/s sustained, ``burst`` at once.
    ``rate=0`` disables it. Buckets of clients idle for a minute are dropped."""

    def __init__(self, rate: float, burst: int | None = None) -> None:
        if rate < 0 or not math.isfinite(rate):
            raise ConfigError(f"rate limit {rate!r}: requests per second, >= 0 (0 = off).")
        self.rate = rate
        self.burst = float(burst if burst is not None else max(1, int(rate)))
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._last_prune = time.monotonic()

    def allow(self, client: str) -> float:
        """0.0 if the request may go, else the seconds to wait before retrying."""
        if self.rate == 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[client] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            if now - self._last_prune > 60:
                self._buckets = {c: b for c, b in self._buckets.items() if now - b[1] < 60}
                self._last_prune = now
        return wait


def client_id(key: str | None, peer: str | None) -> str:
    """What a rate limit counts by: the key's digest when one is presented, else the peer."""
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return "ip:" + (peer or "?")


# ---------------------------------------------------------------------------- HTTP glue
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key")


def require(kind: str) -> Callable[..., str | None]:
    """A FastAPI dependency: the request needs a key of ``kind`` (per the app's
    ``state.access``); 401 without a valid key, 403 with one of a lower kind."""
    if kind not in _RANK:
        raise ValueError(kind)

    def dependency(request: Request, _key: str | None = Security(_api_key_header)) -> str | None:
        access: AccessPolicy | None = getattr(request.app.state, "access", None)
        if access is None:
            settings = getattr(request.app.state, "settings", None)
            access = AccessPolicy(ApiKeys(), host=getattr(settings, "host", "127.0.0.1"))
        try:
            return access.authorize(kind, presented_key(request.headers))
        except AuthError as e:
            headers = {"WWW-Authenticate": "ApiKey"} if e.status == 401 else None
            raise HTTPException(e.status, str(e), headers=headers) from None

    dependency.__name__ = f"require_{kind}_key"
    return dependency


class RateLimit:
    """ASGI middleware: 429 with ``Retry-After`` once a client (API key, else address)
    exceeds the limiter; health checks are never limited."""

    def __init__(self, app: Any, limiter: RateLimiter, exempt: tuple[str, ...] = ("/health/",)):
        self.app, self.limiter, self.exempt = app, limiter, exempt

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or self.limiter.rate == 0 or path.startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1")
            for k, v in scope.get("headers") or []
            if k.lower() in (b"x-api-key", b"authorization")
        }
        peer = (scope.get("client") or (None,))[0]
        wait = self.limiter.allow(client_id(presented_key(headers), peer))
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        body = b'{"detail":"rate limit exceeded; retry after the Retry-After seconds"}'
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"retry-after", str(max(1, math.ceil(wait))).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
