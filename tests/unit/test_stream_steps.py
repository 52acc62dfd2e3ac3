"""Pure steps of the streaming dataflow: parsing, event-time windows, batching, features."""

from __future__ import annotations

import json
import pickle
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from bytewax.connectors.kafka import KafkaSourceMessage

from core.aggregations import FEATURE_NAMES, SECS_SINCE_LAST, backfill_sql, to_us
from core.duck import connect
from core.events import Transaction
from core.request_features import compute
from harness.kafka import SAMPLE_EVENT
from streaming.features import ProfileCache, feature_columns
from streaming.online import latest_per_user
from streaming.records import (
    Aggregates,
    Chunk,
    DeadLetter,
    Enriched,
    Event,
    Raw,
    WindowRow,
    parse,
)
from streaming.sources import from_kafka
from streaming.windows import EventTimeWindows, ShardLogic, ShardWindows

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
GOOD = SAMPLE_EVENT


# The broker's clock when the test events entered the log: after all of them.
INGEST_MS = to_us(T0 + timedelta(days=30)) // 1000


def raw(body: object, ingest_ms: int = INGEST_MS) -> Raw:
    value = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Raw(b"1", value, ingest_ms)


def test_parse_accepts_the_shared_schema() -> None:
    got = parse(raw(GOOD))
    assert isinstance(got, Event)
    assert got.ts_us == to_us(T0)
    whole = parse(raw(GOOD | {"user_id": 1.0}))  # an integer to JSON Schema, as to the API
    assert isinstance(whole, Event) and whole.txn == got.txn


@pytest.mark.parametrize(
    ("body", "reason", "detail"),
    [
        (b"{nope", "bad_json", "Invalid JSON"),
        (b"\xff\xfe", "bad_json", "Invalid JSON"),
        (b"", "bad_json", "Invalid JSON"),  # a tombstone (null value) from Kafka
        (GOOD | {"amount": -3}, "schema", "amount"),
        (GOOD | {"event_timestamp": "2026-01-01T00:00:00"}, "schema", "timezone"),
        ({k: v for k, v in GOOD.items() if k != "user_id"}, "schema", "user_id"),
        (GOOD | {"user_id": "1"}, "schema", "must be a JSON number, not str"),
        (GOOD | {"merchant_id": True}, "schema", "must be a JSON number, not bool"),
        (GOOD | {"amount": "12.5"}, "schema", "must be a JSON number, not str"),
    ],
)
def test_parse_dead_letters_keep_bytes_and_reason(body: object, reason: str, detail: str) -> None:
    got = parse(raw(body))
    assert isinstance(got, DeadLetter)
    assert (got.reason, got.raw.value) == (reason, raw(body).value)
    assert detail in got.detail


