"""Feast's Redis online-store layout, and the pipelined round trip that reads and writes it.

One hash per entity key (Feast's serialised entity key + project) holds every view of that
entity: a field per feature (murmur3 of ``view:feature``) with a ``Value`` proto, and
``_ts:view`` with a ``Timestamp`` proto. Keys and fields come from Feast's own helpers;
values and timestamps are encoded here without building a proto per value
(docs/performance.md, "Online store layout"). tests/integration/test_redis_layout.py holds
the bytes equal to Feast's ``online_write_batch`` and the reads equal to ``online_read``.

Commands are packed once (hiredis, in C) or spliced from pre-packed parts, and sent as one
write with one reply read back per command. ``Router`` is the seam for more than one node:
it maps each key to the connection pool that serves it. ``Router`` is one standalone pool;
``ClusterRouter`` and ``AsyncClusterRouter`` route by hash slot with redis-py's slot map
(``redis.cluster``), send to every node concurrently, and follow MOVED and ASK replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Generic, TypeVar

import hiredis
import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.cluster
from feast import FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.redis import RedisOnlineStore, _versioned_fv_name
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig
from feast.type_map import feast_value_type_to_python_type
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)

NULL = ValueProto().SerializeToString()  # what Feast stores for a missing value
_SCALARS = frozenset(
    {"int64_val", "int32_val", "double_val", "float_val", "string_val", "bool_val"}
)

Reply = Any  # a decoded RESP reply: a list of field values for HMGET, an int for HSET/EXPIRE
PoolT = TypeVar("PoolT")
T = TypeVar("T")


@dataclass(frozen=True)
class ViewFields:
    """One view's hash fields: the (possibly versioned) name, features and their fields."""

    name: str
    features: tuple[str, ...]
    fields: tuple[bytes, ...]  # one per feature, in ``features`` order
    ts_field: bytes  # ``_ts:<name>``


class Layout:
    """Feast's key and field layout for one repo config (project, key version, versioning)."""

    def __init__(self, config: RepoConfig) -> None:
        self.config = config
        self.project = config.project.encode()
        self.version = config.entity_key_serialization_version

    def key(self, join_key: str, value: int) -> bytes:
        """The Redis key of one int64 entity (``feast.infra.online_stores.helpers._redis_key``)."""
        return _entity_key(join_key, value, self.version, self.project)

    def view(self, view: FeatureView, features: Sequence[str] | None = None) -> ViewFields:
        """The hash fields of ``features`` (default: all) of ``view``, hashed by Feast itself."""
        name = _versioned_fv_name(view, self.config)
        wanted = list(features) if features is not None else [f.name for f in view.features]
        _, fields = RedisOnlineStore()._generate_hset_keys_for_features(
            view, list(wanted), fv_name_override=name
        )
        encoded = [f.encode() if isinstance(f, str) else f for f in fields]
        return ViewFields(name, tuple(wanted), tuple(encoded[:-1]), encoded[-1])


@lru_cache(maxsize=1 << 17)
def _entity_key(join_key: str, value: int, version: int, project: bytes) -> bytes:
    """Cached: hot entities repeat, and Feast's serialisation is slow (docs/performance.md)."""
    proto = EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(int64_val=value)])
    return serialize_entity_key(proto, version) + project


# -- values and timestamps ---------------------------------------------------------------


@lru_cache(maxsize=1 << 10)
def int_bytes(value: int) -> bytes:
    """An int64 ``Value`` proto; counts repeat a lot, so cached."""
    return ValueProto(int64_val=value).SerializeToString()


def float_bytes(value: float) -> bytes:
    return ValueProto(double_val=value).SerializeToString()


def decode_value(raw: bytes | None, vtype: ValueType) -> Any:
    """Feast's decoding; scalars take its first step only (the rest is for other types)."""
    if not raw:
        return None
    value = ValueProto.FromString(raw)
    kind = value.WhichOneof("val")
    if kind in _SCALARS:
        return getattr(value, kind)
    return feast_value_type_to_python_type(value, vtype)


