"""The records that flow between the dataflow's steps, and the event parser.

Every input becomes either an ``Event`` or a ``DeadLetter`` that keeps the
original bytes and the reason, so nothing malformed is lost or crashes the flow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from core.aggregations import to_us
from core.events import Transaction

Reason = Literal["bad_json", "schema", "late", "unknown_entity"]
REASONS: tuple[Reason, ...] = ("bad_json", "schema", "late", "unknown_entity")
Aggregates = dict[str, int | float | None]


@dataclass(frozen=True)
class Raw:
    """One input message: Kafka key and value, and when it entered the log (ms since epoch)."""

    key: bytes | None
    value: bytes
    ingest_ms: int


@dataclass(frozen=True)
class Event:
    raw: Raw
    txn: Transaction
    ts_us: int


@dataclass(frozen=True)
class DeadLetter:
    raw: Raw
    reason: Reason
    detail: str


@dataclass(frozen=True)
class Enriched:
    """An event with the slow-changing features of its user and merchant (None: not found)."""

    event: Event
    profile: dict[str, Any]


@dataclass(frozen=True)
class Update:
    """An event after the window step.

    ``at_event`` are the aggregates as of this event (what scoring uses); ``latest`` are
    the user's aggregates as of its newest event, which the online store holds, stamped
    ``version_us`` (strictly increasing per user, see ``windows.EventTimeWindows``).
    """

    enriched: Enriched
    at_event: Aggregates
    latest: Aggregates
    version_us: int


def parse(raw: Raw) -> Event | DeadLetter:
    """Validate the JSON against the one schema; a failure names the first problem."""
    try:
        txn = Transaction.model_validate_json(raw.value)
    except ValidationError as exc:
        first = exc.errors()[0]
        reason: Reason = "bad_json" if first["type"] == "json_invalid" else "schema"
        where = ".".join(str(p) for p in first["loc"])
        return DeadLetter(raw, reason, f"{where}: {first['msg']}" if where else first["msg"])
    return Event(raw, txn, to_us(txn.event_timestamp))
