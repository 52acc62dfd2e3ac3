"""A three-broker KRaft cluster that the session starts through devservices (and stops again
if it started it): topics laid out by the settings, and one broker SIGKILLed mid-stream
while it leads partitions of the input and scores topics, then started again. The same
scenario as ``python -m verify.faults_kafka_cluster`` (``make faults``), smaller."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.cli import UserError
from core.kafka import ensure_stream_topics
from core.settings import Settings
from harness.kafka_cluster import kafka_cluster, replication
from harness.report import table
from tests.conftest import Stack
from verify.faults_kafka_cluster import broker_failover

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(services: Settings) -> Iterator[Settings]:
    with kafka_cluster(services) as settings:
        yield settings


def _fresh(settings: Settings, **overrides: object) -> tuple[Settings, str]:
    topic = f"test-layout-{uuid.uuid4().hex[:10]}"
    return settings.model_copy(update={"stream_transactions_topic": topic, **overrides}), topic


@pytest.mark.parametrize(
    ("overrides", "want"),
    [
        ({}, (3, "2")),  # the defaults fitted to three brokers
        ({"kafka_replication_factor": 2}, (2, "1")),
        ({"kafka_replication_factor": 3, "kafka_min_insync_replicas": 3}, (3, "3")),
    ],
    ids=["defaults", "rf2", "rf3-isr3"],
)
def test_topics_are_created_with_the_configured_replication(
    cluster: Settings, overrides: dict[str, int], want: tuple[int, str]
) -> None:
    settings, topic = _fresh(cluster, kafka_topic_partitions=5, **overrides)
    layout = ensure_stream_topics(settings, [topic])
    assert (layout.replication, str(layout.min_insync)) == want
    # Read back from Kafka; a broker's metadata may trail the creation for a moment.
    deadline = time.monotonic() + 10
    while (got := replication(cluster.kafka_bootstrap_servers, topic)) != want:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got == want


def test_more_replicas_than_brokers_is_a_clear_error(cluster: Settings) -> None:
    settings, topic = _fresh(cluster, kafka_replication_factor=4)
    with pytest.raises(UserError, match="KAFKA_REPLICATION_FACTOR=4, but 3 broker"):
        ensure_stream_topics(settings, [topic])


def test_broker_sigkilled_mid_stream_loses_and_double_counts_nothing_then_rejoins(
    ready: Stack, cluster: Settings, tmp_path: Path
) -> None:
    bootstrap = cluster.kafka_bootstrap_servers
    settings = ready.settings.model_copy(update={"kafka_bootstrap_servers": bootstrap})
    checks = broker_failover(settings, tmp_path, budget=1000, seconds=8)
    assert len(checks) >= 15 and all(c.ok for c in checks), "\n" + table(checks)
