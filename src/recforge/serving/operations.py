"""What makes the app one a team can leave running: keys, limits, metrics, feedback, admin.

``install(app, settings, feedback=None)`` is called by ``create_app``: it refuses an unsafe
bind, puts the access policy, the metrics and the feedback store on ``app.state``, adds the
rate-limit and request-metrics middleware and the feedback, admin and /metrics routes.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI

from recforge.serving.feedback import EventStore
from recforge.serving.metrics import RequestMetrics, ServingMetrics
from recforge.serving.repository import VersionManager
from recforge.serving.security import AccessPolicy, ApiKeys, RateLimit, RateLimiter, require

READ = [Depends(require("read"))]  # the dependencies of every read router


def install(app: FastAPI, settings: Any, feedback: EventStore | None = None) -> None:
    from recforge.serving.routers import admin
    from recforge.serving.routers import feedback as feedback_router

    keys = ApiKeys(settings.read_keys, settings.feedback_keys, settings.admin_keys)
    access = AccessPolicy(keys, host=settings.host)
    access.check_bind()
    metrics = ServingMetrics()
    app.state.access = access
    app.state.metrics = metrics
    app.state.feedback = feedback
    app.state.feedback_history = settings.feedback_history
    if isinstance(app.state.source, VersionManager):
        metrics.watch_versions(app.state.source)
    if feedback is not None:
        feedback.observe_commits(metrics.on_commit)
        metrics.track_queue_depth(lambda: feedback.stats()["queue_depth"])
    app.include_router(feedback_router.router)
    app.include_router(admin.router)
    app.include_router(admin.metrics_router)
    app.add_middleware(
        RateLimit, limiter=RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst)
    )
    app.add_middleware(RequestMetrics, metrics=metrics)
