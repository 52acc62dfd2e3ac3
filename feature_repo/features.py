"""Feast definitions for the fraud model: entities, sources, views and the FeatureService.

Names and the window-aggregate schema come from the shared ``core`` contract, so
batch, streaming and online scoring all read the same definitions.
"""

from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import (
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    PushSource,
    RequestSource,
    ValueType,
)
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, String

from core import contract
from core.aggregations import SECS_SINCE_LAST, WINDOWS
from core.settings import Settings

# Absolute paths, as `feast init` writes them: Feast's DuckDB offline store reads a relative
# FileSource path against the working directory, not the repo (feast 0.67).
DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def parquet_source(name: str, file: str, created: str | None = None) -> FileSource | SparkSource:
    """A parquet file as the configured offline store reads it: FEAST_SOURCE=spark gives the
    SparkSource that ``feature_store.spark.yaml``'s Spark store needs, else a FileSource."""
    columns: dict[str, Any] = {"timestamp_field": "event_timestamp"}
    if created:
        columns["created_timestamp_column"] = created
    path = str(DATA_DIR / file)
    if Settings().feast_source == "spark":
        return SparkSource(name=name, path=path, file_format="parquet", **columns)
    return FileSource(name=name, path=path, **columns)


user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.INT64)

# --- Daily batch features -------------------------------------------------------------

user_profile = FeatureView(
    name=contract.USER_PROFILE_VIEW,
    entities=[user],
    ttl=timedelta(days=2),
    schema=[
        Field(name="account_age_days", dtype=Int64),
        Field(name="avg_amount_30d", dtype=Float64),
        Field(name="txn_count_30d", dtype=Int64),
        Field(name="home_country", dtype=String),
    ],
    source=parquet_source("user_profile_source", "user_profile.parquet", "created_timestamp"),
    description="Daily user snapshot at 00:00 UTC, from transactions before that midnight.",
)

merchant_profile = FeatureView(
    name=contract.MERCHANT_PROFILE_VIEW,
    entities=[merchant],
    ttl=timedelta(days=2),
    schema=[
        Field(name="risk_score", dtype=Float64),
        Field(name="is_high_risk_mcc", dtype=Int64),
    ],
    source=parquet_source(
        "merchant_profile_source", "merchant_profile.parquet", "created_timestamp"
    ),
    description="Daily merchant risk snapshot.",
)

# --- Streaming window aggregates ------------------------------------------------------

user_txn_windows = FeatureView(
    name=contract.WINDOWS_VIEW,
    entities=[user],
    ttl=timedelta(days=1),
    schema=[Field(name=w.name, dtype=Int64 if w.is_integer else Float64) for w in WINDOWS]
    + [Field(name=SECS_SINCE_LAST, dtype=Float64)],
    source=PushSource(
        name=contract.WINDOWS_PUSH_SOURCE,
        # History computed offline by `python -m batch aggregates` from core.aggregations.
        batch_source=parquet_source("user_txn_windows_source", "user_txn_windows.parquet"),
    ),
    description="Per-user trailing windows as of each transaction (the stream keeps them fresh).",
)

# --- Nightly batch scores, published for later look-up --------------------------------

user_batch_score = FeatureView(
    name=contract.BATCH_SCORE_VIEW,
    entities=[user],
    ttl=timedelta(days=3),
    schema=[
        Field(name="score", dtype=Float64),
        Field(name="model_version", dtype=String),
        Field(name="scored_transaction_id", dtype=String),
    ],
    source=PushSource(
        name="user_batch_score_push",
        batch_source=FileSource(
            name="user_batch_score_source",
            path=str(DATA_DIR / "published_scores.parquet"),
            timestamp_field="event_timestamp",
        ),
    ),
    online=True,
    description="Each user's latest nightly score, written by `python -m batch score --publish`.",
)

# --- Request-time features ------------------------------------------------------------

transaction = RequestSource(
    name="transaction",
    schema=[
        Field(name="amount", dtype=Float64),
        Field(name="channel", dtype=String),
        Field(name="country", dtype=String),
    ],
)


@on_demand_feature_view(
    sources=[user_profile, transaction],
    schema=[
        Field(name="amount_log", dtype=Float64),
        Field(name="amount_to_avg_30d", dtype=Float64),
        Field(name="is_foreign", dtype=Int64),
        Field(name="is_online", dtype=Int64),
    ],
    mode="python",
)
def transaction_request(inputs: dict[str, Any]) -> dict[str, Any]:
    # Feast rebuilds this function from its source text, so it imports what it uses.
    from core.request_features import compute

    return compute(inputs)


# --- The model's contract -------------------------------------------------------------

fraud_model_v1 = FeatureService(
    name=contract.FEATURE_SERVICE_NAME,
    features=[
        user_profile[["account_age_days", "avg_amount_30d", "txn_count_30d"]],
        merchant_profile,
        user_txn_windows,
        transaction_request,
    ],
    description="Inputs of the fraud model, in the order the model consumes them.",
    tags={"model": "fraud", "version": "1"},
)
