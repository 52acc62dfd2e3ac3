"""Batch input checks on in-memory tables: each problem is one UserError naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch import validate
from core.cli import UserError
from core.duck import connect

GOOD = (
    "SELECT 'tx-' || i AS transaction_id, i::BIGINT AS user_id, (i % 3)::BIGINT AS merchant_id,"
    " 10.5 AS amount, 'pos' AS channel, 'DE' AS country,"
    " TIMESTAMPTZ '2026-11-27 10:00:00+00' AS event_timestamp FROM range(20) t(i)"
)


def rows_error(sql: str) -> str | None:
    con = connect()
    con.execute(f"CREATE VIEW entities AS {sql}")
    try:
        validate.entity_rows(con, "entities", Path("day.parquet"), "the rows of 2026-11-27")
    except UserError as exc:
        return str(exc)
    return None


def test_good_rows_pass() -> None:
    assert rows_error(GOOD) is None


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ("SELECT * FROM g UNION ALL SELECT * FROM g LIMIT 22", "2 repeated transaction_id(s)"),
        ("SELECT * REPLACE (NULL AS user_id) FROM g", "null key or field"),
        ("SELECT * REPLACE (-amount AS amount) FROM g", "amount(s) not in"),
        ("SELECT * REPLACE ('infinity'::DOUBLE AS amount) FROM g", "amount(s) not in"),
        ("SELECT * REPLACE (2e6 AS amount) FROM g", "amount(s) not in"),
        ("SELECT * REPLACE (-user_id - 1 AS user_id) FROM g", "negative user_id"),
        ("SELECT * REPLACE ('card' AS channel) FROM g", "channel(s) not in pos, online, atm"),
        ("SELECT * REPLACE ('de' AS country) FROM g", "country code(s)"),
    ],
)
def test_each_bad_row_is_named(change: str, needle: str) -> None:
    error = rows_error(f"WITH g AS ({GOOD}) {change}")
    assert error is not None and needle in error and error.startswith("day.parquet: ")


def test_types_and_missing_columns() -> None:
    types = {"user_id": "BIGINT", "amount": "DECIMAL(10,2)"}
    validate.column_types("f", types, {"user_id": validate.INTEGER, "amount": validate.NUMBER})
    with pytest.raises(UserError, match="column user_id is VARCHAR, expected an integer"):
        validate.column_types("f", {"user_id": "VARCHAR"}, {"user_id": validate.INTEGER})
    with pytest.raises(UserError, match=r"f lacks column\(s\) amount"):
        validate.column_types("f", {"user_id": "BIGINT"}, dict.fromkeys(types, validate.NUMBER))
