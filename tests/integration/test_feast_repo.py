"""`feast apply` and materialization into the real Redis, read back through the Feast SDK."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from feast import FeatureStore

from core.aggregations import FEATURE_NAMES
from core.contract import (
    FEATURE_SERVICE_NAME,
    MERCHANT_PROFILE_VIEW,
    USER_PROFILE_VIEW,
    WINDOWS_VIEW,
    feature_order,
)
from core.store import open_store
from tests.conftest import MATERIALIZE_END, NOW, Stack, feast_cli

pytestmark = pytest.mark.integration


def _latest(path, key: str, end: str) -> pd.DataFrame:
    df = pd.read_parquet(path)
    df = df[df["event_timestamp"] <= pd.Timestamp(end, tz="UTC")]
    return df.sort_values("event_timestamp").groupby(key).tail(1).set_index(key)


def test_apply_registers_the_contract(stack: Stack) -> None:
    store = open_store(stack.settings)
    views = {v.name for v in store.list_feature_views()}
    assert {USER_PROFILE_VIEW, MERCHANT_PROFILE_VIEW, WINDOWS_VIEW, "user_batch_score"} <= views
    service = store.get_feature_service(FEATURE_SERVICE_NAME)
    assert feature_order(service)[-4:] == [
        "amount_log",
        "amount_to_avg_30d",
        "is_foreign",
        "is_online",
    ]
    assert set(FEATURE_NAMES) <= set(feature_order(service))


def test_online_read_returns_materialized_values(materialized: Stack) -> None:
    store: FeatureStore = open_store(materialized.settings)
    data = materialized.settings.data_dir
    profiles = _latest(data / "user_profile.parquet", "user_id", MATERIALIZE_END)
    windows = _latest(data / "user_txn_windows.parquet", "user_id", MATERIALIZE_END)
    users = [int(u) for u in windows.index[:50]]
    got = (
        store.get_online_features(
            features=[
                f"{USER_PROFILE_VIEW}:account_age_days",
                f"{USER_PROFILE_VIEW}:avg_amount_30d",
            ]
            + [f"{WINDOWS_VIEW}:{name}" for name in FEATURE_NAMES],
            entity_rows=[{"user_id": u} for u in users],
        )
        .to_df()
        .set_index("user_id")
    )
    for name in ("account_age_days", "avg_amount_30d"):
        pd.testing.assert_series_equal(
            got[name], profiles.loc[users, name], check_dtype=False, check_names=False
        )
    for name in FEATURE_NAMES:
        pd.testing.assert_series_equal(
            got[name], windows.loc[users, name], check_dtype=False, check_names=False
        )


def test_unknown_entity_reads_as_missing(materialized: Stack) -> None:
    store = open_store(materialized.settings)
    got = store.get_online_features(
        features=[f"{WINDOWS_VIEW}:txn_count_10m"], entity_rows=[{"user_id": 10**12}]
    ).to_dict()
    assert got["txn_count_10m"] == [None]


def test_materialize_incremental_from_the_cli(materialized: Stack) -> None:
    later = (NOW + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    out = materialized.run(feast_cli(), "materialize-incremental", later)
    assert out.returncode == 0, out.stderr
