"""Pure steps of the streaming dataflow: parsing, event-time windows, batching, features."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone

import duckdb
import numpy as np
import pandas as pd
import pytest

from core.aggregations import FEATURE_NAMES, backfill_sql, to_us
from core.events import Transaction
from core.request_features import compute
from streaming.features import ProfileCache, feature_columns
from streaming.online import latest_per_user
from streaming.records import Aggregates, DeadLetter, Enriched, Event, Raw, Update, parse
from streaming.windows import EventTimeWindows

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
GOOD = {
    "transaction_id": "t1",
    "user_id": 1,
    "merchant_id": 2,
    "amount": 12.5,
    "channel": "pos",
    "country": "NL",
    "event_timestamp": "2026-01-01T00:00:00Z",
}


def raw(body: object) -> Raw:
    value = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Raw(b"1", value, 0)


def test_parse_accepts_the_shared_schema() -> None:
    got = parse(raw(GOOD))
    assert isinstance(got, Event)
    assert got.ts_us == to_us(T0)


@pytest.mark.parametrize(
    ("body", "reason", "detail"),
    [
        (b"{nope", "bad_json", "Invalid JSON"),
        (b"\xff\xfe", "bad_json", "Invalid JSON"),
        (GOOD | {"amount": -3}, "schema", "amount"),
        (GOOD | {"event_timestamp": "2026-01-01T00:00:00"}, "schema", "timezone"),
        (GOOD | {"is_fraud": 1}, "schema", "is_fraud"),
        ({k: v for k, v in GOOD.items() if k != "user_id"}, "schema", "user_id"),
    ],
)
def test_parse_dead_letters_keep_bytes_and_reason(body: object, reason: str, detail: str) -> None:
    got = parse(raw(body))
    assert isinstance(got, DeadLetter)
    assert (got.reason, got.raw.value) == (reason, raw(body).value)
    assert detail in got.detail


def random_events(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.choice(3 * 86_400 * 1_000_000, n, replace=False))
    return pd.DataFrame(
        {
            "user_id": rng.integers(1, 5, n),
            "merchant_id": rng.integers(1, 8, n),
            "amount": np.round(rng.lognormal(3, 1, n), 2),
            "event_timestamp": [T0 + timedelta(microseconds=int(o)) for o in offsets],
        }
    )


def same(a: object, b: object) -> bool:
    """Equal, with None and NaN both meaning "no value"."""
    if a is None or (isinstance(a, float) and np.isnan(a)):
        return b is None or (isinstance(b, float) and np.isnan(b))
    return a == pytest.approx(b)


def backfill(events: pd.DataFrame) -> pd.DataFrame:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("events", events)
    return con.execute(backfill_sql("events")).df()


def test_out_of_order_within_lateness_equals_backfill() -> None:
    """Shuffle arrivals by up to the lateness: per-event and final values equal the backfill."""
    events = random_events(600, seed=5)
    lateness = timedelta(hours=2)
    jitter = np.random.default_rng(9).integers(0, int(lateness / timedelta(microseconds=1)), 600)
    arrival = events.assign(
        arrive=[to_us(t) + int(j) for t, j in zip(events.event_timestamp, jitter, strict=True)]
    )
    arrival = arrival.sort_values("arrive", kind="stable")
    assert not arrival.index.equals(events.index), "the shuffle must reorder something"

    states: dict[int, EventTimeWindows] = {}
    at_event: dict[int, Aggregates] = {}
    latest: dict[int, tuple[int, Aggregates]] = {}
    for idx, row in arrival.iterrows():
        state = states.setdefault(
            row.user_id, EventTimeWindows(int(lateness / timedelta(microseconds=1)))
        )
        applied = state.apply(to_us(row.event_timestamp), row.amount, row.merchant_id)
        assert applied is not None
        assert applied.version_us > latest.get(row.user_id, (0, {}))[0]
        latest[row.user_id] = (applied.version_us, applied.latest)
        at_event[int(str(idx))] = applied.at_event

    expected = backfill(events).sort_values(["user_id", "event_timestamp"])
    last = expected.groupby("user_id").tail(1).set_index("user_id")
    for user, (_, values) in latest.items():
        for name in FEATURE_NAMES:
            assert same(values[name], last.loc[user, name]), (user, name)
    # An event's own aggregates see only events that had arrived: equal to the backfill
    # whenever no earlier event of its windows arrived after it.
    keyed = expected.set_index(["user_id", "event_timestamp"])
    order = {idx: pos for pos, idx in enumerate(arrival.index)}
    checked = 0
    for idx, row in events.iterrows():
        earlier_late = events[
            (events.user_id == row.user_id)
            & (events.event_timestamp <= row.event_timestamp)
            & (events.event_timestamp >= row.event_timestamp - timedelta(hours=24))
            & (events.index.map(order) > order[idx])
        ]
        if not earlier_late.empty:
            continue
        want = keyed.loc[(row.user_id, row.event_timestamp)]
        got = at_event[int(str(idx))]
        for name in FEATURE_NAMES:
            assert same(got[name], want[name]), (idx, name)
        checked += 1
    assert checked > 300


def test_later_than_allowed_lateness_is_rejected_and_changes_nothing() -> None:
    state = EventTimeWindows(lateness_us=60_000_000)
    ts = to_us(T0)
    first = state.apply(ts, 10.0, 1)
    assert first is not None
    assert state.apply(ts - 60_000_000, 5.0, 2) is not None  # exactly at the bound: applied
    before = state.latest
    assert state.apply(ts - 60_000_001, 5.0, 3) is None
    assert state.latest == before


def test_state_history_is_bounded() -> None:
    state = EventTimeWindows(lateness_us=0)
    for hour in range(24 * 10):
        state.apply(to_us(T0 + timedelta(hours=hour)), 1.0, 1)
    assert len(state.history) <= 26


def update(user: int, version: int, count: int, txn: Transaction | None = None) -> Update:
    txn = txn or Transaction.model_validate(GOOD | {"user_id": user})
    event = Event(raw(GOOD), txn, version)
    aggs: dict[str, int | float | None] = {"txn_count_10m": count}
    return Update(Enriched(event, {}), aggs, aggs, version)


def test_latest_per_user_keeps_the_highest_version() -> None:
    rows = latest_per_user([update(1, 5, 1), update(2, 3, 7), update(1, 9, 2), update(1, 7, 3)])
    assert sorted((u, v, a["txn_count_10m"]) for u, v, a in rows) == [(1, 9, 2), (2, 3, 7)]


def test_feature_columns_match_the_request_transform() -> None:
    txn = Transaction.model_validate(GOOD | {"amount": 40.0, "country": "DE", "channel": "online"})
    profile = {
        "account_age_days": 9,
        "avg_amount_30d": 20.0,
        "home_country": "NL",
        "risk_score": 0.3,
    }
    u = update(1, 1, 4, txn)
    u = Update(Enriched(u.enriched.event, profile), u.at_event, u.latest, 1)
    features = [
        "account_age_days",
        "risk_score",
        "txn_count_10m",
        "amount_to_avg_30d",
        "is_foreign",
        "is_online",
        "amount_log",
    ]
    cols = feature_columns([u], features)
    req = compute(
        {
            "amount": [40.0],
            "channel": ["online"],
            "country": ["DE"],
            "avg_amount_30d": [20.0],
            "home_country": ["NL"],
        }
    )
    assert list(cols) == features
    assert cols["amount_to_avg_30d"] == req["amount_to_avg_30d"] == [2.0]
    assert (cols["is_foreign"], cols["is_online"], cols["txn_count_10m"]) == ([1], [1], [4])


def test_profile_cache_refetches_only_after_max_age() -> None:
    calls: list[tuple[str, list[int]]] = []
    now = [0.0]

    def fetch(refs: list[str], key: str, ids: list[int]) -> list[dict[str, object]]:
        calls.append((key, sorted(ids)))
        return [{"v": None if i == 99 else i} for i in ids]

    cache = ProfileCache({"user_id": ["p:v"]}, fetch, max_age_s=10, clock=lambda: now[0])
    events = [parse(raw(GOOD | {"user_id": u})) for u in (1, 2, 1, 99)]
    assert all(isinstance(e, Event) for e in events)
    got = cache.lookup(events)  # type: ignore[arg-type]
    assert [g[0]["v"] for g in got] == [1, 2, 1, None]
    assert [g[1] for g in got] == [[], [], [], ["user_id"]]
    now[0] = 5
    cache.lookup(events[:1])  # type: ignore[arg-type]
    now[0] = 11
    cache.lookup(events[:1])  # type: ignore[arg-type]
    assert calls == [("user_id", [1, 2, 99]), ("user_id", [1])]


def test_snapshot_copy_resumes_exactly() -> None:
    """A Bytewax snapshot (deepcopy), restored, continues exactly as the original."""
    events = random_events(200, seed=11)
    lateness = 3_600_000_000
    original = EventTimeWindows(lateness)
    rows = list(zip(events.event_timestamp, events.amount, events.merchant_id, strict=True))
    for ts, amount, merchant in rows[:120]:
        original.apply(to_us(ts), amount, merchant)
    restored = copy.deepcopy(original)
    assert restored.state is None  # rebuilt lazily from the history
    late = (to_us(rows[119][0]) - 1_000_000, 3.0, 4)
    for ts_us, amount, merchant in [late, *((to_us(t), a, m) for t, a, m in rows[120:])]:
        assert restored.apply(ts_us, amount, merchant) == original.apply(ts_us, amount, merchant)