def timestamp_bytes(epoch_us: int) -> bytes:
    seconds, micros = divmod(epoch_us, 1_000_000)
    return Timestamp(seconds=seconds, nanos=micros * 1000).SerializeToString()


def timestamp_us(raw: bytes) -> int:
    """A stored ``_ts`` field in epoch microseconds (exact, for the skip-if-not-newer rule)."""
    ts = Timestamp.FromString(raw)
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def timestamp_s(raw: bytes | None) -> float | None:
    """A stored ``_ts`` field in epoch seconds; None when the entity has no row."""
    if not raw:
        return None
    ts = Timestamp.FromString(raw)
    return ts.seconds + ts.nanos / 1e9


# -- commands ------------------------------------------------------------------------------


def pack(*args: bytes | int) -> bytes:
    """One command in RESP, packed in C (redis-py packs in Python: docs/performance.md)."""
    return hiredis.pack_command(args)  # type: ignore[arg-type]  # the stub says a 1-tuple


def hmget_parts(fields: Sequence[bytes]) -> tuple[bytes, bytes]:
    """``HMGET key *fields`` in RESP less the key, for ``splice_hmgets``: fields are packed once."""
    head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2)
    return head, b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in fields)


def splice_hmgets(parts: tuple[bytes, bytes], keys: Sequence[bytes]) -> list[bytes]:
    """The packed HMGET of each key: cheaper than packing each (docs/performance.md)."""
    head, tail = parts
    return [b"%s$%d\r\n%s\r\n%s" % (head, len(key), key, tail) for key in keys]


# -- routing and the round trip --------------------------------------------------------------


class Router(Generic[PoolT]):
    """Maps keys to the pool that serves them: the one seam a Redis Cluster router replaces."""

    def __init__(self, pool: PoolT) -> None:
        self.pool = pool

    def route(self, keys: Sequence[bytes]) -> dict[PoolT, Sequence[int]]:
        """Pool -> indices of the keys it serves; standalone, every key goes to the one pool."""
        return {self.pool: range(len(keys))}


def send(
    router: Router[redis.ConnectionPool], keys: Sequence[bytes], commands: list[bytes]
) -> list[Reply]:
    """Run ``commands[i]`` (on ``keys[i]``) pipelined: one write and one reply each, per pool."""
    if not commands:
        return []
    if isinstance(router, ClusterRouter):
        return router.send(keys, commands)
    routes = router.route(keys)
    if len(routes) == 1:
        (pool,) = routes
        return _round_trip(pool, commands)
    answers = [_round_trip(pool, [commands[i] for i in idx]) for pool, idx in routes.items()]
    return _in_key_order(len(commands), list(routes.values()), answers)


def _in_key_order(
    n: int, routes: Sequence[Sequence[int]], answers: Sequence[list[Reply]]
) -> list[Reply]:
    """The per-pool answers put back in the order of the keys they were routed from."""
    replies: list[Reply] = [None] * n
    for indices, answer in zip(routes, answers, strict=True):
        for i, reply in zip(indices, answer, strict=True):
            replies[i] = reply
    return replies


def _round_trip(pool: redis.ConnectionPool, commands: list[bytes]) -> list[Reply]:
    conn = pool.get_connection()
    try:
        conn.send_packed_command([b"".join(commands)])
        return [conn.read_response() for _ in commands]
    except BaseException:
        conn.disconnect()  # a half-read connection must not go back to the pool
        raise
    finally:
        pool.release(conn)


async def send_async(
    router: Router[Any], keys: Sequence[bytes], commands: list[bytes]
) -> list[Reply]:
    """``send`` on asyncio; pools are read concurrently."""
    if not commands:
        return []
    if isinstance(router, AsyncClusterRouter):
        return await router.send(keys, commands)
    routes = router.route(keys)
    if len(routes) == 1:
        (pool,) = routes
        return await _round_trip_async(pool, commands)
    answers = await asyncio.gather(
        *(_round_trip_async(pool, [commands[i] for i in idx]) for pool, idx in routes.items())
    )
    return _in_key_order(len(commands), list(routes.values()), answers)


