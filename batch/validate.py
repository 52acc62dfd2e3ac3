"""Input checks that run before the job writes anything.

A file with a missing column, a wrong type or a repeated key must stop the job with
one line naming the file and the problem, and leave yesterday's partition exactly as
it was. Left unchecked, DuckDB and the predictor fail deep inside a chunk (a
traceback), or worse, score garbage: a repeated transaction_id is scored twice, a
text user_id joins no features, a repeated feature row is picked at random.

Row rules are ``core.events.Transaction``'s, so a record batch accepts is one the
stream and the API accept too.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import duckdb

from batch.pit import literal, quote
from batch.plan import RetrievalPlan, ViewSpec
from core.cli import UserError
from core.contract import ENTITY_KEYS
from core.events import CHANNELS, MAX_AMOUNT

INTEGER = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}
)
NUMBER = INTEGER | {"FLOAT", "DOUBLE"}
TEXT = frozenset({"VARCHAR"})
TIMESTAMP = frozenset(
    {"TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S"}
)
KINDS: dict[frozenset[str], str] = {
    INTEGER: "an integer",
    NUMBER: "a number",
    TEXT: "text",
    TIMESTAMP: "a timestamp",
}
# Feast value types of the views' features, as DuckDB types.
FEAST_TYPES: dict[str, frozenset[str]] = {
    "Int32": INTEGER,
    "Int64": INTEGER,
    "Float32": NUMBER,
    "Float64": NUMBER,
    "String": TEXT,
    "UnixTimestamp": TIMESTAMP,
}
ENTITY_TYPES: dict[str, frozenset[str]] = {
    "transaction_id": TEXT,
    **dict.fromkeys(ENTITY_KEYS, INTEGER),
    "amount": NUMBER,
    "channel": TEXT,
    "country": TEXT,
    "event_timestamp": TIMESTAMP,
}
# core.events.TransactionRequest.country's ^[A-Z]{2}$, as a GLOB: twice as fast as the regex.
COUNTRY = "[A-Z][A-Z]"


def _is(duck_type: str, allowed: frozenset[str]) -> bool:
    return duck_type in allowed or (allowed is NUMBER and duck_type.startswith("DECIMAL"))


def column_types(
    source: Path | str, types: Mapping[str, str], wanted: Mapping[str, frozenset[str]]
) -> None:
    """Every wanted column present, with a type of its kind."""
    missing = [c for c in wanted if c not in types]
    if missing:
        raise UserError(f"{source} lacks column(s) {', '.join(missing)}; needs {', '.join(wanted)}")
    for column, allowed in wanted.items():
        if not _is(types[column], allowed):
            raise UserError(
                f"{source}: column {column} is {types[column]}, expected {KINDS[allowed]}"
            )


def entity_rows(
    con: duckdb.DuckDBPyConnection, view: str, source: Path | str, what: str
) -> tuple[int, datetime | None, datetime | None]:
    """Check the selected rows (no nulls, each transaction once, values the event schema
    allows) and return their count and time range, in one scan; examples only on failure."""
    checks = {
        "null key or field(s)": " OR ".join(f"{quote(c)} IS NULL" for c in ENTITY_TYPES),
        f"amount(s) not in (0, {MAX_AMOUNT:g}] or not finite": (
            f"NOT isfinite(amount) OR amount <= 0 OR amount > {MAX_AMOUNT}"
        ),
        "negative user_id/merchant_id(s)": "user_id < 0 OR merchant_id < 0",
        f"channel(s) not in {', '.join(CHANNELS)}": (
            f"channel NOT IN ({', '.join(literal(c) for c in CHANNELS)})"
        ),
        "country code(s) not two capital letters": f"country NOT GLOB {literal(COUNTRY)}",
    }
    counts = ", ".join(f"count(*) FILTER (WHERE {cond})" for cond in checks.values())
    row = con.execute(
        f"SELECT count(*), min(event_timestamp), max(event_timestamp),"
        f" count(transaction_id) - count(DISTINCT transaction_id), {counts} FROM {view}"
    ).fetchone()
    assert row is not None
    if row[3]:
        example = con.execute(
            f"SELECT transaction_id FROM {view} WHERE transaction_id IS NOT NULL"
            " GROUP BY transaction_id HAVING count(*) > 1 LIMIT 1"
        ).fetchone()
        raise UserError(
            f"{source}: {row[3]} repeated transaction_id(s) in {what}, e.g."
            f" {example[0] if example else None!r}; each transaction must be scored once"
        )
    for (problem, cond), bad in zip(checks.items(), row[4:], strict=True):
        if bad:
            example = con.execute(
                f"SELECT transaction_id FROM {view} WHERE {cond} LIMIT 1"
            ).fetchone()
            raise UserError(
                f"{source}: {bad} row(s) in {what} with {problem},"
                f" e.g. {example[0] if example else None!r}"
            )
    return int(row[0]), row[1], row[2]


def feature_sources(
    con: duckdb.DuckDBPyConnection, plan: RetrievalPlan, lo: datetime, hi: datetime
) -> None:
    """Each view's parquet file: its columns, their types, and one row per key and time."""
    for view in plan.views:
        relation = f"read_parquet({literal(view.path)})"
        try:
            described = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
        except duckdb.IOException as exc:
            raise UserError(f"view {view.name}: cannot read {view.path}") from exc
        except duckdb.Error as exc:
            first = str(exc).splitlines()[0]
            raise UserError(f"view {view.name}: cannot read {view.path}: {first}") from exc
        types = {r[0]: str(r[1]) for r in described}
        column_types(f"view {view.name}'s source {view.path}", types, _wanted(view))
        _unique_rows(con, view, relation, lo, hi)


def _wanted(view: ViewSpec) -> dict[str, frozenset[str]]:
    wanted = dict.fromkeys(view.join_keys, INTEGER)
    wanted[view.timestamp_field] = TIMESTAMP
    if view.created_timestamp_column:
        wanted[view.created_timestamp_column] = TIMESTAMP
    dtypes = dict(view.dtypes)
    for column, feature in view.field_mapping:
        wanted[column] = FEAST_TYPES.get(dtypes.get(feature, ""), NUMBER | TEXT)
    return wanted


def _unique_rows(
    con: duckdb.DuckDBPyConnection, view: ViewSpec, relation: str, lo: datetime, hi: datetime
) -> None:
    """Rows the join can reach, one per (keys, timestamp[, created]): Feast picks among
    repeats arbitrarily, so the score would depend on row order."""
    ts = quote(view.timestamp_field)
    keys = [*view.join_keys, view.timestamp_field]
    if view.created_timestamp_column:
        keys.append(view.created_timestamp_column)
    where = f"{ts} <= {literal(hi)}"
    if view.ttl is not None:
        where += f" AND {ts} >= {literal(lo - view.ttl)}"
    cols = ", ".join(quote(k) for k in keys)
    row = con.execute(
        f"SELECT count(*), any_value(concat_ws(', ', {cols})) FROM (SELECT {cols}"
        f" FROM {relation} WHERE {where} GROUP BY ALL HAVING count(*) > 1)"
    ).fetchone()
    if row and row[0]:
        raise UserError(
            f"view {view.name}'s source {view.path}: {row[0]} ({', '.join(keys)}) value(s)"
            f" appear on more than one row, e.g. {row[1]}; keep one row per key and time"
        )
