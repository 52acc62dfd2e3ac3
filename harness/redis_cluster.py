"""Test and proof plumbing for the Redis Cluster online store: the cluster's own settings,
flushing it, killing a master and moving a slot by hand (CLUSTER SETSLOT / MIGRATE)."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any, cast

import redis

from core.redis_url import parse
from core.settings import Settings
from devservices.redis_cluster import ensure_redis_cluster, revive_redis_cluster

NODES = "127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002"  # devservices forms 7000-7005


def cluster_settings(base: Settings, nodes: str = NODES) -> Settings:
    """``base`` pointed at the Redis Cluster (started or reused, every node up)."""
    settings = base.model_copy(
        update={"redis_type": "redis_cluster", "redis_connection_string": nodes}
    )
    ensure_redis_cluster(settings)
    revive_redis_cluster(settings)
    return settings


def revive(settings: Settings) -> list[int]:
    """Restart killed nodes (each rejoins as a replica) and wait for every replica's sync."""
    return revive_redis_cluster(settings)


@dataclass(frozen=True)
class Node:
    host: str
    port: int
    node_id: str
    role: str  # "master" or "slave"
    master_id: str  # for a replica, its master's id; "-" for a master
    connected: bool

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, socket_timeout=5.0)


def nodes(settings: Settings) -> list[Node]:
    """Every node the cluster knows, from CLUSTER NODES of the first startup node that answers."""
    target = parse(settings.redis_connection_string)
    for host, port in target.nodes:
        try:
            raw = redis.Redis(host=host, port=port, socket_timeout=2.0).execute_command(
                "CLUSTER", "NODES"
            )
        except redis.ConnectionError:
            continue
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return [_node(line) for line in text.splitlines() if line.strip()]
    raise RuntimeError(f"no startup node of {target.address} answers")


def _node(line: str) -> Node:
    node_id, addr, flags, master_id, _, _, _, link = line.split()[:8]
    host, port = addr.split("@")[0].rsplit(":", 1)
    role = "master" if "master" in flags.split(",") else "slave"
    alive = link == "connected" and "fail" not in flags
    return Node(host, int(port), node_id, role, master_id, alive)


def masters(settings: Settings) -> list[Node]:
    return [n for n in nodes(settings) if n.role == "master" and n.connected]


def flush(settings: Settings) -> None:
    """FLUSHALL on every master: the tests' and proofs' own cluster (it has only db 0)."""
    for node in masters(settings):
        node.client().flushall()


def master_with_replica(settings: Settings) -> Node:
    """A live master whose replica is connected, so killing it fails over."""
    every = nodes(settings)
    for node in every:
        replicated = any(r.master_id == node.node_id and r.connected for r in every)
        if node.role == "master" and node.connected and replicated:
            return node
    raise RuntimeError("no master with a live replica; revive the cluster first")


def kill(node: Node) -> int:
    """SIGKILL the node's process (its pid from INFO server); returns the pid."""
    pid = int(cast(dict[str, Any], node.client().info("server"))["process_id"])
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_promoted(settings: Settings, killed: Node, timeout_s: float = 60.0) -> float:
    """Seconds until a replica serves the killed master's slots and the cluster says ok."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        try:
            live = masters(settings)
            ok = all(_cluster_state(n) == "ok" for n in live)
        except redis.RedisError:
            ok, live = False, []
        if ok and len(live) == 3 and killed.node_id not in {n.node_id for n in live}:
            return time.monotonic() - began
        time.sleep(0.1)
    raise TimeoutError(f"no replica promoted within {timeout_s:.0f} s of killing {killed.port}")


def _cluster_state(node: Node) -> str:
    info = cast(dict[str, Any], node.client().execute_command("CLUSTER INFO"))
    return str(info.get("cluster_state"))


def slot_owner(settings: Settings, slot: int) -> Node:
    for node in masters(settings):
        for start, end, *_ in node.client().execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return next(n for n in masters(settings) if _owns(n, start, end))
    raise RuntimeError(f"slot {slot} is not served")


def _owns(node: Node, start: int, end: int) -> bool:
    for s, e, primary, *_ in node.client().execute_command("CLUSTER", "SLOTS"):
        if (s, e) == (start, end):
            host = primary[0].decode() if isinstance(primary[0], bytes) else primary[0]
            return (host, int(primary[1])) == (node.host, node.port)
    return False


def begin_migration(src: Node, dst: Node, slot: int) -> list[bytes]:
    """Mark ``slot`` migrating src -> dst; returns the slot's keys (still all on src)."""
    dst.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src.node_id)
    src.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst.node_id)
    keys: list[bytes] = src.client().execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    return keys


def migrate_keys(src: Node, dst: Node, keys: list[bytes]) -> None:
    if keys:
        src.client().execute_command("MIGRATE", dst.host, dst.port, "", 0, 5000, "KEYS", *keys)


def finish_migration(settings: Settings, dst: Node, slot: int) -> None:
    """Assign ``slot`` to dst on every master: the old owner now answers MOVED."""
    for node in masters(settings):
        node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst.node_id)
