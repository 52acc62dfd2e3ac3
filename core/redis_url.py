"""Feast's Redis connection string: ``host:port[,...][,password=..][,db=N][,ssl=true]...``.

The one parser: it reads the string as ``RedisOnlineStore._parse_connection_string`` does
(tests/unit/test_redis_url.py holds the two equal), so the API, the tools, devservices and
the tests reach the same database with the same credentials, and none prints a password.
It does not import Feast: devservices and every `make` target import it, and Feast costs seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from core.cli import UserError

DEFAULT_PORT = 6379


@dataclass(frozen=True)
class RedisTarget:
    """The nodes (host, port) and the client keyword arguments, as Feast hands them to redis-py."""

    nodes: tuple[tuple[str, int], ...]
    params: dict[str, Any]

    @property
    def host(self) -> str:
        return self.nodes[0][0]

    @property
    def port(self) -> int:
        return self.nodes[0][1]

    @property
    def address(self) -> str:
        return ",".join(f"{host}:{port}" for host, port in self.nodes)


def _parts(connection_string: str) -> list[tuple[str | None, str]]:
    """(key, raw value) per comma part; key None for a node. Feast reads the parts in any order."""
    parts: list[tuple[str | None, str]] = []
    for part in connection_string.split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            parts.append((key, value))
        elif part:
            parts.append((None, part))
    return parts


def _node(text: str) -> tuple[str, int]:
    host, *rest = text.split(":")  # as Feast: anything after a second colon is ignored
    if not rest or not rest[0]:  # Feast fails without a port: take redis-py's default
        return host, DEFAULT_PORT
    try:
        return host, int(rest[0])
    except ValueError:
        raise UserError(f"bad port in {text!r} in the Redis connection string") from None


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)  # as Feast: "db=3" is 3, "ssl=true" is True
    except json.JSONDecodeError:
        return raw


def parse(connection_string: str) -> RedisTarget:
    """The nodes and client arguments Feast's RedisOnlineStore would use."""
    parts = _parts(connection_string)
    nodes = tuple(_node(value) for key, value in parts if key is None)
    params = {key: _value(value) for key, value in parts if key is not None}
    if not nodes:
        raise UserError(f"no host:port in the Redis connection string ({_as_whom(params)})")
    if not isinstance(params.get("db", 0), int):
        raise UserError(f"bad db={params['db']!r} in the Redis connection string")
    return RedisTarget(nodes, params)


def with_db(connection_string: str, db: int) -> str:
    """The same server and credentials, database ``db``."""
    parts = _parts(connection_string)
    kept = [value if key is None else f"{key}={value}" for key, value in parts if key != "db"]
    return ",".join([*kept, f"db={db}"])


def _as_whom(params: dict[str, Any]) -> str:
    return f"user {params.get('username', 'default')}, db {params.get('db', 0)}"


def describe(connection_string: str) -> str:
    """Where and as whom we connect, for messages: never the password."""
    target = parse(connection_string)
    return f"{target.address} as {_as_whom(target.params)}"


def sync_client(connection_string: str) -> redis.Redis:
    """A blocking client (tools, tests and benchmarks; the API uses an asyncio one)."""
    target = parse(connection_string)
    return redis.Redis(host=target.host, port=target.port, **target.params)
