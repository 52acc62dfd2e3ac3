"""The online store on a Redis Cluster (3 masters, 3 replicas, started by devservices):
``feast materialize`` into it and the API's reader equals ``store.get_online_features``; the
stream writes Feast's layout there and the SDK reads the backfill's aggregates back; the batch
publisher's push lands there; MOVED and ASK (a slot migrated mid-reads) keep the reader equal;
a master SIGKILLed gives 503s with Retry-After, then the same answers after its replica's
promotion, with no restart of the API."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient
from httpx import Response
from redis.crc import key_slot

from core.contract import BATCH_SCORE_VIEW, REQUEST_FIELDS, feature_order
from core.redis_layout import Layout
from core.store import feature_service, open_store
from harness import redis_cluster as rc
from harness.flow import run_flow
from harness.kafka import Topics, encoded, produce
from harness.stream import assert_online_equals_backfill, recent_events
from harness.workspace import Workspace, create, feast_cli, stamp
from serving.app import create_app
from serving.online import OnlineFeatureReader, RequestRow, redis_client
from tests.conftest import Clock, Stack

pytestmark = pytest.mark.integration

Answer = dict[str, list[Any]]


@pytest.fixture(scope="module")
def on_cluster(ready: Stack, clock: Clock, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The session's data, registry and model over the cluster, flushed, then materialized."""
    settings = rc.cluster_settings(ready.settings)
    rc.flush(settings)
    root = tmp_path_factory.mktemp("cluster")
    ws = create(
        root, settings.redis_connection_string, redis_type="redis_cluster", redis_timeout_ms=2000
    )
    shutil.copytree(ready.settings.data_dir, ws.settings.data_dir, dirs_exist_ok=True)
    shutil.copy(ready.repo / "feature_store.yaml", ws.repo)  # the registry's project
    start = stamp(clock.now - timedelta(days=3))  # every view's newest rows: enough to compare
    out = ws.run(feast_cli(), "materialize", start, clock.materialize_end)
    assert out.returncode == 0, out.stderr
    return ws


def _rows(ws: Workspace, n: int, seed: int) -> list[RequestRow]:
    tx = pd.read_parquet(ws.settings.data_dir / "transactions.parquet")
    sample = tx.sample(n, random_state=seed)[["user_id", "merchant_id", *REQUEST_FIELDS]]
    return [{str(k): v for k, v in r.items()} for r in sample.to_dict("records")]


def _read(
    ws: Workspace, rows: list[RequestRow], reader: OnlineFeatureReader | None = None
) -> Answer:
    """Our API's reader on the cluster (a fresh client unless ``reader`` is given)."""

    async def go() -> Answer:
        client = redis_client(ws.settings.redis_connection_string, 2.0, "redis_cluster")
        try:
            store = open_store(ws.settings)
            read = await OnlineFeatureReader(store, feature_service(store), client).read(rows, 5.0)
            return read.columns
        finally:
            await client.aclose()

    return asyncio.run(go())


def _sdk(ws: Workspace, rows: list[RequestRow]) -> Answer:
    store = open_store(ws.settings)
    answer: Answer = store.get_online_features(
        features=feature_service(store), entity_rows=rows
    ).to_dict()
    return answer


def _assert_same(ws: Workspace, got: Answer, want: Answer, n: int) -> None:
    order = feature_order(feature_service(open_store(ws.settings)))
    assert len(order) > 5 and all(len(got[name]) == n for name in order)
    for name in order:
        assert got[name] == want[name], name


def test_materialized_cluster_reader_equals_sdk(on_cluster: Workspace) -> None:
    rows = _rows(on_cluster, 300, seed=7)
    rows += [rows[0] | {"user_id": 10**15}]  # an unknown entity too
    _assert_same(on_cluster, _read(on_cluster, rows), _sdk(on_cluster, rows), len(rows))
    sizes = [int(m.client().execute_command("DBSIZE")) for m in rc.masters(on_cluster.settings)]
    assert len(sizes) == 3 and min(sizes) > 0.2 * sum(sizes), sizes  # spread over every master


