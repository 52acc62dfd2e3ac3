"""Per-user trailing-window aggregates, defined once.

The offline backfill (``batch.aggregates``) turns these definitions into DuckDB
window SQL; the streaming dataflow folds events through ``UserWindowState``.
Both read the same ``WINDOWS`` tuple, and a test holds them equal.

Semantics, for an event at time ``t`` of user ``u``: every aggregate covers
``u``'s events with timestamps in the closed interval ``[t - window, t]``,
including the event itself and any other event at the same instant;
``secs_since_last_txn`` is the gap to ``u``'s newest event strictly before ``t``.
Amounts are summed in integer cents, so the incremental and the batch sums are
bit-for-bit identical.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal

ENTITY_KEY = "user_id"
TIMESTAMP = "event_timestamp"
SECS_SINCE_LAST = "secs_since_last_txn"

Op = Literal["count", "sum", "distinct"]


@dataclass(frozen=True)
class WindowAgg:
    """One trailing-window aggregate over a user's transactions."""

    name: str
    op: Op
    window: timedelta
    column: str | None = None  # summed ("sum") or counted distinct ("distinct")

    @property
    def is_integer(self) -> bool:
        return self.op != "sum"


def _window_set(suffix: str, window: timedelta) -> tuple[WindowAgg, ...]:
    return (
        WindowAgg(f"txn_count_{suffix}", "count", window),
        WindowAgg(f"txn_amount_sum_{suffix}", "sum", window, "amount"),
    )


WINDOWS: tuple[WindowAgg, ...] = (
    *_window_set("10m", timedelta(minutes=10)),
    *_window_set("1h", timedelta(hours=1)),
    *_window_set("24h", timedelta(hours=24)),
    WindowAgg("distinct_merchants_1h", "distinct", timedelta(hours=1), "merchant_id"),
)

FEATURE_NAMES: tuple[str, ...] = (*(w.name for w in WINDOWS), SECS_SINCE_LAST)

_US = 1_000_000


def to_cents(amount: float) -> int:
    return round(amount * 100)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def to_us(ts: datetime) -> int:
    """Exact integer microseconds since the epoch (float seconds would round)."""
    return (ts - _EPOCH) // timedelta(microseconds=1)


@dataclass
class _Span:
    """A user's events within one window length; every aggregate of that length reads it.

    One deque per distinct length rather than per aggregate: the stream folds every event
    through here (``docs/performance.md``, "Streaming flow").
    """

    span_us: int
    track_merchants: bool
    events: deque[tuple[int, int, int]] = field(default_factory=deque)  # ts_us, cents, merchant
    cents: int = 0
    merchants: Counter[int] = field(default_factory=Counter)

    def add(self, ts_us: int, cents: int, merchant_id: int) -> None:
        events = self.events
        events.append((ts_us, cents, merchant_id))
        self.cents += cents
        if self.track_merchants:
            self.merchants[merchant_id] += 1
        start = ts_us - self.span_us
        while events[0][0] < start:
            _, old_cents, old_merchant = events.popleft()
            self.cents -= old_cents
            if self.track_merchants:
                left = self.merchants[old_merchant] - 1
                if left:
                    self.merchants[old_merchant] = left
                else:
                    del self.merchants[old_merchant]

    def value(self, op: Op) -> int | float:
        if op == "count":
            return len(self.events)
        if op == "sum":
            return self.cents / 100
        return len(self.merchants)


_SPANS: tuple[timedelta, ...] = tuple(dict.fromkeys(w.window for w in WINDOWS))
# The sums and distinct counts read these columns (``_Span`` keeps exactly these two).
assert {w.column for w in WINDOWS if w.op == "sum"} <= {"amount"}
assert {w.column for w in WINDOWS if w.op == "distinct"} <= {"merchant_id"}
_OUTPUTS: tuple[tuple[str, int, Op], ...] = tuple(
    (w.name, _SPANS.index(w.window), w.op) for w in WINDOWS
)


def _new_spans() -> list[_Span]:
    return [
        _Span(
            int(span.total_seconds()) * _US,
            any(w.op == "distinct" and w.window == span for w in WINDOWS),
        )
        for span in _SPANS
    ]


@dataclass
class UserWindowState:
    """Running aggregates for one user, fed events in event-time order."""

    spans: list[_Span] = field(default_factory=_new_spans)
    last_ts_us: int | None = None
    before_last_us: int | None = None  # the newest event time strictly before last_ts_us

    def apply(self, ts_us: int, amount: float, merchant_id: int) -> dict[str, int | float | None]:
        """Add one event and return the aggregates as of that event."""
        cents = to_cents(amount)
        spans = self.spans
        for span in spans:
            span.add(ts_us, cents, merchant_id)
        out: dict[str, int | float | None] = {name: spans[i].value(op) for name, i, op in _OUTPUTS}
        # Since the newest strictly earlier event: events at one instant all get the same value.
        if self.last_ts_us is not None and ts_us != self.last_ts_us:
            self.before_last_us = self.last_ts_us
        prior = self.before_last_us
        out[SECS_SINCE_LAST] = None if prior is None else (ts_us - prior) / _US
        self.last_ts_us = ts_us
        return out


def backfill_sql(source: str) -> str:
    """DuckDB SQL computing every aggregate at every event of ``source``.

    ``source`` is a relation with user_id, merchant_id, amount and event_timestamp.
    """
    frames = {w.window: f"w_{int(w.window.total_seconds())}s" for w in WINDOWS}
    exprs = []
    for w in WINDOWS:
        frame = frames[w.window]
        if w.op == "count":
            exprs.append(f"COUNT(*) OVER {frame} AS {w.name}")
        elif w.op == "sum":
            exprs.append(
                f"SUM(CAST(round({w.column} * 100) AS BIGINT)) OVER {frame} / 100.0 AS {w.name}"
            )
        else:
            exprs.append(f"COUNT(DISTINCT {w.column}) OVER {frame} AS {w.name}")
    # The newest strictly earlier event (LAG would give 0 to one of two same-instant events).
    exprs.append(
        f"(epoch_us({TIMESTAMP}) - epoch_us(MAX({TIMESTAMP}) OVER (PARTITION BY {ENTITY_KEY} "
        f"ORDER BY {TIMESTAMP} RANGE BETWEEN UNBOUNDED PRECEDING AND INTERVAL 1 MICROSECOND "
        f"PRECEDING))) / {_US}.0 AS {SECS_SINCE_LAST}"
    )
    window_defs = ",\n  ".join(
        f"{name} AS (PARTITION BY {ENTITY_KEY} ORDER BY {TIMESTAMP} RANGE BETWEEN "
        f"INTERVAL {int(span.total_seconds())} SECONDS PRECEDING AND CURRENT ROW)"
        for span, name in frames.items()
    )
    select = ",\n  ".join(exprs)
    return f"SELECT {ENTITY_KEY}, {TIMESTAMP},\n  {select}\nFROM {source}\nWINDOW\n  {window_defs}"
