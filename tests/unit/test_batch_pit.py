"""The ASOF point-in-time SQL against a brute-force scan, on in-memory tables.

(The integration test holds the same SQL equal to Feast's own retrieval.)
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from batch.__main__ import parse_date, positive_int
from batch.backfill import dates
from batch.pit import Partition, pit_sql
from batch.plan import RetrievalPlan, ViewSpec
from core.duck import connect

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
H = timedelta(hours=1)


def plan_for(path: str, created: str | None) -> RetrievalPlan:
    view = ViewSpec("v", path, ("user_id",), "ts", created, 2 * H, ("f",), (("f", "f"),))
    return RetrievalPlan((view,), ())


def test_latest_fresh_row_wins_with_created_tie_break(tmp_path: pytest.TempPathFactory) -> None:
    path = f"{tmp_path}/v.parquet"
    rows = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2],
            "ts": [T0, T0 + H, T0 + H, T0],
            "created": [T0, T0 + H, T0 + 3 * H, T0],
            "f": [1, 2, 3, 4],
        }
    )
    rows.to_parquet(path)
    entities = pd.DataFrame(  # noqa: F841 (read by DuckDB by name)
        {
            "n": range(6),
            "user_id": [1, 1, 1, 1, 2, 3],
            "event_timestamp": [
                T0 - H,
                T0,
                T0 + H,
                T0 + 3 * H + timedelta(microseconds=1),
                T0 + 2 * H,
                T0,
            ],
        }
    )
    sql = pit_sql(
        plan_for(path, "created"),
        "entities",
        T0 - H,
        T0 + 4 * H,
        order_by=("n",),
    )
    got = connect().execute(sql).fetchall()
    # before any row; exact match; latest-created duplicate; past the TTL; boundary; no rows.
    assert [row[-1] for row in got] == [None, 1, 3, None, 4, None]


def test_partition_filter() -> None:
    assert Partition("user_id", 1, 0).where() == "TRUE"
    assert Partition("user_id", 4, 2).where() == 'hash("user_id") % 4 = 2'


def test_cli_value_parsers() -> None:
    assert str(parse_date("2024-02-29")) == "2024-02-29"
    for bad in ("2024-02-30", "yesterday", "2024-2-3x"):
        with pytest.raises(Exception, match="invalid date"):
            parse_date(bad)
    assert positive_int("3") == 3
    with pytest.raises(Exception, match="positive"):
        positive_int("0")
    start = parse_date("2024-02-28")
    assert [str(d) for d in dates(start, parse_date("2024-03-01"))] == [
        "2024-02-28",
        "2024-02-29",
        "2024-03-01",
    ]
