"""The one-round-trip online reader returns exactly what Feast's SDK returns."""

from __future__ import annotations

import asyncio
from typing import Any

import pandas as pd
import pytest

from core.contract import REQUEST_FIELDS, feature_order
from core.store import feature_service, open_store
from serving.online import OnlineFeatureReader, redis_client
from tests.conftest import Stack

pytestmark = pytest.mark.integration


def test_reader_equals_get_online_features(materialized: Stack) -> None:
    store = open_store(materialized.settings)
    service = feature_service(store)
    tx = pd.read_parquet(materialized.settings.data_dir / "transactions.parquet")
    sample = tx.sample(300, random_state=4)
    rows: list[dict[str, Any]] = [
        {str(k): v for k, v in r.items()}
        for r in sample[["user_id", "merchant_id", *REQUEST_FIELDS]].to_dict("records")
    ]
    rows += [rows[0] | {"user_id": 10**15}, rows[1] | {"merchant_id": 10**15}]
    expected = store.get_online_features(features=service, entity_rows=rows).to_dict()

    async def read() -> dict[str, list[object]]:
        client = redis_client(materialized.settings.redis_connection_string, 1.0)
        try:
            reader = OnlineFeatureReader(store, service, client)
            return (await reader.read(rows, timeout_s=5.0)).columns
        finally:
            await client.aclose()

    got = asyncio.run(read())
    for name in feature_order(service):
        assert got[name] == expected[name], name
