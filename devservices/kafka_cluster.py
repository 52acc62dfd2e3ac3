"""A local Kafka cluster: KAFKA_BOOTSTRAP_SERVERS with more than one address (``make
services-up KAFKA_BROKERS=3``: 127.0.0.1:9192,9193,9194) names one KRaft node per address.

Each node is a combined broker and controller (``node.id`` 1, 2, ... in address order) from
the same cached Maven jars as the single broker, its controller on port + 100, its data in
``node-<id>/`` of one temporary directory that ``down`` deletes. The quorum is static
(``controller.quorum.voters``), so every node is formatted with one cluster id; a node that
is killed (``kill_node``) and started again (``start_node``) keeps its data and rejoins.
The ``ensure_kafka``/``kafka_is_up``/``stop_kafka``/``kafka_status`` here choose the single
broker (``kafka_broker``) or the cluster by the number of bootstrap addresses.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import NamedTuple

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from core.settings import Settings

from ._common import (
    Managed,
    ServiceError,
    ServiceHandle,
    is_local_host,
    our_process,
    pid_alive,
    pid_file,
    service_lock,
    split_host_port,
    status_line,
    tcp_open,
    terminate,
    wait_until,
)
from .kafka_broker import (
    EXPECT,
    _cluster_id,
    broker_answers,
    broker_is_up,
    broker_status,
    ensure_broker,
    ensure_jars,
    find_java,
    node_command,
    stop_broker,
)

NAME = "kafka-cluster"
CTRL_OFFSET = 100  # controller port = broker port + 100 (the broker ports are consecutive)
HEAP = "512m"  # per node: three share the machine with everything else
READY_TIMEOUT_S = 120.0
DATA_PREFIX = "fraud-kafka-cluster-"

NODE_PROPERTIES = """\
# Written by devservices: one node of a local KRaft cluster (broker and controller).
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{ctrl_port}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={log_dirs}
offsets.topic.replication.factor={replicas}
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_insync}
default.replication.factor={replicas}
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
"""


class Node(NamedTuple):
    """One node of the cluster: its id, its broker address and its controller port."""

    node_id: int
    host: str
    port: int

    @property
    def ctrl_port(self) -> int:
        return self.port + CTRL_OFFSET

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def service(self) -> Managed:
        return Managed(f"kafka-node{self.node_id}", EXPECT, f"Kafka node {self.node_id}")


def nodes(settings: Settings) -> list[Node]:
    """The nodes KAFKA_BOOTSTRAP_SERVERS names, ids 1.. in address order."""
    addresses = [a for a in settings.kafka_bootstrap_servers.split(",") if a.strip()]
    return [Node(i, *split_host_port(a, 9092)) for i, a in enumerate(addresses, start=1)]


def is_cluster(settings: Settings) -> bool:
    return len(nodes(settings)) > 1


def live_brokers(bootstrap: str) -> set[int]:
    """Ids of the brokers the cluster's metadata lists now (empty if none answers)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        return set(admin.list_topics(timeout=2).brokers)
    except KafkaException:
        return set()


def cluster_is_up(settings: Settings) -> bool:
    """True if every node is a live broker of one cluster."""
    members = nodes(settings)
    if not any(tcp_open(n.host, n.port) for n in members):
        return False
    return live_brokers(settings.kafka_bootstrap_servers) >= {n.node_id for n in members}


def _datadir_record(settings: Settings) -> Path:
    return settings.services_dir / f"{NAME}.datadir"


def _datadir(settings: Settings) -> Path | None:
    with contextlib.suppress(OSError):
        return Path(_datadir_record(settings).read_text().strip())
    return None


def _remove_datadir(settings: Settings) -> None:
    """Delete the temp dir we recorded, but only if it is one of ours."""
    path = _datadir(settings)
    tmp_root = Path(tempfile.gettempdir()).resolve()
    if path is not None and path.name.startswith(DATA_PREFIX) and path.parent == tmp_root:
        shutil.rmtree(path, ignore_errors=True)
    _datadir_record(settings).unlink(missing_ok=True)