async def _round_trip_async(pool: aioredis.ConnectionPool, commands: list[bytes]) -> list[Reply]:
    conn = await pool.get_connection()
    try:
        await conn.send_packed_command(b"".join(commands))
        return [await conn.read_response() for _ in commands]
    except BaseException:
        await conn.disconnect()  # a half-read connection must not go back to the pool
        raise
    finally:
        await pool.release(conn)


def router_for(client: Any) -> Router[Any]:
    """The router for a redis-py client: by hash slot on a cluster, else its one pool."""
    if isinstance(client, aioredis.RedisCluster):
        return AsyncClusterRouter(client)
    if isinstance(client, redis.cluster.RedisCluster):
        return ClusterRouter(client)
    return Router(client.connection_pool)


# -- Redis Cluster ---------------------------------------------------------------------------

# A failover promotes a replica in about cluster-node-timeout (15 s in production): the
# stream's writes and profile reads wait that out (they are idempotent) instead of failing.
FAILOVER_WAIT_S = 60.0
MAX_PASSES = 8  # passes per request to follow MOVED/ASK/TRYAGAIN before giving up
REFRESH_EVERY_S = 0.25  # a failing node refreshes the slot map at most this often
ASKING = b"*1\r\n$6\r\nASKING\r\n"
# A node or slot that cannot answer now (down, failing over, slot not covered yet).
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, ClusterDownError, RedisClusterException)


def until_reachable(call: Callable[[], T], retry_s: float, pause_s: float = 0.2) -> T:
    """``call()``, again while the cluster cannot answer (a failover), for up to ``retry_s``."""
    deadline = time.monotonic() + retry_s
    while True:
        try:
            return call()
        except UNREACHABLE:
            if time.monotonic() >= deadline:
                raise
            time.sleep(pause_s)


class TooManyRedirects(redis.RedisError):
    """Keys kept moving for ``MAX_PASSES`` passes (a resharding storm)."""


@dataclass
class _Pass:
    """What one pass over the nodes left to resend: MOVED (the slot map is stale), ASK
    (resend to the importing node, after ASKING) and TRYAGAIN (resend)."""

    redo: list[int] = field(default_factory=list)
    ask: dict[int, tuple[str, int]] = field(default_factory=dict)
    moved: bool = False

    def settle(self, indices: Sequence[int], answer: list[Reply], replies: list[Reply]) -> None:
        for i, reply in zip(indices, answer, strict=True):
            if not isinstance(reply, ResponseError):
                replies[i] = reply
            elif isinstance(reply, MovedError):  # a subclass of AskError: test it first
                self.moved = True
                self.redo.append(i)
            elif isinstance(reply, AskError):
                self.ask[i] = reply.node_addr
                self.redo.append(i)
            elif isinstance(reply, TryAgainError):
                self.redo.append(i)
            else:
                raise reply  # CLUSTERDOWN, WRONGTYPE, NOPERM...: not a redirect


class _SlotRoutes(Generic[PoolT]):
    """Grouping by the node that serves each key's slot (or that an ASK named)."""

    def node_for(self, key: bytes) -> PoolT:
        raise NotImplementedError

    def node_at(self, host: str, port: int) -> PoolT:
        raise NotImplementedError

    def route(self, keys: Sequence[bytes]) -> dict[PoolT, Sequence[int]]:
        routes: dict[PoolT, list[int]] = {}
        for i, key in enumerate(keys):
            routes.setdefault(self.node_for(key), []).append(i)
        return dict(routes)

    def groups(
        self, keys: Sequence[bytes], todo: Sequence[int], ask: dict[int, tuple[str, int]]
    ) -> dict[tuple[PoolT, bool], list[int]]:
        """(node, with ASKING) -> indices of ``todo``."""
        out: dict[tuple[PoolT, bool], list[int]] = {}
        for i in todo:
            addr = ask.get(i)
            node = self.node_for(keys[i]) if addr is None else self.node_at(*addr)
            out.setdefault((node, addr is not None), []).append(i)
        return out


