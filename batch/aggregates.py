"""Backfill the streaming window aggregates over the transaction history.

Its output is the batch source behind the window feature view's PushSource, so
training sees exactly what the stream will serve (same ``core.aggregations``).
"""

from __future__ import annotations

from pathlib import Path

from core.aggregations import backfill_sql
from core.duck import connect


def backfill_windows(transactions: Path, out: Path) -> int:
    """Compute every window aggregate at every transaction; returns the row count."""
    if not transactions.exists():
        raise FileNotFoundError(2, "no such file", str(transactions))
    con = connect()
    source = f"read_parquet('{transactions}')"
    tmp = out.with_suffix(".tmp")
    con.execute(
        f"COPY ({backfill_sql(source)} ORDER BY event_timestamp) TO '{tmp}' (FORMAT parquet)"
    )
    tmp.replace(out)
    row = con.execute(f"SELECT COUNT(*) FROM read_parquet('{out}')").fetchone()
    return int(row[0]) if row else 0
