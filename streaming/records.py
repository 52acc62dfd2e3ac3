"""The records that flow between the dataflow's steps, and the event parser.

Every input becomes either an ``Event`` or a ``DeadLetter`` that keeps the
original bytes and the reason, so nothing malformed is lost or crashes the flow.
The dataflow moves them in chunks (one stream item per shard per micro-batch, see
``streaming.dataflow``), so these classes use slots and skip ``frozen`` (whose
``__init__`` costs more): millions are built per minute; no step mutates them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from core.aggregations import to_us
from core.events import EXTRA_FORBIDDEN, ExtraFieldsPolicy, StrictTransaction, Transaction

Reason = Literal["bad_json", "schema", "future", "late", "unknown_entity"]
REASONS: tuple[Reason, ...] = ("bad_json", "schema", "future", "late", "unknown_entity")
# How far an event time may run ahead of the broker's clock. One accepted far-future event
# would make every later event of its user "late" (lateness is judged per user).
MAX_FUTURE_US = 300 * 1_000_000
Aggregates = dict[str, int | float | None]
WindowRow = tuple[int, int, Aggregates]  # user_id, version_us, aggregates: one online-store row


@dataclass(slots=True)
class Raw:
    """One input message: Kafka key and value, and when it entered the log (ms since epoch);
    ``source`` is where it sits in Kafka (topic, partition, offset), None when replayed."""

    key: bytes | None
    value: bytes
    ingest_ms: float
    source: tuple[str, int, int] | None = None


def source_headers(raw: Raw) -> list[tuple[str, bytes]]:
    """Where a dead letter came from, so the original can be read again from its topic."""
    if raw.source is None:
        return []
    topic, partition, offset = raw.source
    return [
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
        ("source_timestamp", str(int(raw.ingest_ms)).encode()),  # ms since epoch, the log's
    ]


@dataclass(slots=True)
class Event:
    raw: Raw
    txn: Transaction
    ts_us: int
    extra_fields: int = 0  # unknown fields ignored (the contract lets producers add fields)

    def __reduce__(self) -> tuple[Any, tuple[Raw]]:
        """Pickled as its raw bytes and parsed again on arrival: Bytewax pickles every item
        it routes to another worker, and a pydantic model pickles slower than it parses."""
        return _reparse, (self.raw,)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    raw: Raw
    reason: Reason
    detail: str


@dataclass(slots=True)
class Enriched:
    """An event with the slow-changing features of its user and merchant (None: not found):
    one cached row per join key, shared by every event of that entity."""

    event: Event
    profile: tuple[dict[str, Any], ...]


@dataclass(slots=True)
class Chunk:
    """What one micro-batch holds for one shard of users, plus dead letters passing through."""

    events: list[Enriched] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


@dataclass(slots=True)
class Stepped:
    """A chunk after the window step.

    ``at_event[i]`` are the aggregates of ``events[i]`` as of itself (what scoring uses).
    ``rows`` hold each touched user's aggregates as of its newest event, once per user,
    stamped ``version_us`` (strictly increasing per user, see ``windows.EventTimeWindows``):
    what the online store keeps.
    """

    events: list[Enriched]
    at_event: list[Aggregates]
    rows: list[WindowRow]
    dead: list[DeadLetter]


def _reparse(raw: Raw) -> Event:
    event = parse(raw)  # "ignore" accepts whatever any policy accepted
    assert isinstance(event, Event), "it parsed once"
    return event


def parse(raw: Raw, extra_fields: ExtraFieldsPolicy = "ignore") -> Event | DeadLetter:
    """Validate the JSON against the one schema; a failure names the first problem.

    The strict model goes first: valid events without unknown fields (nearly all) parse
    once, and its ``extra_forbidden`` errors count the unknown fields. Under "ignore" an
    event whose only errors are those parses again with the lenient model.
    """
    extra = 0
    try:
        txn: Transaction = StrictTransaction.model_validate_json(raw.value)
    except ValidationError as exc:
        errors = exc.errors()
        problems = [e for e in errors if e["type"] != EXTRA_FORBIDDEN]
        if problems or extra_fields != "ignore":
            first = (problems or errors)[0] if extra_fields == "ignore" else errors[0]
            reason: Reason = "bad_json" if first["type"] == "json_invalid" else "schema"
            where = ".".join(str(p) for p in first["loc"])
            return DeadLetter(raw, reason, f"{where}: {first['msg']}" if where else first["msg"])
        extra = len(errors)
        txn = Transaction.model_validate_json(raw.value)
    ts_us = to_us(txn.event_timestamp)
    if ts_us > raw.ingest_ms * 1000 + MAX_FUTURE_US:
        ahead = (ts_us - raw.ingest_ms * 1000) / 1e6
        return DeadLetter(raw, "future", f"event time is {ahead:.0f} s after it entered the log")
    return Event(raw, txn, ts_us, extra)
