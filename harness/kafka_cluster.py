"""The three-broker Kafka cluster as the tests and ``make faults`` use it: started through
devservices (and stopped again if this run started it), who leads what, waiting for a
restarted broker to be back in sync, handing leadership back, and the gaps between scores.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import pairwise

from confluent_kafka import ElectionType, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from core.settings import Settings
from devservices.kafka_broker import ensure_jars, find_java
from devservices.kafka_cluster import (
    ensure_kafka,
    is_cluster,
    kafka_is_up,
    node_log_dir,
    stop_kafka,
)
from harness.kafka import QUIET

# Where the tests' and proofs' cluster runs unless KAFKA_BOOTSTRAP_SERVERS names one already.
CLUSTER = "127.0.0.1:9192,127.0.0.1:9193,127.0.0.1:9194"


@contextmanager
def kafka_cluster(settings: Settings) -> Iterator[Settings]:
    """``settings`` pointed at a running three-broker cluster: the configured one if
    KAFKA_BOOTSTRAP_SERVERS lists several brokers, else ``CLUSTER``; started through
    devservices if it is not up, and then stopped on exit."""
    if not is_cluster(settings):
        settings = settings.model_copy(update={"kafka_bootstrap_servers": CLUSTER})
    was_up = kafka_is_up(settings)
    ensure_kafka(settings)
    try:
        yield settings
    finally:
        if not was_up:
            stop_kafka(settings)


def admin(bootstrap: str) -> AdminClient:
    config: dict[str, str | int | float | bool] = {"bootstrap.servers": bootstrap, **QUIET}
    return AdminClient(config)


def leaders(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> id of the broker leading it, as the cluster's metadata says now."""
    meta = admin(bootstrap).list_topics(topic, timeout=10).topics[topic]
    return {p.id: p.leader for p in meta.partitions.values()}


def replication(bootstrap: str, topic: str, timeout_s: float = 10.0) -> tuple[int, str]:
    """(replicas of every partition, the topic's ``min.insync.replicas``); -1 replicas if
    the partitions disagree. Waits up to ``timeout_s`` for a broker whose metadata still
    trails a creation that just returned (it answers with fewer replicas, or unknown topic)."""
    client = admin(bootstrap)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            meta = client.list_topics(topic, timeout=10).topics[topic]
            counts = {len(p.replicas) for p in meta.partitions.values()}
            (config,) = client.describe_configs([ConfigResource("topic", topic)]).values()
            min_insync = str(config.result(timeout=10)["min.insync.replicas"].value)
            if len(counts) == 1 and 0 not in counts:
                return counts.pop(), min_insync
            if time.monotonic() > deadline:
                return -1, min_insync
        except KafkaException:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def in_sync_everywhere(bootstrap: str, topics: Iterable[str], broker: int) -> bool:
    """True if ``broker`` is in the in-sync replicas of every partition of ``topics``."""
    meta = admin(bootstrap).list_topics(timeout=10)
    parts = [p for t in topics for p in meta.topics[t].partitions.values()]
    return bool(parts) and all(broker in p.isrs for p in parts)


def elect_preferred(bootstrap: str, topics: Iterable[str]) -> None:
    """Hand every partition of ``topics`` back to its preferred leader (what the brokers do by
    themselves within ``leader.imbalance.check.interval.seconds``, 300 s by default)."""
    client = admin(bootstrap)
    meta = client.list_topics(timeout=10)
    parts = [TopicPartition(t, p) for t in topics for p in meta.topics[t].partitions]
    client.elect_leaders(ElectionType.PREFERRED, parts).result(timeout=30)


def longest_gap_s(
    messages: Iterable[Message], after_ms: float = 0.0, before_ms: float = float("inf")
) -> float:
    """The longest time between consecutive messages' create times (set when the flow
    produced them), counting only those in [``after_ms``, ``before_ms``) (epoch ms)."""
    times = sorted(t for m in messages if after_ms <= (t := m.timestamp()[1]) < before_ms)
    return max((b - a for a, b in pairwise(times)), default=0) / 1000


def batch_producer_ids(settings: Settings, topic: str, node_id: int = 1) -> list[int]:
    """The producer id of every record batch of ``topic`` in node ``node_id``'s log, read by
    Kafka's ``DumpLogSegments``: -1 for a batch of a producer without idempotence. Only for
    a cluster we started (its data directory is known); empty otherwise."""
    logs = node_log_dir(settings, node_id)
    if logs is None:
        return []
    segments = sorted(str(f) for f in logs.glob(f"{topic}-*/*.log"))
    if not segments:
        return []
    cmd = [find_java(), "-cp", f"{ensure_jars(settings)}/*", "kafka.tools.DumpLogSegments"]
    done = subprocess.run(
        [*cmd, "--files", ",".join(segments)], capture_output=True, text=True, timeout=120
    )
    return [int(x) for x in re.findall(r"producerId: (-?\d+)", done.stdout)]
