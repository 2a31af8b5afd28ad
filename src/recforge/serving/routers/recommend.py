"""POST /v1/recommend, POST /v1/score, POST /v1/similar: parse, call the core, answer.

The response models document the answers (OpenAPI); the core's dicts are returned as JSON
directly, not validated a second time on the way out.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from recforge.serving.repository import lease
from recforge.serving.routers.feedback import stored_history
from recforge.serving.schemas import (
    RecommendRequest,
    RecommendResponse,
    ScoreRequest,
    ScoreResponse,
    SimilarRequest,
    SimilarResponse,
)

router = APIRouter(prefix="/v1", tags=["recommend"])


@router.post("/recommend", response_model=RecommendResponse)
def recommend(body: RecommendRequest, request: Request) -> JSONResponse:
    """The funnel for one user: recall, filters, rank, re-rank, top-k."""
    t0 = time.perf_counter()
    with lease(request.app.state.source, body.model) as rec:  # in flight: this version
        out = rec.recommend(
            body.user,
            k=body.k,
            history=stored_history(request, body.user, body.history),
            context=body.context,
            filters=body.filters,
            exclude=body.exclude,
            explain=body.explain,
        ).to_dict()
    request.app.state.metrics.observe_recommend(body.model, out, time.perf_counter() - t0)
    return JSONResponse(out)


@router.post("/score", response_model=ScoreResponse)
def score(body: ScoreRequest, request: Request) -> JSONResponse:
    """Ranker scores of the caller's candidates for a user, in the order given."""
    with lease(request.app.state.source, body.model) as rec:
        return JSONResponse(rec.score(body.user, body.items, context=body.context))


@router.post("/similar", response_model=SimilarResponse)
def similar(body: SimilarRequest, request: Request) -> JSONResponse:
    """Items like an item."""
    with lease(request.app.state.source, body.model) as rec:
        return JSONResponse(rec.similar(body.item, k=body.k))
