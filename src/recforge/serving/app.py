"""The REST app: ``create_app(source, settings)`` builds a FastAPI app over a recommender
source (``recforge.serving.source``); one router per resource, each a few lines over the
core. OpenAPI docs at ``/docs``.

    app = create_app(SingleBundle(Recommender.load("runs/bundle")))
    uvicorn.run(app, port=8501)
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from recforge.exceptions import ArtifactError, ConfigError, DataError, UnknownIdError
from recforge.serving.feedback import EventStore
from recforge.serving.repository import NoServableError
from recforge.serving.settings import ServerSettings
from recforge.serving.source import ModelNotFound, RecommenderSource


def create_app(
    source: RecommenderSource,
    settings: ServerSettings | None = None,
    feedback: EventStore | None = None,
) -> FastAPI:
    """The FastAPI app serving ``source`` (a SingleBundle or the model repository's
    VersionManager); ``feedback``: the event store behind POST /v1/feedback."""
    from recforge import __version__
    from recforge.serving.operations import READ, install
    from recforge.serving.routers import health, models, recommend, ui

    settings = settings or ServerSettings()
    app = FastAPI(
        title="recforge",
        version=__version__,
        description="Recommendations from a recforge bundle: recall, rank, re-rank.",
    )
    app.state.source = source
    app.state.settings = settings
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    for router in (recommend.router, models.router):
        app.include_router(router, dependencies=READ)  # a read key where one is required
    app.include_router(health.router)
    app.include_router(ui.router)  # the page; its script calls the keyed API
    install(app, settings, feedback)  # keys, rate limits, metrics, feedback, admin
    _error_handlers(app)
    return app


def _error(status: int, field: str | None, message: str, kind: str) -> JSONResponse:
    loc = ["body", *field.split(".")] if field else ["body"]
    return JSONResponse(
        status_code=status, content={"detail": [{"loc": loc, "msg": message, "type": kind}]}
    )


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DataError)
    async def data_error(_: Request, e: DataError) -> JSONResponse:
        field = e.column if isinstance(e.column, str) else None
        return _error(422, field, str(e), "value_error")

    @app.exception_handler(UnknownIdError)
    async def unknown_id(_: Request, e: UnknownIdError) -> JSONResponse:
        return _error(404, None, str(e), "not_found")

    @app.exception_handler(ModelNotFound)
    async def no_model(_: Request, e: ModelNotFound) -> JSONResponse:
        return _error(404, "model", str(e), "not_found")

    @app.exception_handler(NoServableError)
    async def no_servable(_: Request, e: NoServableError) -> JSONResponse:
        return _error(e.status, "model", str(e), "not_found" if e.status == 404 else "unavailable")

    @app.exception_handler(ConfigError)
    async def config_error(_: Request, e: ConfigError) -> JSONResponse:
        return _error(400, None, str(e), "bad_request")

    @app.exception_handler(ArtifactError)
    async def artifact_error(_: Request, e: ArtifactError) -> JSONResponse:
        return _error(503, None, str(e), "unavailable")


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413 (by its
    Content-Length, or while it streams in without one)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, int(max_bytes)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(send)
            return
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._too_large(send)

    async def _too_large(self, send: Any) -> None:
        body = (
            b'{"detail":[{"loc":["body"],"msg":"request body larger than '
            + str(self.max_bytes).encode()
            + b' bytes","type":"too_large"}]}'
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory`` worker processes: serves the bundle named by
    ``RECFORGE_BUNDLE`` (``recforge serve --workers N`` sets it)."""
    from recforge.serving.core import Recommender
    from recforge.serving.source import SingleBundle

    bundle = os.environ.get("RECFORGE_BUNDLE")
    if not bundle:
        raise ConfigError("RECFORGE_BUNDLE is not set: the bundle directory to serve.")
    from recforge.serving.settings import apply_threads

    settings = ServerSettings(
        host=os.environ.get("RECFORGE_HOST", "127.0.0.1"),  # the bind decides if keys are needed
        max_body_bytes=int(os.environ.get("RECFORGE_MAX_BODY", 256 * 1024)),
        threads=int(os.environ.get("RECFORGE_THREADS", 1)),
        rate_limit_rps=float(os.environ.get("RECFORGE_RATE_LIMIT", 0)),
    ).with_env_keys()
    from recforge.serving.runtime import apply_file

    rec = Recommender.load(bundle)
    apply_threads(settings.threads)
    source = SingleBundle(rec)
    if os.environ.get("RECFORGE_RUNTIME"):
        apply_file(rec, os.environ["RECFORGE_RUNTIME"], source.name)
    if os.environ.get("RECFORGE_PRECOMPUTED"):
        from recforge.serving.precomputed import Precomputed

        age = float(os.environ.get("RECFORGE_PRECOMPUTED_MAX_AGE", 86_400))
        rec.use_precomputed(Precomputed.load(os.environ["RECFORGE_PRECOMPUTED"], age))
    rec.warmup()
    return create_app(source, settings)
