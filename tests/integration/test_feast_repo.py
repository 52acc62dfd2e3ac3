"""`feast apply` and materialization into the real Redis, read back through the Feast SDK."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from feast import FeatureStore

from core.aggregations import FEATURE_NAMES, WINDOWS
from core.contract import (
    FEATURE_SERVICE_NAME,
    MERCHANT_PROFILE_VIEW,
    REQUEST_FIELDS,
    USER_PROFILE_VIEW,
    WINDOWS_VIEW,
    feature_order,
)
from core.plan import plan_service
from core.store import open_store
from tests.conftest import Clock, Stack, feast_cli

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


def test_plan_expands_the_registered_service(stack: Stack) -> None:
    store = open_store(stack.settings)
    plan = plan_service(store, store.get_feature_service(FEATURE_SERVICE_NAME))
    windows = (*(w.name for w in WINDOWS), "secs_since_last_txn")
    profile = ("account_age_days", "avg_amount_30d", "txn_count_30d", "home_country")
    assert [(r.name, r.join_key, r.features) for r in plan.stored] == [
        (USER_PROFILE_VIEW, "user_id", profile),  # home_country: the on-demand view's input
        (MERCHANT_PROFILE_VIEW, "merchant_id", ("risk_score", "is_high_risk_mcc")),
        (WINDOWS_VIEW, "user_id", windows),
    ]
    outputs = ("amount_log", "amount_to_avg_30d", "is_foreign", "is_online")
    (odfv,) = plan.on_demand
    assert (odfv.view.name, odfv.outputs) == ("transaction_request", outputs)
    assert odfv.inputs == ("amount", "channel", "country", *profile)
    assert odfv.sources == ("user_profile",)
    assert plan.request_fields == REQUEST_FIELDS
    assert plan.order == (*profile[:3], "risk_score", "is_high_risk_mcc", *windows, *outputs)
    assert len(plan.log_columns) == len(plan.order) == 17
    assert plan.log_columns[0] == (USER_PROFILE_VIEW, "account_age_days", USER_PROFILE_VIEW)
    assert plan.log_columns[-1] == ("transaction_request", "is_online", None)


def test_online_read_returns_materialized_values(materialized: Stack, clock: Clock) -> None:
    store: FeatureStore = open_store(materialized.settings)
    data = materialized.settings.data_dir
    profiles = _latest(data / "user_profile.parquet", "user_id", clock.materialize_end)
    windows = _latest(data / "user_txn_windows.parquet", "user_id", clock.materialize_end)
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


def test_materialize_incremental_from_the_cli(materialized: Stack, clock: Clock) -> None:
    later = (clock.now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    out = materialized.run(feast_cli(), "materialize-incremental", later)
    assert out.returncode == 0, out.stderr
