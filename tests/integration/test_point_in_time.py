"""Feast's point-in-time join over the FeatureService equals a brute-force join.

A match proves no feature value comes from after its entity timestamp, and that
TTL expiry and unknown entities give nulls, as the model sees them in training.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from core.contract import REQUEST_FIELDS, feature_order
from core.request_features import compute
from core.store import feature_service, open_store
from harness.reference import ProfileView
from tests.conftest import Stack

pytestmark = pytest.mark.integration


def test_historical_features_equal_brute_force(stack: Stack) -> None:
    store = open_store(stack.settings)
    service = feature_service(store)
    data = stack.settings.data_dir
    tx = pd.read_parquet(data / "transactions.parquet")
    entities = tx.sample(600, random_state=1)[
        ["user_id", "merchant_id", "event_timestamp", *REQUEST_FIELDS]
    ]
    # Edge rows: an unknown user, TTL expiry after the data ends, a time before any data.
    edge = entities.head(3).reset_index(drop=True)
    edge.loc[0, "user_id"] = 10**9
    edge.loc[1, "event_timestamp"] = tx["event_timestamp"].max() + timedelta(days=4)
    edge.loc[2, "event_timestamp"] = tx["event_timestamp"].min() - timedelta(days=1)
    entities = pd.concat([entities, edge], ignore_index=True)

    got = (
        store.get_historical_features(entity_df=entities, features=service)
        .to_df()
        .sort_values(["event_timestamp", "user_id", "merchant_id"], kind="stable")
        .reset_index(drop=True)
    )
    entities = entities.sort_values(
        ["event_timestamp", "user_id", "merchant_id"], kind="stable"
    ).reset_index(drop=True)

    views = {v.name: v for v in store.list_feature_views()}
    parts = []
    for view_name, path, key in [
        ("user_profile", "user_profile.parquet", "user_id"),
        ("merchant_profile", "merchant_profile.parquet", "merchant_id"),
        ("user_txn_windows", "user_txn_windows.parquet", "user_id"),
    ]:
        view = views[view_name]
        assert view.ttl is not None
        table = pd.read_parquet(data / path)
        created = "created_timestamp" if "created_timestamp" in table else None
        features = [f.name for f in view.features]
        stamps = ("event_timestamp", created)
        brute = ProfileView.of_frame(view_name, table, key, stamps, view.ttl, features)
        parts.append(brute.as_of_rows(entities))
    expected = pd.concat(parts, axis=1)
    odfv_inputs = {c: entities[c].tolist() for c in REQUEST_FIELDS} | {
        c: [None if pd.isna(v) else v for v in expected[c]]
        for c in ("avg_amount_30d", "home_country")
    }
    expected = expected.assign(**compute(odfv_inputs))

    assert got["user_id"].tolist() == entities["user_id"].tolist()
    for name in feature_order(service):
        a = pd.to_numeric(got[name], errors="coerce").to_numpy(dtype=float)
        b = pd.to_numeric(expected[name], errors="coerce").to_numpy(dtype=float)
        assert np.array_equal(a, b, equal_nan=True), name
    # The edge rows really exercised the null paths.
    assert got["txn_count_24h"].isna().sum() >= 2