def node_properties(node: Node, members: list[Node], data: Path) -> str:
    """The node's server.properties: internal topics with min(3, nodes) replicas, replicas - 1
    in sync; other topics carry their own ``min.insync.replicas`` (``core.kafka``), so the
    broker default stays 1 and a one-replica topic created by hand stays writable."""
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.ctrl_port}" for n in members)
    replicas = min(3, len(members))
    return NODE_PROPERTIES.format(
        node_id=node.node_id,
        voters=voters,
        host=node.host,
        port=node.port,
        ctrl_port=node.ctrl_port,
        log_dirs=data / "logs",
        replicas=replicas,
        min_insync=max(1, replicas - 1),
    )


def _launch(
    settings: Settings, node: Node, root: Path, cluster_id: str, wait: bool = True
) -> ServiceHandle:
    """Start ``node`` over ``root/node-<id>`` (formatted on first use); returns once its
    controller port listens (its broker needs a quorum of the others to answer), or at once
    without ``wait`` (nodes started together wait for each other in ``_wait_ready``)."""
    data = root / f"node-{node.node_id}"
    data.mkdir(parents=True, exist_ok=True)
    props = node_properties(node, nodes(settings), data)
    libs = ensure_jars(settings)
    cmd = node_command(find_java(), libs, data, props, HEAP, ["-t", cluster_id])
    log = settings.services_dir / f"{node.service.name}.log"
    return node.service.launch(
        cmd,
        log,
        data,
        node.address,
        settings.services_dir,
        lambda: not wait or tcp_open("127.0.0.1", node.ctrl_port),
        READY_TIMEOUT_S,
    )


def _check_free(members: list[Node]) -> None:
    for node in members:
        if not is_local_host(node.host):
            raise ServiceError(
                f"no Kafka cluster answers at {node.address} and it is not a local address; "
                "start it there or set KAFKA_BOOTSTRAP_SERVERS"
            )
        for port in (node.port, node.ctrl_port):
            if tcp_open("127.0.0.1", port):
                raise ServiceError(
                    f"port {port} (Kafka node {node.node_id}) is in use by something that is "
                    "not our cluster; free it or set KAFKA_BOOTSTRAP_SERVERS"
                )


def _wait_ready(settings: Settings, handles: list[ServiceHandle]) -> None:
    def died() -> bool:  # gone, not "cmdline lacks EXPECT": a starting JVM may read as empty
        return any(h.pid is not None and not pid_alive(h.pid, "") for h in handles)

    outcome = wait_until(lambda: cluster_is_up(settings), died, READY_TIMEOUT_S, 0.5)
    if outcome != "ready":
        _stop_nodes(settings)
        _remove_datadir(settings)
        logs = ", ".join(str(h.log) for h in handles)
        raise ServiceError(f"the local Kafka cluster did not form ({outcome}); logs {logs}")


def ensure_cluster(settings: Settings) -> ServiceHandle:
    """A cluster that answers at every node: reused, completed (nodes of ours that died are
    started again over their data) or started fresh. Idempotent."""
    members = nodes(settings)
    address = settings.kafka_bootstrap_servers
    with service_lock(settings.services_dir, NAME):
        ours = {
            n.node_id: our_process(settings.services_dir, n.service.name, EXPECT) for n in members
        }
        log = settings.services_dir / f"{members[0].service.name}.log"
        first = ours[members[0].node_id]
        if cluster_is_up(settings):
            if first is None:
                return ServiceHandle(NAME, address, "reused")
            return ServiceHandle(NAME, address, "started", first.pid, log)
        root = _datadir(settings)
        if root is None or not any(ours.values()):  # nothing of ours to complete: start fresh
            _stop_nodes(settings)
            _remove_datadir(settings)
            _check_free(members)
            root = Path(tempfile.mkdtemp(prefix=DATA_PREFIX))
            _datadir_record(settings).write_text(f"{root}\n")
            (root / "cluster.id").write_text(_cluster_id())
        cluster_id = (root / "cluster.id").read_text().strip()
        handles = [
            _launch(settings, n, root, cluster_id, wait=False)
            for n in members
            if ours[n.node_id] is None
        ]
        _wait_ready(settings, handles)
        pid = handles[0].pid if first is None and handles else (first.pid if first else None)
        return ServiceHandle(NAME, address, "started", pid, log)


