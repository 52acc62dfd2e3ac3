"""Features for a chunk of entity rows: the DuckDB fast path or Feast's own retrieval."""

from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd
import pyarrow as pa
from feast import FeatureService, FeatureStore

from batch.pit import Partition, pit_sql
from batch.plan import RetrievalPlan


def duckdb_features(
    con: duckdb.DuckDBPyConnection,
    plan: RetrievalPlan,
    entities: str,
    lo: datetime,
    hi: datetime,
    partition: Partition | None = None,
    order_by: tuple[str, ...] = (),
) -> pa.Table:
    """The fast path: our point-in-time join, then the registry's on-demand transforms."""
    sql = pit_sql(plan, entities, lo, hi, partition, order_by)
    table = con.sql(sql).to_arrow_table()
    return apply_odfvs(plan, table)


def feast_features(
    store: FeatureStore, service: FeatureService, entities: pd.DataFrame
) -> pa.Table:
    """The reference path, and the only one for offline stores DuckDB cannot read."""
    return store.get_historical_features(entity_df=entities, features=service).to_arrow()


def apply_odfvs(plan: RetrievalPlan, table: pa.Table) -> pa.Table:
    """Run each on-demand view's own transform (from the registry) on just its inputs."""
    for read in plan.on_demand:
        inputs = [c for c in read.inputs if c in table.column_names]
        out = read.view.transform_arrow(table.select(inputs), False)
        for field in read.view.features:
            table = table.append_column(field.name, out[field.name])
    return table