@pytest.mark.parametrize("when", ["2026-01-01T00:05:01Z", "9999-12-31T23:59:59Z"])
def test_an_event_from_the_future_is_dead_lettered(when: str) -> None:
    """One accepted far-future event would make every later event of its user late."""
    got = parse(raw(GOOD | {"event_timestamp": when}, ingest_ms=to_us(T0) // 1000))
    assert isinstance(got, DeadLetter)
    assert (got.reason, got.detail[-24:]) == ("future", "after it entered the log")


def test_a_null_kafka_value_is_dead_lettered_not_dropped() -> None:
    got = from_kafka(KafkaSourceMessage(b"1", None, timestamp=(1, INGEST_MS)))
    assert got is not None
    assert isinstance(parse(got), DeadLetter)


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
    con = connect()
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


def test_latest_per_user_keeps_the_highest_version() -> None:
    rows: list[WindowRow] = [(1, 5, {"n": 1}), (2, 3, {"n": 7}), (1, 9, {"n": 2}), (1, 7, {"n": 3})]
    got = latest_per_user(rows)
    assert sorted((u, v, a["n"]) for u, v, a in got) == [(1, 9, 2), (2, 3, 7)]


def test_feature_columns_match_the_request_transform() -> None:
    txn = Transaction.model_validate(GOOD | {"amount": 40.0, "country": "DE", "channel": "online"})
    user = {"account_age_days": 9, "avg_amount_30d": 20.0, "home_country": "NL"}
    merchant = {"risk_score": 0.3}
    event = Enriched(Event(raw(GOOD), txn, to_us(T0)), (user, merchant))
    features = [
        "account_age_days",
        "risk_score",
        "txn_count_10m",
        "amount_to_avg_30d",
        "is_foreign",
        "is_online",
        "amount_log",
    ]
    cols = feature_columns([event, event], [{"txn_count_10m": 4}, {"txn_count_10m": 5}])
    req = compute(
        {
            "amount": [40.0],
            "channel": ["online"],
            "country": ["DE"],
            "avg_amount_30d": [20.0],
            "home_country": ["NL"],
        }
    )
    assert set(features) <= set(cols)
    assert cols["amount_to_avg_30d"] == req["amount_to_avg_30d"] * 2 == [2.0, 2.0]
    assert (cols["is_foreign"], cols["is_online"], cols["txn_count_10m"]) == (
        [1, 1],
        [1, 1],
        [4, 5],
    )
    assert cols["risk_score"] == [0.3, 0.3]


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
    assert [g[0][0]["v"] for g in got] == [1, 2, 1, None]
    assert [g[1] for g in got] == [[], [], [], ["user_id"]]
    now[0] = 5
    cache.lookup(events[:1])  # type: ignore[arg-type]
    now[0] = 11
    cache.lookup(events[:1])  # type: ignore[arg-type]
    assert calls == [("user_id", [1, 2, 99]), ("user_id", [1])]


def test_snapshot_copy_resumes_exactly() -> None:
    """A snapshot (pickled, as ``ShardLogic.snapshot`` does), restored, continues exactly."""
    events = random_events(200, seed=11)
    lateness = 3_600_000_000
    original = EventTimeWindows(lateness)
    rows = list(zip(events.event_timestamp, events.amount, events.merchant_id, strict=True))
    for ts, amount, merchant in rows[:120]:
        original.apply(to_us(ts), amount, merchant)
    restored = pickle.loads(pickle.dumps(original))
    assert restored.state is None  # rebuilt lazily from the history
    late = (to_us(rows[119][0]) - 1_000_000, 3.0, 4)
    for ts_us, amount, merchant in [late, *((to_us(t), a, m) for t, a, m in rows[120:])]:
        assert restored.apply(ts_us, amount, merchant) == original.apply(ts_us, amount, merchant)


def enriched(events: pd.DataFrame) -> list[Enriched]:
    out = []
    for i, row in enumerate(events.to_dict("records")):
        body = GOOD | {
            "transaction_id": f"t{i}",
            "user_id": int(row["user_id"]),
            "merchant_id": int(row["merchant_id"]),
            "amount": float(row["amount"]),
            "event_timestamp": row["event_timestamp"].isoformat(),
        }
        event = parse(raw(body))
        assert isinstance(event, Event)
        out.append(Enriched(event, ()))
    return out


def test_same_instant_ties_equal_the_backfill() -> None:
    """Events of one user at one instant count each other, as the backfill's RANGE does;
    ``secs_since_last_txn`` is the gap to the newest strictly earlier event."""
    t = T0 + timedelta(hours=1)
    events = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 1, 1, 1],
            "merchant_id": [1, 2, 3, 1, 4, 4, 5],
            "amount": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
            "event_timestamp": [
                T0,
                t,
                t,  # a tie inside one micro-batch
                t,
                t + timedelta(seconds=30),
                t + timedelta(seconds=30),  # a tie split across micro-batches
                t + timedelta(seconds=40),
            ],
        }
    )
    every = backfill(events)
    keys = ["user_id", "event_timestamp"]
    # Peers are identical rows in the backfill, whatever order DuckDB gives them.
    assert len(every.drop_duplicates()) == len(every.drop_duplicates(keys)) == 5
    want = events[keys].merge(every.drop_duplicates(keys), on=keys, how="left")
    items = enriched(events)
    shard = ShardWindows(lateness_us=60_000_000)
    first = shard.step([Chunk(items[:5])])
    second = shard.step([Chunk(items[5:6])])
    third = shard.step([Chunk(items[6:])])
    assert not first.dead and not second.dead and not third.dead
    got = first.at_event + second.at_event + third.at_event
    for i in (0, 1, 2, 3, 5, 6):  # all but the first half of the split tie
        for name in FEATURE_NAMES:
            assert same(got[i][name], want.loc[i, name]), (i, name)
    assert got[4]["txn_count_10m"] == int(str(want.loc[4, "txn_count_10m"])) - 1  # before its peer
    assert got[4][SECS_SINCE_LAST] == want.loc[4, SECS_SINCE_LAST]
    # What the online store gets: each user's newest row equals the backfill's.
    rows = {u: (v, aggs) for s in (first, second, third) for u, v, aggs in s.rows}
    latest = want.groupby("user_id").tail(1).set_index("user_id")  # events are in time order
    for user, (_, aggs) in rows.items():
        for name in FEATURE_NAMES:
            assert same(aggs[name], latest.loc[user, name]), (user, name)


def test_shard_step_dead_letters_late_and_resumes_from_its_snapshot() -> None:
    events = random_events(300, seed=21)
    items = enriched(events)
    a = ShardLogic(lateness_us=60_000_000, resume=None)
    (first,), _ = a.on_batch([Chunk(items[:200])])
    assert len(first.events) == len(first.at_event) == 200 and not first.dead
    assert len(first.rows) == events[:200].user_id.nunique()  # one row per touched user
    b = ShardLogic(lateness_us=60_000_000, resume=a.snapshot())
    newest = items[199].event
    txn = newest.txn.model_copy(update={"transaction_id": "late"})
    late = Enriched(Event(raw(GOOD), txn, newest.ts_us - 3_600_000_000), ())
    batch = [Chunk([late, *items[200:]], [DeadLetter(raw(b"{"), "bad_json", "x")])]
    (from_a,), _ = a.on_batch(batch)
    (from_b,), _ = b.on_batch(batch)
    assert [d.reason for d in from_a.dead] == ["bad_json", "late"]
    assert from_a.at_event == from_b.at_event
    assert from_a.rows == from_b.rows


def test_a_redelivery_counts_once_and_scores_the_same() -> None:
    """A producer retry or replay of a transaction still in the user's history changes no
    window and gets its original's aggregates; the online row is not rewritten."""
    items = enriched(random_events(40, seed=4))
    shard = ShardWindows(lateness_us=60_000_000)
    first = shard.step([Chunk(items)])
    before = {u: dict(w.latest or {}) for u, w in shard.users.items()}
    again = shard.step([Chunk([items[-1], items[-2]])])
    assert again.at_event == [first.at_event[-1], first.at_event[-2]]
    assert not again.rows and not again.dead
    assert {u: w.latest for u, w in shard.users.items()} == before
    restored = ShardWindows(60_000_000, pickle.loads(pickle.dumps(shard.users)))
    assert restored.step([Chunk([items[-1]])]).at_event == [first.at_event[-1]]
