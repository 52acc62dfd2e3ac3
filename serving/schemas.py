"""Typed request and response bodies: the OpenAPI document at /docs comes from these."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from core.events import TransactionRequest


class PredictRequest(TransactionRequest):
    """One transaction to score at authorisation time."""

    transaction_id: str | None = Field(default=None, max_length=64)


class PredictResult(BaseModel):
    transaction_id: str | None = None
    score: float = Field(description="fraud probability in [0, 1]")
    feature_age_seconds: dict[str, float | None] = Field(
        description="per feature view: seconds since its values were computed (null: absent)"
    )
    missing_features: list[str] = Field(description="absent from the online store; defaulted")
    stale_features: list[str] = Field(description="older than the view's maximum age; defaulted")
    features: dict[str, float | None] | None = Field(
        default=None, description="the model's inputs as used, with ?explain=true"
    )


class PredictResponse(PredictResult):
    request_id: str
    model_version: str
    feature_service: str


class PredictBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    records: list[PredictRequest] = Field(min_length=1)


class PredictBatchResponse(BaseModel):
    request_id: str
    model_version: str
    feature_service: str
    results: list[PredictResult] = Field(description="one per record, in request order")


class BatchScoreResponse(BaseModel):
    user_id: int
    score: float
    model_version: str | None
    scored_transaction_id: str | None
    age_seconds: float | None


class ReloadResponse(BaseModel):
    model_version: str
    reloaded: bool


class ErrorResponse(BaseModel):
    detail: str