def _asked(commands: list[bytes], asking: bool) -> bytes:
    return b"".join(ASKING + c for c in commands) if asking else b"".join(commands)


class ClusterRouter(_SlotRoutes[redis.ConnectionPool], Router[redis.ConnectionPool]):
    """Keys to the master of their hash slot, from a ``redis.cluster.RedisCluster``'s slot map.

    ``retry_s`` > 0 (the stream's writer) keeps retrying an unreachable node, refreshing the
    map, until then: a failover promotes the replica in about cluster-node-timeout. With
    ``replica_ack_ms``, each node's pipeline ends with ``WAIT 1 <ms>``: replication is
    asynchronous, and a write only the dying master held would be lost in a failover."""

    def __init__(
        self,
        client: redis.cluster.RedisCluster,
        retry_s: float = 0.0,
        replica_ack_ms: int | None = None,
    ) -> None:
        self.client = client
        self.retry_s = retry_s
        self._wait = None if replica_ack_ms is None else pack(b"WAIT", 1, replica_ack_ms)
        self._refreshed = 0.0

    def node_for(self, key: bytes) -> redis.ConnectionPool:
        node = self.client.nodes_manager.get_node_from_slot(key_slot(key))
        return node.redis_connection.connection_pool

    def node_at(self, host: str, port: int) -> redis.ConnectionPool:
        node = self.client.nodes_manager.get_node(host, port)
        if node is None or node.redis_connection is None:
            raise RedisClusterException(f"ASK to {host}:{port}, a node not in the slot map")
        return node.redis_connection.connection_pool

    def refresh(self, force: bool = True) -> None:
        if force or time.monotonic() - self._refreshed > REFRESH_EVERY_S:
            self._refreshed = time.monotonic()
            self.client.nodes_manager.initialize()

    def send(self, keys: Sequence[bytes], commands: list[bytes]) -> list[Reply]:
        deadline = time.monotonic() + self.retry_s
        while True:
            try:
                return self._send(keys, commands)
            except UNREACHABLE:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
                with contextlib.suppress(*UNREACHABLE):  # no node answers yet: try again
                    self.refresh(force=False)

    def _send(self, keys: Sequence[bytes], commands: list[bytes]) -> list[Reply]:
        replies: list[Reply] = [None] * len(commands)
        todo: Sequence[int] = range(len(commands))
        ask: dict[int, tuple[str, int]] = {}
        for _ in range(MAX_PASSES):
            done = _Pass()
            for (pool, asking), idx in self.groups(keys, todo, ask).items():
                answer = _cluster_round_trip(pool, [commands[i] for i in idx], asking, self._wait)
                done.settle(idx, answer, replies)
            if done.moved:
                self.refresh()
            if not done.redo:
                return replies
            todo, ask = done.redo, done.ask
        raise TooManyRedirects(f"keys still redirected after {MAX_PASSES} passes")


def _cluster_round_trip(
    pool: redis.ConnectionPool, commands: list[bytes], asking: bool, wait: bytes | None = None
) -> list[Reply]:
    """``_round_trip`` that returns error replies (MOVED, ASK...) instead of raising them,
    then sends ``wait`` (a WAIT for the replica) if given."""
    conn = pool.get_connection()
    try:
        conn.send_packed_command([_asked(commands, asking) + (wait or b"")])
        answer: list[Reply] = []
        for _ in commands:
            if asking:
                conn.read_response()
            try:
                answer.append(conn.read_response())
            except ResponseError as exc:  # the reply was read whole: the stream stays in step
                answer.append(exc)
        if wait:
            conn.read_response()  # replicas that acknowledged: 0 if none left, go on anyway
        return answer
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


