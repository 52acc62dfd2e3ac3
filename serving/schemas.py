"""Typed request and response bodies: the OpenAPI document at /docs comes from these."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.events import TransactionRequest

# The OpenAPI examples (valid requests: schemathesis sends them first, see verify.fuzz_api).
EXAMPLE_RECORD: dict[str, Any] = {
    "user_id": 42,
    "merchant_id": 7,
    "amount": 250.0,
    "channel": "online",
    "country": "NG",
}
OTHER_RECORD: dict[str, Any] = {
    "user_id": 1,
    "merchant_id": 2,
    "amount": 9.5,
    "channel": "pos",
    "country": "US",
}


class PredictRequest(TransactionRequest):
    """One transaction to score at authorisation time."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [EXAMPLE_RECORD | {"transaction_id": "t-42-0001"}]}
    )

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


class PredictManyRequest(BaseModel):
    """Several transactions scored in one call (the online API's multi-record request)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"records": [EXAMPLE_RECORD, OTHER_RECORD]}]},
    )

    records: list[PredictRequest] = Field(min_length=1)


class PredictManyResponse(BaseModel):
    request_id: str
    model_version: str
    feature_service: str
    results: list[PredictResult] = Field(description="one per record, in request order")


class PublishedScoreResponse(BaseModel):
    """A user's latest score from the nightly job, as it published it."""

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
