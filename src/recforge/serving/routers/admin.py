"""Admin API over the version manager (admin key): load, unload, reload, labels, policy,
runtime parameters. The status of every version is ``GET /v1/models``. GET /metrics:
Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from recforge.serving.repository import VersionManager
from recforge.serving.security import require

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require("admin"))])
metrics_router = APIRouter(tags=["health"])


class LabelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: StrictInt | None = Field(
        description="the version the label points at; null removes it"
    )


class PolicyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy: StrictStr = Field(description="'latest', 'latest:N' or 'specific:V1,V2'")


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: StrictInt | None = None


def _manager(request: Request) -> VersionManager:
    source = request.app.state.source
    if not isinstance(source, VersionManager):
        raise HTTPException(409, "this server serves one bundle (--bundle); use --models ROOT.")
    return source


def _status(m: VersionManager, name: str) -> dict:
    for entry in m.describe():
        if entry["name"] == name:
            return entry
    raise HTTPException(404, f"no model named {name!r}.")


@router.post("/models/{name}/versions/{version}/load")
def load(name: str, version: int, request: Request) -> dict:
    """Load a version and keep it loaded besides the policy (until unload)."""
    m = _manager(request)
    m.load(name, version)
    return _status(m, name)


@router.post("/models/{name}/versions/{version}/unload")
def unload(name: str, version: int, request: Request) -> dict:
    """Stop serving a version (refused for the only available one)."""
    m = _manager(request)
    m.unload(name, version)
    return _status(m, name)


@router.post("/models/{name}/reload")
def reload(name: str, request: Request, body: ReloadRequest | None = None) -> dict:
    """Rescan now; failed (and unloaded) versions get another try."""
    m = _manager(request)
    m.reload(name, body.version if body else None)
    return _status(m, name)


@router.put("/models/{name}/labels/{label}")
def set_label(name: str, label: str, body: LabelRequest, request: Request) -> dict:
    """Point stable/canary at a version (loads it first); relabelling stable is a rollback."""
    m = _manager(request)
    m.set_label(name, label, body.version)
    return _status(m, name)


@router.put("/models/{name}/policy")
def set_policy(name: str, body: PolicyRequest, request: Request) -> dict:
    """Change the version policy; 'specific:V' pins a version (a rollback)."""
    m = _manager(request)
    m.set_policy(name, body.policy)
    return _status(m, name)


@router.post("/models/{name}/runtime")
def reload_runtime(name: str, request: Request) -> dict:
    """Re-read the name's runtime parameters (--runtime FILE, ROOT/NAME/runtime.yaml) and
    apply them to the next request; a bad file is refused (400, file and field named) and
    the parameters in force stay."""
    m = _manager(request)
    _status(m, name)  # 404 for a name that does not exist
    m.reload_runtime(name)
    return _status(m, name)


@router.post("/runtime")
def reload_all_runtime(request: Request) -> dict:
    """Re-read the runtime parameters of every name (all or nothing per name)."""
    m = _manager(request)
    m.reload_runtime()
    return {"models": m.describe()}


@metrics_router.get("/metrics", dependencies=[Depends(require("read"))])
def metrics(request: Request) -> Response:
    mx = request.app.state.metrics
    return Response(mx.render(), media_type=mx.content_type)
