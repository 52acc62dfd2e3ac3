"""Across modes: the API scores from the aggregates the stream has just written."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.aggregations import FEATURE_NAMES
from core.contract import REQUEST_FIELDS
from harness.flow import run_flow
from harness.kafka import Topics, encoded, produce, scores
from harness.stream import expected_latest, recent_events
from serving.app import create_app
from tests.conftest import Stack

pytestmark = pytest.mark.integration


def test_api_reflects_and_agrees_with_the_stream(ready: Stack) -> None:
    bootstrap = ready.settings.kafka_bootstrap_servers
    events = recent_events(ready.settings, users=60, hours=6, end=datetime.now(timezone.utc))
    topics = Topics.created("test", bootstrap, 2)
    produce(bootstrap, topics.transactions, encoded(events), 2)
    out = run_flow(ready.env | topics.env())
    assert out.returncode == 0, out.stdout + out.stderr

    stream_scores: dict[str, float] = dict(
        scores(bootstrap, topics.scores)[["transaction_id", "score"]].itertuples(index=False)
    )
    want: dict[Any, dict[Any, Any]] = expected_latest(events).to_dict("index")
    newest = events.groupby("user_id").tail(1).to_dict("records")
    with TestClient(create_app(ready.settings)) as client:
        for row in newest:
            body = {k: row[k] for k in ("user_id", "merchant_id", *REQUEST_FIELDS)}
            answer = client.post("/v1/predict?explain=true", json=body).json()
            assert not answer["stale_features"] and not set(FEATURE_NAMES) & set(
                answer["missing_features"]
            ) - {"secs_since_last_txn"}
            for name in FEATURE_NAMES:  # the stream's fresh values
                expected = want[row["user_id"]][name]
                got = answer["features"][name]
                assert (got is None and np.isnan(expected)) or got == expected, name
            # One score everywhere: the same record with the same features, the same score.
            assert answer["score"] == stream_scores[row["transaction_id"]]
