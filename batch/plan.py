"""What the point-in-time join reads, taken from the Feast registry and nothing else.

The fast path must return exactly what ``get_historical_features`` returns, so
every source path, column, TTL and timestamp column comes from the registered
FeatureService and its views; a change to ``feature_repo/`` reaches this job by
``feast apply`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from feast import FeatureService, FeatureStore, FileSource
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

from core.cli import UserError
from core.plan import OnDemandRead, StoredRead, plan_service

# Offline stores whose sources are parquet files DuckDB can read directly.
PARQUET_STORES = ("duckdb", "file", "dask")


@dataclass(frozen=True)
class ViewSpec:
    """One feature view as the point-in-time join needs it."""

    name: str
    path: str
    join_keys: tuple[str, ...]
    timestamp_field: str
    created_timestamp_column: str | None
    ttl: timedelta | None
    features: tuple[str, ...]  # service features plus what on-demand views read
    field_mapping: tuple[tuple[str, str], ...]  # (column in the file, feature name)
    dtypes: tuple[tuple[str, str], ...] = ()  # (feature name, Feast type), for input checks


@dataclass(frozen=True)
class RetrievalPlan:
    """The service's plan with each stored view resolved to its parquet file."""

    views: tuple[ViewSpec, ...]
    on_demand: tuple[OnDemandRead, ...]


def build_plan(store: FeatureStore, service: FeatureService) -> RetrievalPlan:
    """Views, columns and on-demand transforms of ``service``, as Feast would retrieve them."""
    plan = plan_service(store, service)
    return RetrievalPlan(tuple(_view_spec(read) for read in plan.stored), plan.on_demand)


def _view_spec(read: StoredRead) -> ViewSpec:
    view, name, features = read.view, read.name, read.features
    source = view.batch_source
    path = parquet_path(source)
    if source is None or path is None:
        raise UserError(
            f"view {name} reads {type(source).__name__}, not a parquet file: use --engine feast"
        )
    if view.projection.join_key_map:
        raise UserError(f"view {name} uses join-key mapping: use --engine feast")
    mapping = {feature: column for column, feature in source.field_mapping.items()}
    return ViewSpec(
        name=name,
        path=path,
        join_keys=tuple(e.name for e in view.entity_columns),
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column or None,
        ttl=view.ttl if view.ttl else None,  # Feast treats a zero TTL as "never expires"
        features=features,
        field_mapping=tuple((mapping.get(f, f), f) for f in features),
        dtypes=tuple((f.name, str(f.dtype)) for f in view.features if f.name in features),
    )


def parquet_path(source: object) -> str | None:
    """Where a view's parquet data is: a FileSource, or (feature_store.spark.yaml) a
    SparkSource over parquet files, both defined by the one ``features.py``."""
    if isinstance(source, FileSource) and source.path.endswith(".parquet"):
        return str(source.path)
    if isinstance(source, SparkSource) and source.file_format == "parquet" and source.path:
        return str(source.path)
    return None


def supports_duckdb(store: FeatureStore) -> bool:
    return str(store.config.offline_store.type) in PARQUET_STORES
