"""The entity rows of one day: transactions from the offline source or an entity file."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import duckdb

from batch import validate
from batch.pit import literal, quote
from core import storage
from core.cli import UserError
from core.contract import ENTITY_KEYS, REQUEST_FIELDS

ID = "transaction_id"
TS = "event_timestamp"
COLUMNS: tuple[str, ...] = (ID, *ENTITY_KEYS, *REQUEST_FIELDS, TS)
VIEW = "entities"


@dataclass(frozen=True)
class DaySelection:
    rows: int
    first: datetime | None
    last: datetime | None


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[00:00, next 00:00) UTC."""
    start = datetime.combine(day, time(), tzinfo=timezone.utc)
    return start, start + timedelta(days=1)


def define_entities(
    con: duckdb.DuckDBPyConnection, source: str | Path, day: date, limit: int | None
) -> DaySelection:
    """Create the ``entities`` view (the day's rows) in ``con``'s database and describe it.

    ``source`` is a local path or an ``s3://`` URI (read through ``core.storage``)."""
    source = str(source)
    storage.attach(con, source)
    if not storage.exists(source):
        raise FileNotFoundError(2, "no such file", source)
    reader = "read_csv_auto" if source.endswith(".csv") else "read_parquet"
    relation = f"{reader}({literal(source)})"
    try:
        types = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}
    except duckdb.Error as exc:
        raise UserError(f"cannot read entities from {source}: {str(exc).splitlines()[0]}") from exc
    validate.column_types(source, types, validate.ENTITY_TYPES)
    ts = quote(TS)
    if types[TS] != "TIMESTAMP WITH TIME ZONE":  # naive timestamps are UTC, as Feast reads them
        ts = f"CAST({ts} AS TIMESTAMPTZ)"
    start, end = day_bounds(day)
    select = ", ".join(quote(c) for c in COLUMNS[:-1])
    sql = (
        f"SELECT {select}, {ts} AS {TS} FROM {relation}"
        f" WHERE {ts} >= {literal(start)} AND {ts} < {literal(end)}"
    )
    if limit is not None:
        sql += f" ORDER BY {TS}, {quote(ID)} LIMIT {int(limit)}"
    con.execute(f"CREATE OR REPLACE VIEW {VIEW} AS {sql}")
    return DaySelection(*validate.entity_rows(con, VIEW, source, f"the rows of {day} (UTC)"))
