"""Prometheus metrics shared by REST and gRPC: one registry per server (tests build several).

Names (all prefixed ``recforge_``):

- ``requests_total{endpoint,protocol,status}`` and ``request_seconds{endpoint,protocol}``
- ``stage_seconds{stage,model,version}``: time per funnel stage from the core's trace
- ``model_versions_loaded{model}``, ``model_load_failures_total{model}``,
  ``model_load_seconds{model}``
- ``feedback_events_total{result}`` (stored, duplicate), ``feedback_queue_depth``,
  ``feedback_commit_seconds`` and ``feedback_commit_events`` (events per transaction)
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class ServingMetrics:
    """Every metric the server exports, on its own registry."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "recforge_requests_total",
            "Requests answered, by endpoint, protocol and status code",
            ["endpoint", "protocol", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "recforge_request_seconds",
            "Request latency, by endpoint and protocol",
            ["endpoint", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "recforge_stage_seconds",
            "Time per funnel stage, by model and version",
            ["stage", "model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.versions_loaded = Gauge(
            "recforge_model_versions_loaded", "Versions available, by model", ["model"], registry=r
        )
        self.load_failures = Counter(
            "recforge_model_load_failures_total",
            "Versions that failed the load gate, by model",
            ["model"],
            registry=r,
        )
        self.load_seconds = Histogram(
            "recforge_model_load_seconds",
            "Time to load and gate a version",
            ["model"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        self.feedback_events = Counter(
            "recforge_feedback_events_total",
            "Feedback events acknowledged, stored or duplicate (idempotency key seen)",
            ["result"],
            registry=r,
        )
        self.feedback_queue_depth = Gauge(
            "recforge_feedback_queue_depth", "Feedback events waiting for a commit", registry=r
        )
        self.feedback_commit_seconds = Histogram(
            "recforge_feedback_commit_seconds",
            "Time of one feedback transaction (write + COMMIT)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.feedback_commit_events = Histogram(
            "recforge_feedback_commit_events",
            "Events per feedback transaction (the group size)",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
            registry=r,
        )

    def observe_recommend(self, model: str | None, answer: dict, seconds: float) -> None:
        """A recommend answer: the whole core call as stage ``core`` for its model and
        version, and each funnel stage when the answer carries a trace (``explain``)."""
        labels = (model or "default", str(answer.get("version", "")))
        self.stage_seconds.labels("core", *labels).observe(seconds)
        for stage, ms in ((answer.get("trace") or {}).get("stage_ms") or {}).items():
            if stage != "total":
                self.stage_seconds.labels(stage, *labels).observe(ms / 1000)

    def watch_versions(self, manager) -> None:
        """Follow a VersionManager: its events update the version metrics from now on."""
        self._manager = manager
        manager.on_event = self.on_version_event
        for entry in manager.describe():
            self._count_available(entry["name"])

    def _count_available(self, name: str) -> None:
        m = getattr(self, "_manager", None)
        if m is not None:
            self.versions_loaded.labels(name).set(m.available_count(name))

    def on_version_event(self, event: str, rec) -> None:
        """The version manager's ``on_event`` hook (``rec``: its VersionRecord)."""
        if event == "loaded":
            self.load_seconds.labels(rec.name).observe(rec.load_seconds or 0.0)
        elif event == "failed":
            self.load_failures.labels(rec.name).inc()
        self._count_available(rec.name)

    def on_commit(self, n_events: int, seconds: float) -> None:
        """The feedback writer's ``on_commit`` hook."""
        self.feedback_commit_seconds.observe(seconds)
        self.feedback_commit_events.observe(n_events)

    def track_queue_depth(self, depth: Callable[[], int]) -> None:
        self.feedback_queue_depth.set_function(lambda: float(depth()))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware: ``requests_total`` and ``request_seconds`` per route template (an
    unmatched path counts as ``unmatched``, so clients cannot grow the label set)."""

    def __init__(self, app, metrics: ServingMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        t0 = time.perf_counter()

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(route, "rest", str(status)).inc()
            self.metrics.request_seconds.labels(route, "rest").observe(time.perf_counter() - t0)
