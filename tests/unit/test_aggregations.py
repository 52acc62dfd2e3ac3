"""Window aggregates: the incremental state and the DuckDB backfill equal brute force."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from core.aggregations import (
    FEATURE_NAMES,
    SECS_SINCE_LAST,
    WINDOWS,
    UserWindowState,
    backfill_sql,
    to_us,
)
from core.duck import connect


def brute_force(events: pd.DataFrame) -> pd.DataFrame:
    """Each aggregate by scanning the user's whole history for every event."""
    rows = []
    for _, e in events.iterrows():
        mine = events[(events.user_id == e.user_id) & (events.event_timestamp <= e.event_timestamp)]
        row = {"user_id": e.user_id, "event_timestamp": e.event_timestamp}
        for w in WINDOWS:
            inside = mine[mine.event_timestamp >= e.event_timestamp - w.window]
            if w.op == "count":
                row[w.name] = len(inside)
            elif w.op == "sum":
                row[w.name] = sum(round(a * 100) for a in inside[w.column]) / 100
            else:
                row[w.name] = inside[w.column].nunique()
        earlier = mine[mine.event_timestamp < e.event_timestamp]
        row[SECS_SINCE_LAST] = (
            None
            if earlier.empty
            else (e.event_timestamp - earlier.event_timestamp.max())
            / timedelta(microseconds=1)
            / 1e6
        )
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture
def events() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 400
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    # Clustered timestamps so windows fill up, plus exact window-edge cases.
    offsets = np.sort(rng.integers(0, 3 * 86_400 * 1_000_000, n))
    offsets[1] = offsets[0] + 600 * 1_000_000  # exactly 10 minutes later: still inside
    df = pd.DataFrame(
        {
            "user_id": np.where(np.arange(n) < 2, 1, rng.integers(1, 6, n)),
            "merchant_id": rng.integers(1, 8, n),
            "amount": np.round(rng.lognormal(3, 1, n), 2),
            "event_timestamp": [start + timedelta(microseconds=int(o)) for o in offsets],
        }
    )
    return df.drop_duplicates(["user_id", "event_timestamp"]).reset_index(drop=True)


def test_incremental_state_equals_brute_force(events: pd.DataFrame) -> None:
    expected = brute_force(events)
    states: dict[int, UserWindowState] = {}
    got = []
    for user, ts, amount, merchant in zip(
        events["user_id"].tolist(),
        events["event_timestamp"].tolist(),
        events["amount"].tolist(),
        events["merchant_id"].tolist(),
        strict=True,
    ):
        state = states.setdefault(user, UserWindowState())
        got.append(state.apply(to_us(ts), amount, merchant))
    got_df = pd.DataFrame(got)
    for name in FEATURE_NAMES:
        pd.testing.assert_series_equal(got_df[name], expected[name], check_dtype=False, obj=name)


def test_duckdb_backfill_equals_brute_force(events: pd.DataFrame) -> None:
    expected = (
        brute_force(events).sort_values(["user_id", "event_timestamp"]).reset_index(drop=True)
    )
    con = connect()
    con.register("events", events)
    got = (
        con.execute(backfill_sql("events") + " ORDER BY user_id, event_timestamp")
        .df()
        .reset_index(drop=True)
    )
    for name in FEATURE_NAMES:
        pd.testing.assert_series_equal(got[name], expected[name], check_dtype=False, obj=name)


def test_window_edge_is_inclusive(events: pd.DataFrame) -> None:
    (t0, t1), (a0, a1) = events["event_timestamp"][:2].tolist(), events["amount"][:2].tolist()
    state = UserWindowState()
    state.apply(to_us(t0), a0, 1)
    out = state.apply(to_us(t1), a1, 2)
    assert out["txn_count_10m"] == 2
    assert out[SECS_SINCE_LAST] == 600.0
