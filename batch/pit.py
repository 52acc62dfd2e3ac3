"""The point-in-time join as one DuckDB query, with Feast's semantics.

Feast 0.67's DuckDB/ibis offline store keeps, per entity row and view, the row
with ``timestamp <= entity_ts`` and ``timestamp + ttl >= entity_ts`` that is
latest by (timestamp, created_timestamp). Both conditions depend on the timestamp
only, so the same answer comes from: keep the latest-created row per (key,
timestamp), ASOF-join the latest timestamp at or before the entity's, then null it
out if it is older than the TTL. An ASOF join is a merge, not Feast's inner join of
every row against every row of its key (``docs/performance.md``, "Batch").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from batch.plan import RetrievalPlan, ViewSpec

TS = "event_timestamp"
_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class Partition:
    """Rows whose ``key`` hashes to bucket ``index`` of ``count``: one chunk of the day."""

    key: str
    count: int
    index: int

    def where(self, alias: str = "") -> str:
        column = f"{alias}{quote(self.key)}"
        return "TRUE" if self.count == 1 else f"hash({column}) % {self.count} = {self.index}"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value: str | datetime) -> str:
    text = value.isoformat() if isinstance(value, datetime) else value
    return "'" + text.replace("'", "''") + "'"


def view_sql(view: ViewSpec, lo: datetime, hi: datetime, partition: Partition | None) -> str:
    """The rows of one view that can match entity timestamps in [lo, hi]."""
    ts = quote(view.timestamp_field)
    columns = [*(quote(k) for k in view.join_keys), f"CAST({ts} AS TIMESTAMPTZ) AS _ts"]
    columns += [f"{quote(src)} AS {quote(name)}" for src, name in view.field_mapping]
    where = [f"{ts} <= {literal(hi)}"]
    if view.ttl is not None:
        where.append(f"{ts} >= {literal(lo - view.ttl)}")  # older rows are expired for all
    if partition and partition.key in view.join_keys:
        where.append(partition.where())
    sql = f"SELECT {', '.join(columns)} FROM read_parquet({literal(view.path)})"
    sql += f" WHERE {' AND '.join(where)}"
    if view.created_timestamp_column:
        keys = ", ".join(quote(k) for k in view.join_keys)
        created = quote(view.created_timestamp_column)
        # DuckDB sorts NULLs last in DESC order, as Feast's ibis dedup does.
        sql += f" QUALIFY row_number() OVER (PARTITION BY {keys}, {ts} ORDER BY {created} DESC) = 1"
    return sql


def pit_sql(
    plan: RetrievalPlan,
    entities: str,
    lo: datetime,
    hi: datetime,
    partition: Partition | None = None,
    order_by: tuple[str, ...] = (),
) -> str:
    """Every column of ``entities`` plus each view's features as of the row's own timestamp.

    ``entities`` is a relation with the views' join keys and ``event_timestamp``;
    ``lo``/``hi`` bound its timestamps (they prune the feature files' row groups).
    """
    where = partition.where() if partition else "TRUE"
    sql = ["SELECT e.*"]
    joins = []
    for i, view in enumerate(plan.views):
        alias = f"v{i}"
        fresh = f"{alias}._ts IS NOT NULL"
        if view.ttl is not None:
            ttl_us = view.ttl // _US
            fresh += f" AND epoch_us({alias}._ts) + {ttl_us} >= epoch_us(e.{TS})"
        sql += [
            f", CASE WHEN {fresh} THEN {alias}.{quote(f)} END AS {quote(f)}" for f in view.features
        ]
        on = " AND ".join(f"e.{quote(k)} = {alias}.{quote(k)}" for k in view.join_keys)
        joins.append(
            f"ASOF LEFT JOIN ({view_sql(view, lo, hi, partition)}) {alias}"
            f" ON {on} AND e.{TS} >= {alias}._ts"
        )
    body = (
        f"{''.join(sql)} FROM (SELECT * EXCLUDE ({TS}), CAST({TS} AS TIMESTAMPTZ) AS {TS}"
        f" FROM {entities} WHERE {where}) e {' '.join(joins)}"
    )
    if order_by:
        body += " ORDER BY " + ", ".join(f"e.{quote(c)}" for c in order_by)
    return body
