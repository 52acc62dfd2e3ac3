"""Reading the FeatureService from the Redis online store in one pipelined round trip.

Not ``store.get_online_features``: its per-call Python cost and lack of a per-request bound
(docs/performance.md, "Online reads"). This reader uses Feast's layout (``core.redis_layout``)
and the registry's on-demand transformation, so it returns what the SDK returns (a test
holds the two equal), plus each view's event timestamp, which the SDK's dict omits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from feast import FeatureService, FeatureStore
from feast.value_type import ValueType
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError

from core.plan import StoredRead, plan_service
from core.redis_layout import (
    Layout,
    decode_value,
    hmget_parts,
    router_for,
    send_async,
    splice_hmgets,
    timestamp_s,
)
from core.redis_url import parse

RequestRow = dict[str, Any]  # one request record: entity keys and request fields by name


class OnlineStoreUnavailable(Exception):
    """Redis did not answer within the configured bound (down, slow or refusing)."""


class OnlineStoreRefused(OnlineStoreUnavailable):
    """Redis answered but refused the credentials or a command: a configuration error."""


def _unavailable(exc: Exception) -> OnlineStoreUnavailable:
    refused = isinstance(exc, AuthenticationError | NoPermissionError)
    return (OnlineStoreRefused if refused else OnlineStoreUnavailable)(
        f"{type(exc).__name__}: {exc}"
    )


@dataclass(frozen=True)
class _ViewPlan:
    """What to HMGET for one feature view, and how to decode it."""

    name: str  # the (possibly versioned) name the online store keys by
    join_key: str
    features: tuple[str, ...]
    value_types: list[ValueType]
    fields: list[bytes]  # hashed feature fields, then the view's timestamp field
    max_age_s: float | None


@dataclass
class OnlineRead:
    """Feature columns (Feast's ``to_dict`` shape) plus each view's value timestamps."""

    columns: dict[str, list[Any]]
    timestamps: dict[str, list[float | None]]  # view -> epoch seconds per row (None: absent)
    stale: list[set[str]]  # per row: features nulled for being older than their view allows


def redis_client(
    connection_string: str, timeout_s: float, redis_type: str = "redis"
) -> aioredis.Redis | aioredis.RedisCluster:
    """An asyncio client parsed exactly as Feast parses its connection string.

    Never retried, so an outage surfaces as a fast error; broken connections are dropped
    from the pool and redialled on next use. Each call is bounded as a whole by the reader
    (``_bounded``), not per reply: redis-py arms one timer per reply. With ``redis_cluster``
    the nodes are startup nodes, as in Feast; the reader routes by slot (``core.redis_layout``).
    """
    target = parse(connection_string)
    params = target.params | {"socket_timeout": None, "socket_connect_timeout": timeout_s}
    if redis_type == "redis_cluster":
        nodes = [ClusterNode(host, port) for host, port in target.nodes]
        return aioredis.RedisCluster(startup_nodes=nodes, **params, retry=Retry(NoBackoff(), 0))
    return aioredis.Redis(host=target.host, port=target.port, **params, retry=Retry(NoBackoff(), 0))


class OnlineFeatureReader:
    """Reads one FeatureService for many rows with a single Redis pipeline."""

    def __init__(
        self,
        store: FeatureStore,
        service: FeatureService,
        client: aioredis.Redis | aioredis.RedisCluster,
        max_age_s: dict[str, float] | None = None,
    ) -> None:
        self._client = client
        self._router = router_for(client)
        self._layout = Layout(store.config)
        plan = plan_service(store, service)
        self._odfvs = [(read.view, read.outputs) for read in plan.on_demand]
        self._request_fields = plan.request_fields
        self.plans = [self._plan(read, (max_age_s or {}).get(read.name)) for read in plan.stored]
        # Feast keeps every view of one entity in one Redis hash: one HMGET per entity key.
        self._groups: dict[str, list[_ViewPlan]] = {}
        for view_plan in self.plans:
            self._groups.setdefault(view_plan.join_key, []).append(view_plan)
        self._hmget = {
            key: hmget_parts([f for p in plans for f in p.fields])
            for key, plans in self._groups.items()
        }

    def _plan(self, read: StoredRead, max_age: float | None) -> _ViewPlan:
        fields = self._layout.view(read.view, read.features)
        dtypes = {f.name: f.dtype for f in read.view.features}
        ttl = read.view.ttl.total_seconds() if read.view.ttl else None
        return _ViewPlan(
            name=fields.name,
            join_key=read.join_key,
            features=fields.features,
            value_types=[dtypes[name].to_value_type() for name in fields.features],
            fields=[*fields.fields, fields.ts_field],
            max_age_s=max_age if max_age is not None else ttl,
        )

    async def read(
        self, rows: Sequence[RequestRow], timeout_s: float, now: float | None = None
    ) -> OnlineRead:
        """Features for every row (entity keys plus request fields), in row order.

        With ``now``, values older than their view's maximum age read as missing (Feast
        does not enforce a view's TTL on online reads); without it, this is the SDK's answer.
        """
        keys: list[bytes] = []
        commands: list[bytes] = []
        for join_key, parts in self._hmget.items():
            group = [self._layout.key(join_key, row[join_key]) for row in rows]
            keys += group
            commands += splice_hmgets(parts, group)
        try:
            replies = await _bounded(send_async(self._router, keys, commands), timeout_s)
        except OnlineStoreUnavailable:
            raise
        except Exception as exc:  # redis raises several connection/timeout/auth errors
            raise _unavailable(exc) from exc
        read = OnlineRead(columns={}, timestamps={}, stale=[set() for _ in rows])
        for plan, block in self._blocks(replies, len(rows)):
            self._decode(plan, block, now, read)
        for odfv, outputs in self._odfvs:
            inputs = dict(read.columns)
            for name in self._request_fields:
                inputs[name] = [row[name] for row in rows]
            transformation = odfv.feature_transformation
            assert transformation is not None, f"{odfv.name} has no transformation"
            result = transformation.transform(inputs)
            for name in outputs:
                read.columns[name] = list(result[name])
        return read

    def _blocks(
        self, replies: list[list[bytes | None]], n: int
    ) -> list[tuple[_ViewPlan, list[list[bytes | None]]]]:
        """Each view's slice of the HMGET replies (its fields of each row's hash), in plan order."""
        blocks = {}
        for g, plans in enumerate(self._groups.values()):
            start = 0
            for plan in plans:
                end = start + len(plan.fields)
                blocks[plan.name] = [reply[start:end] for reply in replies[g * n : (g + 1) * n]]
                start = end
        return [(plan, blocks[plan.name]) for plan in self.plans]

    @staticmethod
    def _decode(
        plan: _ViewPlan, block: list[list[bytes | None]], now: float | None, read: OnlineRead
    ) -> None:
        ts = [timestamp_s(reply[-1]) for reply in block]
        read.timestamps[plan.name] = ts
        too_old = [
            now is not None
            and plan.max_age_s is not None
            and t is not None
            and now - t > plan.max_age_s
            for t in ts
        ]
        for j, (name, vtype) in enumerate(zip(plan.features, plan.value_types, strict=True)):
            read.columns[name] = [
                None if old else decode_value(reply[j], vtype)
                for reply, old in zip(block, too_old, strict=True)
            ]
        for r, old in enumerate(too_old):
            if old:
                read.stale[r].update(plan.features)

    async def ping(self, timeout_s: float) -> None:
        try:
            await _bounded(self._client.ping(), timeout_s)
        except OnlineStoreUnavailable:
            raise
        except Exception as exc:
            raise _unavailable(exc) from exc


async def _bounded(awaitable: Any, timeout_s: float) -> Any:
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except asyncio.TimeoutError as exc:
        raise OnlineStoreUnavailable(f"no answer within {timeout_s * 1000:.0f} ms") from exc
