"""The transaction record: one schema for parquet files, Kafka events and API requests."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

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


class TransactionRequest(BaseModel):
    """What scoring needs from a transaction besides the stored features (the API's body)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Strict: pydantic's lax mode reads ``true`` and ``"5"`` as numbers (fuzzing found
    # ``{"user_id": true}`` scored as user 1); the document says JSON number, in every mode.
    user_id: int = Field(ge=0, lt=2**63, strict=True)
    merchant_id: int = Field(ge=0, lt=2**63, strict=True)
    amount: float = Field(gt=0, le=MAX_AMOUNT, allow_inf_nan=False, strict=True)
    channel: Channel
    country: str = Field(pattern=r"^[A-Z]{2}$")


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
