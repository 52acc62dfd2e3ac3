"""The transaction record: one schema for parquet files, Kafka events and API requests.

The contract can grow: a field this version does not know is ignored (and counted by the
stream and the API), so a producer may add one before every consumer knows it. The strict
twins refuse such fields; they are the stream's first, fast check and its strict policy
(``STREAM_EXTRA_FIELDS=dead_letter``). ``schemas/`` holds the JSON Schemas made from these.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

Channel = Literal["pos", "online", "atm"]
CHANNELS: tuple[str, ...] = ("pos", "online", "atm")
MAX_AMOUNT = 1_000_000.0

TRANSACTION_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("user_id", pa.int64()),
        ("merchant_id", pa.int64()),
        ("amount", pa.float64()),
        ("channel", pa.string()),
        ("country", pa.string()),
        ("event_timestamp", pa.timestamp("us", tz="UTC")),
    ]
)
LABEL = "is_fraud"
LABELED_TRANSACTION_SCHEMA = TRANSACTION_SCHEMA.append(pa.field(LABEL, pa.int8()))


ExtraFieldsPolicy = Literal["ignore", "dead_letter"]  # STREAM_EXTRA_FIELDS
EXTRA_FORBIDDEN = "extra_forbidden"  # pydantic's error type for an unknown field


class TransactionRequest(BaseModel):
    """What scoring needs from a transaction besides the stored features (the API's body)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    user_id: int = Field(ge=0, lt=2**63)
    merchant_id: int = Field(ge=0, lt=2**63)
    amount: float = Field(gt=0, le=MAX_AMOUNT, allow_inf_nan=False)
    channel: Channel
    country: str = Field(pattern=r"^[A-Z]{2}$")

    @field_validator("user_id", "merchant_id", "amount", mode="before")
    @classmethod
    def _a_json_number(cls, value: Any) -> Any:
        """pydantic's lax mode reads ``true`` and ``"5"`` as numbers; the schema says number.

        Fuzzing found ``{"user_id": true}`` scored as user 1. Not ``strict``: that also
        refuses ``5.0``, which JSON Schema counts as an integer (schemathesis sends such ids).
        """
        if isinstance(value, bool | str):
            raise ValueError(f"must be a JSON number, not {type(value).__name__}")
        return value


class Transaction(TransactionRequest):
    """A card transaction event as it arrives at scoring time (never carries a label)."""

    transaction_id: str = Field(min_length=1, max_length=64)
    event_timestamp: datetime

    @field_validator("event_timestamp")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("event_timestamp must carry a timezone (use Z for UTC)")
        return value


class StrictTransaction(Transaction):
    """``Transaction`` refusing unknown fields: each one is an ``extra_forbidden`` error."""

    model_config = ConfigDict(extra="forbid")


Decision = Literal["approve", "review", "decline"]  # in band order (core.predictor.Bands)


class ScoreReason(BaseModel):
    """A feature that pushed the score up: its term of the model's logit."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    feature: str
    contribution: float = Field(gt=0, description="coefficient times standardized value")


class ScoreRecord(BaseModel):
    """A message on the scores topic (``streaming.runtime.score_json`` writes it), keyed by
    ``transaction_id``; delivered at least once, so consumers de-duplicate by that key."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    transaction_id: str = Field(min_length=1, max_length=64)
    user_id: int = Field(ge=0, lt=2**63)
    score: float = Field(ge=0, le=1, description="fraud probability")
    model_version: str = Field(description="the model artifact's version")
    event_timestamp: datetime = Field(description="the transaction's event time")
    latency_ms: float = Field(
        ge=0, description="from the event entering Kafka (or being read, in replay) to its score"
    )
    decision: Decision = Field(
        description="approve below the manifest's review_at, review below decline_at, else decline"
    )
    reasons: list[ScoreReason] = Field(
        max_length=3,
        description="the features with the largest positive contributions, highest first",
    )
    challenger_version: str | None = Field(
        default=None, description="the shadow-scored challenger's version, when one is set"
    )
    challenger_score: float | None = Field(
        default=None, ge=0, le=1, description="the challenger's fraud probability (not acted on)"
    )
    challenger_decision: Decision | None = Field(
        default=None, description="the decision the challenger would have given"
    )
