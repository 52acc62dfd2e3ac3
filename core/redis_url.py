"""Feast's Redis connection string, ``host:port[,username=...][,password=...][,db=N][,ssl=true]``.

These helpers parse it as Feast's RedisOnlineStore does, so the API, the tools and the tests
reach the same database with the same credentials, and none prints a password.
(``devservices`` keeps a small parser of its own: importing Feast costs it seconds.)
"""

from __future__ import annotations

from typing import Any

import redis
from feast.infra.online_stores.redis import RedisOnlineStore


def parse(connection_string: str) -> tuple[str, int, dict[str, Any]]:
    """Host, port and the client keyword arguments (username, password, db, ssl...)."""
    nodes, params = RedisOnlineStore._parse_connection_string(connection_string)
    return nodes[0]["host"], int(nodes[0]["port"]), params


def with_db(connection_string: str, db: int) -> str:
    """The same server and credentials, database ``db``."""
    kept = [part for part in connection_string.split(",") if not part.startswith("db=")]
    return ",".join([*kept, f"db={db}"])


def describe(connection_string: str) -> str:
    """Where and as whom we connect, for messages: never the password."""
    nodes, params = RedisOnlineStore._parse_connection_string(connection_string)
    where = ",".join(f"{n['host']}:{n['port']}" for n in nodes)
    return f"{where} as user {params.get('username', 'default')}, db {params.get('db', 0)}"


def sync_client(connection_string: str) -> redis.Redis:
    """A blocking client (tools, tests and benchmarks; the API uses an asyncio one)."""
    host, port, params = parse(connection_string)
    return redis.Redis(host=host, port=port, **params)
