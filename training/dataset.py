"""The training set, built by Feast's point-in-time join over the FeatureService."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
from feast import FeatureService, FeatureStore

from core.contract import ENTITY_KEYS, REQUEST_FIELDS
from core.duck import connect
from core.events import LABEL


def entity_frame(transactions: Path, start: datetime, end: datetime) -> pd.DataFrame:
    """Labelled transactions with timestamps in [start, end): the entity dataframe."""
    if not transactions.exists():
        raise FileNotFoundError(2, "no such file", str(transactions))
    cols = ", ".join(("transaction_id", *ENTITY_KEYS, *REQUEST_FIELDS, "event_timestamp", LABEL))
    return (
        connect()
        .execute(
            f"SELECT {cols} FROM read_parquet(?) WHERE event_timestamp >= ? AND event_timestamp < ?"
            " ORDER BY event_timestamp",
            [str(transactions), start, end],
        )
        .df()
    )


def training_frame(
    store: FeatureStore, service: FeatureService, entities: pd.DataFrame
) -> pd.DataFrame:
    """Features as of each transaction's own timestamp (no value from after it)."""
    job = store.get_historical_features(entity_df=entities, features=service)
    return job.to_df().sort_values("event_timestamp", kind="stable").reset_index(drop=True)
