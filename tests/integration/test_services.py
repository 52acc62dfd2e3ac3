"""The local services really work: Redis set/get, a Kafka produce -> consume round trip, CLI."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from core.redis_url import sync_client
from core.settings import PROJECT_ROOT, Settings, get_settings
from devservices import ensure_kafka, ensure_redis, kafka_is_up, redis_is_up

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def settings() -> Settings:
    """Both services up; ensure_* is idempotent, so this coexists with a session fixture."""
    settings = get_settings()
    ensure_redis(settings)
    ensure_kafka(settings)
    return settings


def test_services_answer_and_ensure_is_idempotent(settings: Settings) -> None:
    assert redis_is_up(settings)
    assert kafka_is_up(settings)
    assert ensure_redis(settings) == ensure_redis(settings)
    assert ensure_kafka(settings) == ensure_kafka(settings)


def test_redis_set_get(settings: Settings) -> None:
    client = sync_client(settings.redis_connection_string)
    key = f"devservices-test:{uuid.uuid4().hex}"
    try:
        assert client.set(key, b"42", ex=60)
        assert client.get(key) == b"42"
    finally:
        client.delete(key)
        client.close()


def test_kafka_round_trip(settings: Settings) -> None:
    bootstrap = settings.kafka_bootstrap_servers
    topic = f"devservices-test-{uuid.uuid4().hex}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(
        timeout=30
    )
    try:
        producer = Producer({"bootstrap.servers": bootstrap})
        payloads = [f"txn-{i}".encode() for i in range(3)]
        for payload in payloads:
            producer.produce(topic, value=payload, key=b"k")
        assert producer.flush(15) == 0, "messages still queued after flush"

        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"devservices-test-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        received: list[bytes] = []
        try:
            consumer.subscribe([topic])
            deadline = time.monotonic() + 30
            while len(received) < len(payloads) and time.monotonic() < deadline:
                msg = consumer.poll(1.0)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, str(error)
                    continue
                value = msg.value()
                assert value is not None
                received.append(value)
        finally:
            consumer.close()
        assert received == payloads
    finally:
        admin.delete_topics([topic])[topic].result(timeout=30)


def test_cli_rejects_bogus_command_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "devservices", "bogus"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("fraud-services: error: argument command"), done.stderr
    assert done.stdout == ""
