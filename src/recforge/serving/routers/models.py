"""GET /v1/models: what is loaded (name, version, parts, fields, metrics)."""

from __future__ import annotations

from fastapi import APIRouter, Request

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models")
def list_models(request: Request) -> dict:
    return {"models": request.app.state.source.describe()}
