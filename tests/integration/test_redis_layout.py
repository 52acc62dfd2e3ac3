"""Feast's Redis layout, held byte-equal to Feast: our writer's hashes are the ones Feast's
``online_write_batch`` writes, and our reader returns what ``online_read`` and
``get_online_features`` return (values and timestamps), on the real Redis and registry."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd
import pytest
import redis
import redis.asyncio as aioredis
from feast import FeatureStore, FeatureView
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.types import Int64

from core import redis_url
from core.aggregations import ENTITY_KEY
from core.contract import REQUEST_FIELDS, WINDOWS_VIEW, feature_order
from core.redis_layout import Layout, Router, pack, send, send_async
from core.redis_url import sync_client
from core.store import feature_service, open_store
from serving.online import OnlineFeatureReader, OnlineRead, RequestRow, redis_client
from streaming.online import OnlineWriter
from streaming.records import WindowRow
from tests.conftest import Stack

pytestmark = pytest.mark.integration

FIRST_USER = 10**12  # far above the generated users: these keys are this test's own
T0_US = 1_764_000_000_123_456
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _rows(view: FeatureView, n: int, version_us: int) -> list[WindowRow]:
    def value(i: int, f: int, is_int: bool) -> int | float | None:
        if (i + f) % 7 == 0:
            return None  # a window with nothing in it
        return i * 10 + f if is_int else (i + f) / 3

    features = [(f.name, f.dtype == Int64) for f in view.features]
    return [
        (
            FIRST_USER + i,
            version_us + i,
            {name: value(i, j, is_int) for j, (name, is_int) in enumerate(features)},
        )
        for i in range(n)
    ]


def _feast_write(store: FeatureStore, view: FeatureView, rows: list[WindowRow]) -> None:
    def proto(value: int | float | None, is_int: bool) -> ValueProto:
        if value is None:
            return ValueProto()
        return ValueProto(int64_val=int(value)) if is_int else ValueProto(double_val=value)

    dtypes = {f.name: f.dtype == Int64 for f in view.features}
    no_created: datetime | None = None
    data = [
        (
            EntityKeyProto(join_keys=[ENTITY_KEY], entity_values=[ValueProto(int64_val=user)]),
            {name: proto(v, dtypes[name]) for name, v in aggs.items()},
            EPOCH + timedelta(microseconds=version_us),
            no_created,
        )
        for user, version_us, aggs in rows
    ]
    RedisOnlineStore().online_write_batch(store.config, view, data, None)


def _hashes(store: FeatureStore, stack: Stack, users: list[int]) -> list[Any]:
    """Each key's raw hash and whether it expires, read back and deleted."""
    layout = Layout(store.config)
    client = sync_client(stack.settings.redis_connection_string)
    keys = [layout.key(ENTITY_KEY, u) for u in users]
    try:
        pipe = client.pipeline()
        for key in keys:
            pipe.execute_command("HGETALL", key)
            pipe.execute_command("TTL", key)
        replies = pipe.execute()
        return [(replies[i], replies[i + 1] > 0) for i in range(0, len(replies), 2)]
    finally:
        client.delete(*keys)
        client.close()


def test_writer_hashes_equal_feast_online_write_batch(stack: Stack) -> None:
    store = open_store(stack.settings)
    view = store.get_feature_view(WINDOWS_VIEW)
    rows = _rows(view, 40, T0_US)
    users = [user for user, _, _ in rows]
    older = [(u, v - 1, aggs) for u, v, aggs in rows[:10]]  # not newer: both must skip
    newer = [(u, v + 5_000_000, aggs | {"txn_count_1h": 99}) for u, v, aggs in rows[10:20]]
    _feast_write(store, view, rows)
    for batch in (older, rows[:5], newer):
        _feast_write(store, view, batch)
    feast = _hashes(store, stack, users)
    writer = OnlineWriter(store)
    assert writer.write(rows) == len(rows)
    assert writer.write(older) == 0 and writer.write(rows[:5]) == 0
    assert writer.write(newer) == len(newer)
    ours = _hashes(store, stack, users)
    assert len(ours) == len(feast) == 40 and all(h for h, _ in feast)
    assert ours == feast