class AsyncClusterRouter(_SlotRoutes[aiocluster.ClusterNode], Router[aiocluster.ClusterNode]):
    """``ClusterRouter`` on asyncio (the API): never retries an unreachable node, so a read
    fails fast (503) while a failover runs; the slot map is refreshed in the background."""

    def __init__(self, client: aioredis.RedisCluster) -> None:
        self.client = client
        self._refreshed = 0.0
        self._refreshing: asyncio.Task[None] | None = None

    def node_for(self, key: bytes) -> aiocluster.ClusterNode:
        return self.client.nodes_manager.get_node_from_slot(key_slot(key))

    def node_at(self, host: str, port: int) -> aiocluster.ClusterNode:
        node = self.client.nodes_manager.get_node(host, port)
        if node is None:
            raise RedisClusterException(f"ASK to {host}:{port}, a node not in the slot map")
        return node

    async def refresh(self, timeout_s: float = 1.0) -> None:
        self._refreshed = time.monotonic()
        await asyncio.wait_for(self.client.nodes_manager.initialize(), timeout_s)

    def refresh_soon(self) -> None:
        """One background refresh at a time, at most every ``REFRESH_EVERY_S``."""
        busy = self._refreshing is not None and not self._refreshing.done()
        if busy or time.monotonic() - self._refreshed < REFRESH_EVERY_S:
            return
        self._refreshed = time.monotonic()
        self._refreshing = asyncio.get_running_loop().create_task(self._quiet_refresh())

    async def _quiet_refresh(self) -> None:
        """Reload the map only once a live node's CLUSTER SLOTS disagrees with it: redis-py
        rebuilds every node (and drops every connection) on a reload, and concurrent reads
        reconnecting at once time out (seen as ~1 s of 503s per reload under load)."""
        try:
            if await self._map_changed():
                await self.refresh()
        except (*UNREACHABLE, asyncio.TimeoutError):
            pass  # the next failing read asks again

    async def _map_changed(self, timeout_s: float = 0.5) -> bool:
        manager = self.client.nodes_manager
        for node in list(manager.nodes_cache.values()):
            try:
                slots = await asyncio.wait_for(node.execute_command("CLUSTER SLOTS"), timeout_s)
            except (*UNREACHABLE, ResponseError, asyncio.TimeoutError):
                continue  # ask the next node
            for start, _end, primary, *_ in slots:
                host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
                have = manager.slots_cache.get(int(start))
                if not have or have[0].name != f"{host or node.host}:{int(primary[1])}":
                    return True
            return False
        return True  # no node answered: let redis-py try its startup nodes

    async def send(self, keys: Sequence[bytes], commands: list[bytes]) -> list[Reply]:
        if self.client._initialize:  # first use: load the slot map
            await self.client.initialize()
        try:
            return await self._send(keys, commands)
        except UNREACHABLE:
            self.refresh_soon()
            raise

    async def _send(self, keys: Sequence[bytes], commands: list[bytes]) -> list[Reply]:
        replies: list[Reply] = [None] * len(commands)
        todo: Sequence[int] = range(len(commands))
        ask: dict[int, tuple[str, int]] = {}
        for _ in range(MAX_PASSES):
            done = _Pass()
            groups = self.groups(keys, todo, ask)
            answers = await asyncio.gather(
                *(
                    _cluster_round_trip_async(node, [commands[i] for i in idx], asking)
                    for (node, asking), idx in groups.items()
                )
            )
            for idx, answer in zip(groups.values(), answers, strict=True):
                done.settle(idx, answer, replies)
            if done.moved:
                await self.refresh()
            if not done.redo:
                return replies
            todo, ask = done.redo, done.ask
        raise TooManyRedirects(f"keys still redirected after {MAX_PASSES} passes")


async def _cluster_round_trip_async(
    node: aiocluster.ClusterNode, commands: list[bytes], asking: bool
) -> list[Reply]:
    conn = node.acquire_connection()
    try:
        await conn.send_packed_command(_asked(commands, asking))
        answer: list[Reply] = []
        for _ in commands:
            if asking:
                await conn.read_response()
            try:
                answer.append(await conn.read_response())
            except ResponseError as exc:  # the reply was read whole: the stream stays in step
                answer.append(exc)
        return answer
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        node.release(conn)
