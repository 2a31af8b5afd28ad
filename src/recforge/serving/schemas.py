"""Request and response bodies of the REST API (pydantic: unknown fields and wrong types are
422 errors that name the field)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

Id = StrictInt | StrictStr
Scalar = StrictStr | StrictInt | StrictFloat | StrictBool | None
MAX_LIST = 1000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendRequest(_Strict):
    user: Id = Field(description="raw user id; unknown users get the fallback")
    k: int = Field(20, ge=1, le=1000, description="items to return")
    history: list[Id] = Field(
        default_factory=list,
        max_length=MAX_LIST,
        description="recent item ids, oldest first, used by history-aware channels",
    )
    context: dict[str, Scalar] = Field(default_factory=dict, description="request features")
    filters: dict[str, list[Scalar] | Scalar] = Field(
        default_factory=dict, description="item field -> allowed value(s)"
    )
    exclude: list[Id] = Field(default_factory=list, max_length=MAX_LIST)
    explain: bool = Field(False, description="return the per-item and per-stage trace")
    model: StrictStr | None = Field(None, description="model name, when several are served")


class ScoreRequest(_Strict):
    user: Id
    items: list[Id] = Field(min_length=1, max_length=MAX_LIST)
    context: dict[str, Scalar] = Field(default_factory=dict)
    model: StrictStr | None = None


class SimilarRequest(_Strict):
    item: Id
    k: int = Field(10, ge=1, le=1000)
    model: StrictStr | None = None


class ScoredItem(BaseModel):
    item: Any
    score: float


class RecommendResponse(BaseModel):
    user: Any
    items: list[ScoredItem]
    version: str
    cold: bool
    trace: dict[str, Any] | None = None


class ScoreResponse(BaseModel):
    user: Any
    items: list[ScoredItem]
    unknown_items: list[Any]
    version: str


class SimilarResponse(BaseModel):
    item: Any
    channel: str
    items: list[ScoredItem]
    version: str
