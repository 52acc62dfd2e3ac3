"""The transaction record: one schema for parquet files, Kafka events and API requests."""

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


class TransactionRequest(BaseModel):
    """What scoring needs from a transaction besides the stored features (the API's body)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
