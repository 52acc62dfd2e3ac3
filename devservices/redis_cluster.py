"""A local Redis Cluster (3 masters, 3 replicas) for ``REDIS_TYPE=redis_cluster``.

Six Debian ``redis-server`` processes on 127.0.0.1, on the port of the connection string's
first node and the five after it (7000-7005 by default), each with its own directory under
the services dir, joined by ``redis-cli --cluster create --cluster-replicas 1``. A cluster
that already answers ``cluster_state:ok`` at the configured nodes is reused.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.redis_url import RedisTarget, parse
from core.settings import Settings

from ._common import (
    Managed,
    ServiceError,
    ServiceHandle,
    is_local_host,
    our_process,
    service_lock,
    tcp_open,
    wait_until,
)
from .redis_server import _redis_server_binary

NAME = "redis-cluster"
NODES = 6  # 3 masters, each with one replica
READY_TIMEOUT_S = 30.0


def _node(port: int) -> Managed:
    return Managed(f"{NAME}-{port}", "redis-server", f"redis-server (cluster node {port})")


def cluster_ports(target: RedisTarget) -> list[int]:
    """The six ports we start: the first startup node's and the five after it."""
    return [target.port + i for i in range(NODES)]


def _info(host: str, port: int, target: RedisTarget, section: str = "cluster") -> dict[str, Any]:
    """``CLUSTER INFO`` (section "cluster") or ``INFO <section>`` of one node, parsed."""
    probe = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
    params = {k: v for k, v in target.params.items() if k != "db"} | probe
    client = redis.Redis(host=host, port=port, **params, retry=Retry(NoBackoff(), 0))
    try:
        info = (
            client.execute_command("CLUSTER INFO") if section == "cluster" else client.info(section)
        )
        return cast(dict[str, Any], info)
    finally:
        client.close()


def cluster_ok(target: RedisTarget, ports: list[int] | None = None) -> bool:
    """True if every node asked (default: the startup nodes) says ``cluster_state:ok``."""
    nodes = [(target.host, p) for p in ports] if ports else list(target.nodes)
    try:
        return all(_info(h, p, target).get("cluster_state") == "ok" for h, p in nodes)
    except redis.RedisError:
        return False


def redis_cluster_is_up(settings: Settings) -> bool:
    return cluster_ok(parse(settings.redis_connection_string))


def ensure_redis_cluster(settings: Settings) -> ServiceHandle:
    """Return a Redis Cluster answering ``cluster_state:ok``, forming one locally if needed."""
    target = parse(settings.redis_connection_string)
    services_dir = settings.services_dir
    ports = cluster_ports(target)
    with service_lock(services_dir, NAME):
        ours = [our_process(services_dir, _node(p).name, "redis-server") for p in ports]
        if cluster_ok(target):
            if any(ours):
                pid = next(o.pid for o in ours if o)
                return ServiceHandle(NAME, target.address, "started", pid, services_dir / NAME)
            return ServiceHandle(NAME, target.address, "reused")
        if not is_local_host(target.host):
            raise ServiceError(
                f"no Redis Cluster answers at {target.address} and it is not a local address;"
                " point REDIS_CONNECTION_STRING at its nodes"
            )
        _stop_nodes(settings, ports)
        busy = [p for p in ports if tcp_open(target.host, p)]
        if busy:
            raise ServiceError(
                f"ports {busy} are taken by servers that do not form a healthy cluster;"
                " free them or point REDIS_CONNECTION_STRING at other ports"
            )
        return _form(settings, target, ports)


