"""The one producer config and the topic layout fitted to the brokers found (core.kafka),
and the local cluster's node list (devservices.kafka_cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.cli import UserError
from core.kafka import TopicLayout, producer_config, topic_layout
from core.settings import Settings
from devservices.kafka_cluster import node_properties, nodes


def test_every_producer_waits_for_all_in_sync_replicas_and_is_idempotent() -> None:
    config = producer_config(Settings(kafka_bootstrap_servers="b1:9092,b2:9092"))
    assert config["acks"] == "all"
    assert config["enable.idempotence"] == "true"
    assert config["bootstrap.servers"] == "b1:9092,b2:9092"  # on top of client_config


@pytest.mark.parametrize(
    ("brokers", "want"),
    [(1, TopicLayout(4, 1, 1)), (2, TopicLayout(4, 2, 1)), (3, TopicLayout(4, 3, 2)),
     (6, TopicLayout(4, 3, 2))],
)  # fmt: skip
def test_defaults_fit_the_brokers_found(brokers: int, want: TopicLayout) -> None:
    assert topic_layout(brokers, 4) == want


def test_min_insync_is_always_a_topic_config() -> None:
    assert topic_layout(1, 1).configs() == {"min.insync.replicas": "1"}
    assert topic_layout(3, 1).configs() == {"min.insync.replicas": "2"}
    assert topic_layout(3, 1, 3, 3).configs() == {"min.insync.replicas": "3"}


def test_impossible_layouts_are_refused() -> None:
    with pytest.raises(UserError, match="KAFKA_REPLICATION_FACTOR=3, but 2 broker"):
        topic_layout(2, 1, replication=3)
    with pytest.raises(UserError, match="KAFKA_MIN_INSYNC_REPLICAS=3 exceeds"):
        topic_layout(3, 1, replication=2, min_insync=3)


def test_cluster_nodes_come_from_the_bootstrap_list() -> None:
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:9192,127.0.0.1:9193,127.0.0.1:9194")
    members = nodes(settings)
    assert [(n.node_id, n.port, n.ctrl_port) for n in members] == [
        (1, 9192, 9292), (2, 9193, 9293), (3, 9194, 9294)
    ]  # fmt: skip
    props = node_properties(members[1], members, Path("/d"))
    assert "node.id=2\n" in props
    assert "controller.quorum.voters=1@127.0.0.1:9292,2@127.0.0.1:9293,3@127.0.0.1:9294" in props
    assert "transaction.state.log.min.isr=2\n" in props
    assert "default.replication.factor=3\n" in props