def test_stream_to_cluster_equals_backfill_through_the_sdk(on_cluster: Workspace) -> None:
    settings = on_cluster.settings
    bootstrap = settings.kafka_bootstrap_servers
    events = recent_events(settings, users=40, hours=6, end=datetime.now(timezone.utc))
    topics = Topics.created("cluster", bootstrap, 2)
    produce(bootstrap, topics.transactions, encoded(events), 2)
    out = run_flow(on_cluster.env | topics.env())
    assert out.returncode == 0, out.stdout + out.stderr
    assert events.user_id.nunique() >= 10
    assert_online_equals_backfill(settings, events)


def test_batch_publish_to_cluster_is_read_back(on_cluster: Workspace, clock: Clock) -> None:
    """``fraud-batch score --publish`` pushes through Feast (``store.push``) into the cluster."""
    day = (clock.now - timedelta(days=1)).date()
    out = on_cluster.python("-m", "batch", "score", "--date", str(day), "--publish")
    assert out.returncode == 0, out.stderr
    scored = pd.read_parquet(on_cluster.settings.data_dir / "scores" / f"date={day}")
    latest = scored.sort_values(["event_timestamp", "transaction_id"]).groupby("user_id").tail(1)
    users = [int(u) for u in latest.user_id[:200]]
    store = open_store(on_cluster.settings)
    got = store.get_online_features(
        features=[f"{BATCH_SCORE_VIEW}:score"], entity_rows=[{"user_id": u} for u in users]
    ).to_dict()
    want = latest.set_index("user_id").score
    assert len(users) >= 50
    assert got["score"] == [pytest.approx(float(want[u]), abs=0) for u in users]


def test_slot_migration_ask_then_moved_keeps_the_reader_equal(on_cluster: Workspace) -> None:
    settings = on_cluster.settings
    rows = _rows(on_cluster, 200, seed=11)
    want = _sdk(on_cluster, rows)
    layout = Layout(open_store(settings).config)
    slot = key_slot(layout.key("user_id", int(rows[0]["user_id"])))
    src = rc.slot_owner(settings, slot)
    dst = next(m for m in rc.masters(settings) if m.node_id != src.node_id)
    keys = rc.begin_migration(src, dst, slot)
    assert keys, "the slot holds the first row's user"
    rc.migrate_keys(src, dst, keys)  # all moved, slot still MIGRATING: src answers ASK
    with pytest.raises(redis.exceptions.AskError):
        src.client().execute_command("HGETALL", keys[0])
    _assert_same(on_cluster, _read(on_cluster, rows), want, len(rows))
    rc.finish_migration(settings, dst, slot)  # src now answers MOVED
    with pytest.raises(redis.exceptions.MovedError):
        src.client().execute_command("HGETALL", keys[0])
    _assert_same(on_cluster, _read(on_cluster, rows), want, len(rows))


@pytest.fixture
def api(on_cluster: Workspace) -> Iterator[TestClient]:
    """The app as ``python -m serving`` builds it, in process (its start-up is the slow part)."""
    with TestClient(create_app(on_cluster.settings_with(redis_timeout_ms=500))) as client:
        yield client


def _predict(api: TestClient, bodies: list[dict[str, Any]]) -> Response:
    return api.post("/v1/predict/batch?explain=true", json={"records": bodies})


def _answers(response: Response) -> list[tuple[Any, ...]]:
    """Score, features and missing ones per record (not the request id or the ages)."""
    results = response.json()["results"]
    return [(r["score"], r["features"], r["missing_features"]) for r in results]


def test_master_killed_503_then_same_answers_after_promotion(
    on_cluster: Workspace, api: TestClient
) -> None:
    settings = on_cluster.settings
    bodies = [dict(r) for r in _rows(on_cluster, 100, seed=5)]
    before = _predict(api, bodies)
    assert before.status_code == 200
    victim = rc.master_with_replica(settings)
    rc.kill(victim)
    try:
        during = _predict(api, bodies)  # every 100-row batch touches every master
        assert during.status_code == 503 and during.headers["Retry-After"] == "1"
        rc.wait_promoted(settings, victim)
        after, polls = _predict(api, bodies), 1
        while after.status_code == 503 and polls < 200:
            time.sleep(0.1)
            after, polls = _predict(api, bodies), polls + 1
        assert after.status_code == 200, after.text
        assert len(_answers(before)) == len(bodies)
        assert _answers(after) == _answers(before)
    finally:
        rc.revive(settings)
