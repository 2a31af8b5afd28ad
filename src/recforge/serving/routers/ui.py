"""GET /ui: a live page for the running service (plain HTML and one inline script).

The page itself holds no data, so it needs no key; its script reads what it shows from
the API it sits on, with the key the visitor types (sent as ``x-api-key``, kept in the
tab's sessionStorage): ``GET /v1/models`` (models, versions and their state), ``GET
/metrics`` (request counts and rates, latency per endpoint and per funnel stage, feedback
events: the same Prometheus counters a scraper reads) and ``POST /v1/recommend`` with
``explain`` (the form, its trace shown as tables).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["ui"])


@cache
def page() -> str:
    return (files("recforge.serving") / "static" / "ui.html").read_text(encoding="utf-8")


@router.get("/ui", response_class=HTMLResponse, include_in_schema=False)
def ui() -> HTMLResponse:
    return HTMLResponse(page(), headers={"cache-control": "no-cache"})