def _form(settings: Settings, target: RedisTarget, ports: list[int]) -> ServiceHandle:
    binary = _redis_server_binary()
    base = settings.services_dir / NAME
    shutil.rmtree(base, ignore_errors=True)
    handles = [_start_node(binary, settings, target, port) for port in ports]
    cli = shutil.which("redis-cli") or "redis-cli"
    cmd = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)]
    cmd += ["--cluster-replicas", "1", "--cluster-yes"]
    if target.params.get("password"):
        cmd += ["-a", str(target.params["password"]), "--no-auth-warning"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        _stop_nodes(settings, ports)
        last = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise ServiceError(f"`redis-cli --cluster create` failed: {' | '.join(last)}")
    began = time.monotonic()
    state = wait_until(lambda: cluster_ok(target, ports), lambda: False, READY_TIMEOUT_S)
    if state != "ready":
        _stop_nodes(settings, ports)
        raise ServiceError(f"the Redis Cluster did not reach cluster_state:ok; logs in {base}")
    _wait_replicas(target, ports, READY_TIMEOUT_S - (time.monotonic() - began))
    return ServiceHandle(NAME, target.address, "started", handles[0].pid, base)


def _start_node(binary: str, settings: Settings, target: RedisTarget, port: int) -> ServiceHandle:
    workdir = settings.services_dir / NAME / str(port)
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes"]
    cmd += ["--cluster-config-file", str(workdir / "nodes.conf"), "--dir", str(workdir)]
    cmd += ["--cluster-node-timeout", str(settings.redis_cluster_node_timeout_ms)]
    cmd += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
    if target.params.get("password"):
        secret = str(target.params["password"])
        cmd += ["--requirepass", secret, "--masterauth", secret]

    def up() -> bool:
        try:
            _info(target.host, port, target)
        except redis.RedisError:
            return False
        return True

    log = workdir / "redis.log"
    dirs = settings.services_dir
    return _node(port).launch(cmd, log, workdir, f"127.0.0.1:{port}", dirs, up, 10.0)


def _wait_replicas(target: RedisTarget, ports: list[int], timeout_s: float) -> None:
    """Replicas sync after ``create`` returns; a failover before that would lose the slots."""

    def synced() -> bool:
        try:
            infos = [_info(target.host, p, target, "replication") for p in ports]
        except redis.RedisError:
            return False
        links = sum(i.get("master_link_status") == "up" for i in infos)
        return links == NODES // 2

    if wait_until(synced, lambda: False, max(timeout_s, 1.0)) != "ready":
        raise ServiceError("the Redis Cluster's replicas did not finish their first sync")


def revive_redis_cluster(settings: Settings) -> list[int]:
    """Restart our nodes that are down (a failover proof kills one): each rejoins from its
    nodes.conf, as a replica of the master that took its slots. Returns the ports restarted."""
    target = parse(settings.redis_connection_string)
    ports = cluster_ports(target)
    base = settings.services_dir / NAME
    with service_lock(settings.services_dir, NAME):
        dead = [p for p in ports if (base / str(p)).is_dir() and not tcp_open(target.host, p)]
        if dead:
            binary = _redis_server_binary()
            for port in dead:
                _start_node(binary, settings, target, port)
        _wait_replicas(target, ports, READY_TIMEOUT_S)
    return dead


def _stop_nodes(settings: Settings, ports: list[int]) -> list[int]:
    return [pid for p in ports if (pid := _node(p).stop(settings.services_dir)) is not None]


def stop_redis_cluster(settings: Settings) -> int | None:
    """Stop the cluster nodes we started (if any); returns the first pid. Others are left."""
    ports = cluster_ports(parse(settings.redis_connection_string))
    with service_lock(settings.services_dir, NAME):
        stopped = _stop_nodes(settings, ports)
    shutil.rmtree(settings.services_dir / NAME, ignore_errors=True)
    return stopped[0] if stopped else None


def redis_cluster_status(settings: Settings) -> str:
    """One line: started (pids) / reused / down."""
    target = parse(settings.redis_connection_string)
    ports = cluster_ports(target)
    found = [our_process(settings.services_dir, _node(p).name, "redis-server") for p in ports]
    pids = [o.pid for o in found if o is not None]
    up = cluster_ok(target)
    if not pids:
        return f"{NAME}: {'reused' if up else 'down'} at {target.address}"
    state = "" if up else ", NOT ok"
    return f"{NAME}: started (pids {', '.join(map(str, pids))}) at {target.address}{state}"