def test_reader_equals_feast_online_read_and_sdk(materialized: Stack) -> None:
    store = open_store(materialized.settings)
    service = feature_service(store)
    tx = pd.read_parquet(materialized.settings.data_dir / "transactions.parquet")
    sample = tx.sample(300, random_state=4)
    rows: list[RequestRow] = [
        {str(k): v for k, v in r.items()}
        for r in sample[["user_id", "merchant_id", *REQUEST_FIELDS]].to_dict("records")
    ]
    rows += [rows[0] | {"user_id": 10**15}, rows[1] | {"merchant_id": 10**15}]
    expected = store.get_online_features(features=service, entity_rows=rows).to_dict()

    async def read() -> Any:
        client = redis_client(materialized.settings.redis_connection_string, 1.0)
        try:
            reader = OnlineFeatureReader(store, service, client)
            return reader, await reader.read(rows, timeout_s=5.0)
        finally:
            await client.aclose()

    reader, got = asyncio.run(read())
    order = feature_order(service)
    assert len(order) > 5 and len(got.columns[order[0]]) == len(rows)
    for name in order:
        assert got.columns[name] == expected[name], name
    assert len(reader.plans) >= 2
    for plan in reader.plans:
        _assert_equals_online_read(store, plan, rows, got)


def _assert_equals_online_read(
    store: FeatureStore, plan: Any, rows: list[RequestRow], got: OnlineRead
) -> None:
    view_name, join_key = plan.name, plan.join_key
    view = store.get_feature_view(view_name)
    keys = [
        EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(int64_val=r[join_key])])
        for r in rows
    ]
    feast = RedisOnlineStore().online_read(store.config, view, keys, list(plan.features))
    want_ts = [None if ts is None else ts.timestamp() for ts, _ in feast]
    got_ts = got.timestamps[view_name]
    assert sum(bool(t) for t in want_ts) >= len(rows) - 2, view_name
    # Feast says the epoch for a missing entity, we say None; its datetime holds microseconds
    assert [t or 0.0 for t in got_ts] == pytest.approx([t or 0.0 for t in want_ts], abs=1e-6)
    compared = 0
    for r, (_, values) in enumerate(feast):
        for feature, value in (values or {}).items():
            kind = value.WhichOneof("val")
            assert got.columns[feature][r] == (getattr(value, kind) if kind else None), feature
            compared += 1
    assert compared >= len(rows) - 2, view_name


class _SplitRouter(Router[Any]):
    """Even keys to one pool, odd keys to another: the many-node path a cluster router takes."""

    def __init__(self, even: Any, odd: Any) -> None:
        super().__init__(even)
        self.odd = odd

    def route(self, keys: Sequence[bytes]) -> dict[Any, Sequence[int]]:
        return {self.pool: range(0, len(keys), 2), self.odd: range(1, len(keys), 2)}


def test_a_read_routed_to_several_pools_answers_in_key_order(ready: Stack) -> None:
    url = redis_url.parse(ready.settings.redis_connection_string)
    keys = [b"layout-route-%d" % i for i in range(7)]
    client = sync_client(ready.settings.redis_connection_string)
    client.delete(*keys)
    writes = [pack(b"SET", k, b"v%d" % i) for i, k in enumerate(keys)]
    reads = [pack(b"GET", k) for k in keys]
    split = _SplitRouter(
        *(redis.ConnectionPool(host=url.host, port=url.port, **url.params) for _ in range(2))
    )
    assert send(split, keys, writes) == [b"OK"] * 7
    assert send(split, keys, reads) == [b"v%d" % i for i in range(7)]

    async def read_async() -> list[Any]:
        pools = [
            aioredis.ConnectionPool(host=url.host, port=url.port, **url.params) for _ in range(2)
        ]
        try:
            return await send_async(_SplitRouter(*pools), keys, reads)
        finally:
            for pool in pools:
                await pool.disconnect()

    assert asyncio.run(read_async()) == [b"v%d" % i for i in range(7)]
    client.delete(*keys)
