"""Feast's Redis online-store layout, and the pipelined round trip that reads and writes it.

One hash per entity key (Feast's serialised entity key + project) holds every view of that
entity: a field per feature (murmur3 of ``view:feature``) with a ``Value`` proto, and
``_ts:view`` with a ``Timestamp`` proto. Keys and fields come from Feast's own helpers;
values and timestamps are encoded here without building a proto per value
(docs/performance.md, "Online store layout"). tests/integration/test_redis_layout.py holds
the bytes equal to Feast's ``online_write_batch`` and the reads equal to ``online_read``.

Commands are packed once (hiredis, in C) or spliced from pre-packed parts, and sent as one
write with one reply read back per command. ``Router`` is the seam for more than one node:
it maps each key to the connection pool that serves it (today, one standalone pool).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar

import hiredis
import redis
import redis.asyncio as aioredis
from feast import FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.redis import RedisOnlineStore, _versioned_fv_name
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig
from feast.type_map import feast_value_type_to_python_type
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

NULL = ValueProto().SerializeToString()  # what Feast stores for a missing value
_SCALARS = frozenset(
    {"int64_val", "int32_val", "double_val", "float_val", "string_val", "bool_val"}
)

Reply = Any  # a decoded RESP reply: a list of field values for HMGET, an int for HSET/EXPIRE
PoolT = TypeVar("PoolT")


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
    router: Router[aioredis.ConnectionPool], keys: Sequence[bytes], commands: list[bytes]
) -> list[Reply]:
    """``send`` on asyncio; pools are read concurrently."""
    if not commands:
        return []
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
