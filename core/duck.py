"""The one way to open DuckDB: in UTC, so timestamps never take the machine's zone."""

from __future__ import annotations

import duckdb


def connect(database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(database)
    con.execute("SET TimeZone = 'UTC'")
    return con
