"""Typed request and response bodies: the OpenAPI document at /docs comes from these."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from core.events import EXTRA_FORBIDDEN, Decision, TransactionRequest

ExtraFieldsPolicy = Literal["ignore", "reject"]  # SERVING_EXTRA_FIELDS
Loc = tuple[str | int, ...]

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

    # "allow" keeps unknown fields aside (model_extra) to count or refuse them, per policy.
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [EXAMPLE_RECORD | {"transaction_id": "t-42-0001"}]},
    )

    transaction_id: str | None = Field(default=None, max_length=64)

    def known(self) -> dict[str, Any]:
        """The fields the schema knows: what scoring reads."""
        return self.model_dump(exclude=set(self.model_extra or ()))


DECISION_HELP = (
    "approve below the model's review_at, review below its decline_at, decline at or above"
    " (the bands training picked, in the model manifest's decision block)"
)


class ReasonOut(BaseModel):
    """A feature that pushed the score up, by its term of the logit."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"feature": "amount", "contribution": 1.42}]}
    )

    feature: str
    contribution: float = Field(
        description="coefficient times the feature's standardized value; > 0 raises the score"
    )


REASONS_HELP = "up to 3 features with the largest positive contributions, highest first"


EXAMPLE_REASONS: list[JsonValue] = [
    {"feature": "amount_to_avg_30d", "contribution": 2.31},
    {"feature": "is_foreign", "contribution": 0.87},
]


class ShadowResult(BaseModel):
    """The challenger's shadow score on the same feature vector (never acted on)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_version": "fraud-detector/4",
                    "score": 0.31,
                    "decision": "decline",
                    "reasons": EXAMPLE_REASONS,
                }
            ]
        }
    )

    model_version: str
    score: float = Field(description="fraud probability in [0, 1]")
    decision: Decision = Field(description=DECISION_HELP)
    reasons: list[ReasonOut] = Field(description=REASONS_HELP)


class PredictResult(BaseModel):
    transaction_id: str | None = None
    score: float = Field(description="fraud probability in [0, 1]")
    decision: Decision = Field(description=DECISION_HELP)
    reasons: list[ReasonOut] = Field(description=REASONS_HELP)
    feature_age_seconds: dict[str, float | None] = Field(
        description="per feature view: seconds since its values were computed (null: absent)"
    )
    missing_features: list[str] = Field(description="absent from the online store; defaulted")
    stale_features: list[str] = Field(description="older than the view's maximum age; defaulted")
    features: dict[str, float | None] | None = Field(
        default=None, description="the model's inputs as used, with ?explain=true"
    )
    challenger: ShadowResult | None = Field(
        default=None, description="with ?explain=true and a challenger model set: its score"
    )


class PredictResponse(PredictResult):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "transaction_id": "t-42-0001",
                    "score": 0.083,
                    "decision": "review",
                    "reasons": EXAMPLE_REASONS,
                    "feature_age_seconds": {"user_txn_windows": 3.2, "user_profile": 5400.0},
                    "missing_features": [],
                    "stale_features": [],
                    "request_id": "8f2c1e0a9b7d4c3e",
                    "model_version": "fraud-detector/3",
                    "feature_service": "fraud_model_v1",
                }
            ]
        }
    )

    request_id: str
    model_version: str
    feature_service: str


class PredictManyRequest(BaseModel):
    """Several transactions scored in one call (the online API's multi-record request)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [{"records": [EXAMPLE_RECORD, OTHER_RECORD]}]},
    )

    records: list[PredictRequest] = Field(min_length=1)


def unknown_fields(body: PredictRequest | PredictManyRequest) -> list[Loc]:
    """Where the body has fields the schema does not know, as a 422's ``loc``."""
    locs: list[Loc] = [("body", k) for k in body.model_extra or ()]
    if isinstance(body, PredictManyRequest):
        for i, r in enumerate(body.records):
            locs += [("body", "records", i, k) for k in r.model_extra or ()]
    return locs


def check_extra_fields(locs: Sequence[Loc], policy: ExtraFieldsPolicy) -> None:
    """Refuse unknown fields with pydantic's own 422 under "reject"; "ignore" lets them by."""
    if locs and policy == "reject":
        raise RequestValidationError(
            [
                {"type": EXTRA_FORBIDDEN, "loc": loc, "msg": "Extra inputs are not permitted"}
                for loc in locs
            ]
        )


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


def forbid_extra_properties(openapi: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The OpenAPI document under SERVING_EXTRA_FIELDS=reject: the request bodies say
    ``additionalProperties: false``, as the API then answers (FastAPI caches the document,
    so this edits it once, in place)."""
    document = openapi()
    components = document.get("components", {}).get("schemas", {})
    for model in (PredictRequest, PredictManyRequest):
        if model.__name__ in components:
            components[model.__name__]["additionalProperties"] = False
    return document
