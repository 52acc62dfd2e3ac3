"""Per-user trailing-window aggregates, defined once.

The offline backfill (``batch.aggregates``) turns these definitions into DuckDB
window SQL; the streaming dataflow folds events through ``UserWindowState``.
Both read the same ``WINDOWS`` tuple, and a test holds them equal.

Semantics, for an event at time ``t`` of user ``u``: every aggregate covers
``u``'s events with timestamps in the closed interval ``[t - window, t]``,
including the event itself. Amounts are summed in integer cents, so the
incremental and the batch sums are bit-for-bit identical.
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
class _Window:
    spec: WindowAgg
    events: deque[tuple[int, int]] = field(default_factory=deque)  # (ts_us, value)
    total: int = 0
    distinct: Counter[int] = field(default_factory=Counter)

    def add(self, ts_us: int, value: int) -> None:
        self.events.append((ts_us, value))
        self.total += value
        if self.spec.op == "distinct":
            self.distinct[value] += 1

    def evict_before(self, start_us: int) -> None:
        while self.events and self.events[0][0] < start_us:
            _, value = self.events.popleft()
            self.total -= value
            if self.spec.op == "distinct":
                self.distinct[value] -= 1
                if not self.distinct[value]:
                    del self.distinct[value]

    def value(self) -> int | float:
        if self.spec.op == "count":
            return len(self.events)
        if self.spec.op == "sum":
            return self.total / 100
        return len(self.distinct)


@dataclass
class UserWindowState:
    """Running aggregates for one user, fed events in event-time order."""

    windows: list[_Window] = field(default_factory=lambda: [_Window(w) for w in WINDOWS])
    last_ts_us: int | None = None

    def apply(self, ts_us: int, amount: float, merchant_id: int) -> dict[str, int | float | None]:
        """Add one event and return the aggregates as of that event."""
        values = {"amount": to_cents(amount), "merchant_id": merchant_id}
        out: dict[str, int | float | None] = {}
        for window in self.windows:
            spec = window.spec
            window.add(ts_us, values[spec.column] if spec.column else 1)
            window.evict_before(ts_us - int(spec.window.total_seconds()) * _US)
            out[spec.name] = window.value()
        out[SECS_SINCE_LAST] = None if self.last_ts_us is None else (ts_us - self.last_ts_us) / _US
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
    exprs.append(
        f"(epoch_us({TIMESTAMP}) - epoch_us(LAG({TIMESTAMP}) OVER "
        f"(PARTITION BY {ENTITY_KEY} ORDER BY {TIMESTAMP}))) / {_US}.0 AS {SECS_SINCE_LAST}"
    )
    window_defs = ",\n  ".join(
        f"{name} AS (PARTITION BY {ENTITY_KEY} ORDER BY {TIMESTAMP} RANGE BETWEEN "
        f"INTERVAL {int(span.total_seconds())} SECONDS PRECEDING AND CURRENT ROW)"
        for span, name in frames.items()
    )
    select = ",\n  ".join(exprs)
    return f"SELECT {ENTITY_KEY}, {TIMESTAMP},\n  {select}\nFROM {source}\nWINDOW\n  {window_defs}"
