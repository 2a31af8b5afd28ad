"""POST /v1/feedback: append events; the answer comes only after they are durable."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from recforge.serving.feedback import EVENT_TYPES, Event, OverloadedError, with_stored_history
from recforge.serving.security import require

router = APIRouter(prefix="/v1", tags=["feedback"])

Id = StrictInt | StrictStr


class FeedbackEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: Id
    item: Id
    type: StrictStr = Field(description="one of " + ", ".join(EVENT_TYPES))
    value: StrictFloat | StrictInt = Field(1.0, description="e.g. the rating; 1 for a click")
    timestamp: StrictFloat | StrictInt | None = Field(
        None, ge=0, description="seconds since the epoch; the server's clock when absent"
    )
    key: StrictStr | None = Field(
        None, max_length=128, description="idempotency key: a retried event is stored once"
    )


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[FeedbackEvent] = Field(min_length=1, max_length=1000)


class FeedbackResponse(BaseModel):
    stored: int
    duplicates: int


def stored_history(request: Request, user: object, given: list) -> list:
    """The user's stored feedback history (oldest first) followed by the request's own
    ``history``: accepted events take effect on the next request."""
    state = request.app.state
    return with_stored_history(
        getattr(state, "feedback", None), user, given, getattr(state, "feedback_history", 50)
    )


@router.post(
    "/feedback", response_model=FeedbackResponse, dependencies=[Depends(require("feedback"))]
)
def feedback(body: FeedbackRequest, request: Request) -> dict:
    """Append events; acknowledged after COMMIT (duplicates by ``key`` are stored once)."""
    store = getattr(request.app.state, "feedback", None)
    if store is None:
        raise HTTPException(404, "no feedback store is configured (recforge serve --feedback URL).")
    events = [
        Event(str(e.user), str(e.item), e.type, float(e.value), e.timestamp, e.key)
        for e in body.events
    ]
    try:
        result = store.append(events)
    except OverloadedError as e:
        raise HTTPException(503, str(e), headers={"Retry-After": "1"}) from None
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.feedback_events.labels("stored").inc(result.stored)
        metrics.feedback_events.labels("duplicate").inc(result.duplicates)
    return {"stored": result.stored, "duplicates": result.duplicates}
