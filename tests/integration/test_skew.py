"""The skew monitor: served vectors logged through Feast, compared with offline retrieval."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from feast.feature_logging import FeatureServiceLoggingSource

from core.store import feature_service, open_store
from serving.app import create_app
from tests.conftest import Stack

pytestmark = pytest.mark.integration

PROFILE_DERIVED = {
    "account_age_days",
    "avg_amount_30d",
    "txn_count_30d",
    "amount_to_avg_30d",
    "is_foreign",
}


def test_served_vectors_are_logged_and_skew_is_found(ready: Stack, tmp_path: Path) -> None:
    logs = tmp_path / "feature-logs"
    # One user the offline store has never seen gets a profile online only: injected skew.
    ghost = 10**12 + uuid.uuid4().int % 10**9
    store = open_store(ready.settings)
    store.write_to_online_store(
        "user_profile",
        pd.DataFrame(
            {
                "user_id": [ghost],
                "event_timestamp": [datetime.now(timezone.utc) - timedelta(minutes=5)],
                "created_timestamp": [datetime.now(timezone.utc)],
                "account_age_days": [400],
                "avg_amount_30d": [55.5],
                "txn_count_30d": [12],
                "home_country": ["GB"],
            }
        ),
    )
    records = [
        {
            "user_id": u,
            "merchant_id": u % 50,
            "amount": 10.0 + u % 90,
            "channel": "pos",
            "country": "GB",
        }
        for u in [*range(2000, 2150), ghost]
    ]
    with TestClient(create_app(ready.settings_with(feature_log_dir=logs))) as client:
        for lo in range(0, len(records), 50):
            answer = client.post("/v1/predict/batch", json={"records": records[lo : lo + 50]})
            assert answer.status_code == 200, answer.text
    # Shutting the app down flushed the buffer, in Feast's feature-log schema.
    logged = pq.read_table(sorted(logs.rglob("*.parquet"))).to_pandas()
    want = FeatureServiceLoggingSource(feature_service(store), store.project).get_schema(
        store.registry
    )
    assert set(want.names) <= set(logged.columns)
    assert len(logged) == len(records)

    report_path = tmp_path / "skew.json"
    out = ready.python("-m", "batch", "skew", "--logs", str(logs), "--json", str(report_path))
    assert out.returncode == 0, out.stderr
    assert "skew over 151 logged rows" in out.stdout, out.stdout
    report = json.loads(report_path.read_text())
    drift = {f["feature"]: f for f in report["features"]}
    for name, row in drift.items():
        # Materialized online values are the offline values as of now: only the ghost differs.
        assert row["rows"] == len(records), name
        if name in PROFILE_DERIVED:
            assert row["equal"] == len(records) - 1, (name, row)
            assert row["offline_missing"] - row["online_missing"] == 1, (name, row)
        else:
            assert row["equal"] == len(records), (name, row)

    failing = ready.python(
        "-m", "batch", "skew", "--logs", str(logs), "--json", str(report_path), "--fail-above", "0"
    )
    assert failing.returncode == 1, failing.stdout + failing.stderr
