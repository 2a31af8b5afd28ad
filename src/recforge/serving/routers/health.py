"""GET /health/live (the process answers) and /health/ready (a model can serve)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live")
def live() -> dict:
    return {"status": "live"}


@router.get("/ready")
def ready(request: Request) -> JSONResponse:
    ok = bool(request.app.state.source.ready())
    return JSONResponse(status_code=200 if ok else 503, content={"ready": ok})