def node_for(settings: Settings, node_id: int) -> Node:
    for node in nodes(settings):
        if node.node_id == node_id:
            return node
    raise ServiceError(f"no Kafka node {node_id} in KAFKA_BOOTSTRAP_SERVERS")


def node_log_dir(settings: Settings, node_id: int) -> Path | None:
    """The ``log.dirs`` of a node of a cluster we started (None if we did not start it)."""
    root = _datadir(settings)
    return None if root is None else root / f"node-{node_for(settings, node_id).node_id}" / "logs"


def kill_node(settings: Settings, node_id: int) -> int:
    """SIGKILL one node we started, as a crash would; its pid. Its data stays for
    ``start_node``."""
    node = node_for(settings, node_id)
    ours = our_process(settings.services_dir, node.service.name, EXPECT)
    if ours is None:
        raise ServiceError(f"Kafka node {node_id} is not one we started; nothing killed")
    os.kill(ours.pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(ours.pid, EXPECT), lambda: False, 10.0, 0.05)
    pid_file(settings.services_dir, node.service.name).unlink(missing_ok=True)
    return ours.pid


def start_node(settings: Settings, node_id: int) -> ServiceHandle:
    """Start a node of ours again over its data; returns once the cluster lists it again."""
    node = node_for(settings, node_id)
    root = _datadir(settings)
    if root is None:
        raise ServiceError("no data directory of a cluster of ours; run `devservices up`")
    with service_lock(settings.services_dir, NAME):
        cluster_id = (root / "cluster.id").read_text().strip()
        handle = _launch(settings, node, root, cluster_id)
    outcome = wait_until(
        lambda: node_id in live_brokers(node.address),
        lambda: handle.pid is not None and not pid_alive(handle.pid, ""),
        READY_TIMEOUT_S,
        0.2,
    )
    if outcome != "ready":
        raise ServiceError(f"Kafka node {node_id} did not rejoin ({outcome}); log {handle.log}")
    return handle


def _stop_nodes(settings: Settings) -> int | None:
    """SIGTERM every node of ours at once (one at a time, the last would wait for a quorum
    that is gone), then wait for each; the first pid stopped."""
    members = nodes(settings)
    running = [our_process(settings.services_dir, n.service.name, EXPECT) for n in members]
    for started in running:
        if started is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(started.pid, signal.SIGTERM)
    for node, started in zip(members, running, strict=True):
        if started is not None:
            terminate(started.pid, EXPECT)
        pid_file(settings.services_dir, node.service.name).unlink(missing_ok=True)
    return next((s.pid for s in running if s is not None), None)


def stop_cluster(settings: Settings) -> int | None:
    """Stop every node we started and delete the cluster's data; the first pid stopped."""
    with service_lock(settings.services_dir, NAME):
        pid = _stop_nodes(settings)
        _remove_datadir(settings)
        return pid


def cluster_status(settings: Settings) -> str:
    """One line per node: started (pid) / reused / down."""
    live = live_brokers(settings.kafka_bootstrap_servers)
    lines = []
    for node in nodes(settings):
        ours = our_process(settings.services_dir, node.service.name, EXPECT)
        up = node.node_id in live and broker_answers(node.address, node.host, node.port)
        lines.append(status_line(f"kafka node {node.node_id}", ours, node.address, up))
    return "\n".join(lines)


def ensure_kafka(settings: Settings) -> ServiceHandle:
    """The single broker or the cluster KAFKA_BOOTSTRAP_SERVERS names, reused or started."""
    return ensure_cluster(settings) if is_cluster(settings) else ensure_broker(settings)


def kafka_is_up(settings: Settings) -> bool:
    return cluster_is_up(settings) if is_cluster(settings) else broker_is_up(settings)


def stop_kafka(settings: Settings) -> int | None:
    return stop_cluster(settings) if is_cluster(settings) else stop_broker(settings)


def kafka_status(settings: Settings) -> str:
    return cluster_status(settings) if is_cluster(settings) else broker_status(settings)
