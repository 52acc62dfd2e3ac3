"""Micro-batched writes of the fresh window aggregates to the Feast online store.

Each batch holds one row per user (its newest aggregates), written in Feast's Redis layout
(``core.redis_layout``) with the rule of ``RedisOnlineStore.online_write_batch``: a row whose
timestamp is not newer than the stored one is skipped, so a replay after a crash (or a late
materialisation) never overwrites a newer value. Not ``online_write_batch`` itself: it costs
a proto per value and Python packing per command (docs/performance.md, "Online store layout").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from feast import FeatureStore
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.types import Float64, Int64
from redis.cluster import RedisCluster

from core.aggregations import ENTITY_KEY
from core.contract import WINDOWS_VIEW
from core.redis_layout import (
    FAILOVER_WAIT_S,
    NULL,
    ClusterRouter,
    Layout,
    Router,
    float_bytes,
    int_bytes,
    pack,
    send,
    timestamp_bytes,
    timestamp_us,
)
from streaming.records import WindowRow

REPLICA_ACK_MS = 100  # each batch's writes reach a replica before the batch counts as done


def latest_per_user(rows: Sequence[WindowRow]) -> list[WindowRow]:
    """One row per user: its highest version."""
    newest: dict[int, WindowRow] = {}
    for row in rows:
        have = newest.get(row[0])
        if have is None or have[1] < row[1]:
            newest[row[0]] = row
    return list(newest.values())


class OnlineWriter:
    """Writes ``latest_per_user`` rows of the windows view into Feast's Redis layout."""

    def __init__(self, store: FeatureStore) -> None:
        config = store.config
        view = store.get_feature_view(WINDOWS_VIEW)
        self.layout = Layout(config)
        fields = self.layout.view(view)
        self.ts_field = fields.ts_field
        encoders: dict[Any, Callable[[Any], bytes]] = {Int64: int_bytes, Float64: float_bytes}
        self.features = [
            (f.name, field, encoders[f.dtype])
            for f, field in zip(view.features, fields.fields, strict=True)
        ]
        self.client = RedisOnlineStore()._get_client(config.online_store)
        self.router: Router[Any]
        self.write_router: Router[Any]
        if isinstance(self.client, RedisCluster):
            self.router = ClusterRouter(self.client, retry_s=FAILOVER_WAIT_S)
            self.write_router = ClusterRouter(self.client, FAILOVER_WAIT_S, REPLICA_ACK_MS)
        else:
            self.router = self.write_router = Router(self.client.connection_pool)
        self.key_ttl_s = config.online_store.key_ttl_seconds

    def write(self, rows: Sequence[WindowRow]) -> int:
        """Write the rows newer than what is stored; returns how many were written."""
        if not rows:
            return 0
        keys = [self.layout.key(ENTITY_KEY, user) for user, _, _ in rows]
        stored = send(self.router, keys, [pack(b"HMGET", k, self.ts_field) for k in keys])
        written: list[bytes] = []
        commands: list[bytes] = []
        for key, (_, version_us, aggs), (prev,) in zip(keys, rows, stored, strict=True):
            if prev and timestamp_us(prev) >= version_us:
                continue
            args: list[bytes] = [b"HSET", key, self.ts_field, timestamp_bytes(version_us)]
            for name, field, encode in self.features:
                value = aggs[name]
                args += (field, NULL if value is None else encode(value))
            written.append(key)
            commands.append(pack(*args))
        if self.key_ttl_s:
            commands += [pack(b"EXPIRE", key, self.key_ttl_s) for key in written]
            send(self.write_router, [*written, *written], commands)
        else:
            send(self.write_router, written, commands)
        return len(written)
