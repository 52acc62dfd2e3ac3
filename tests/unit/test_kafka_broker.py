"""The broker launcher's pure helpers: ids the storage tool accepts, errors worth reading."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from devservices import kafka_broker


def test_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """0xF8.. encodes to '-...' in URL-safe base64; the storage tool would read it as an option."""
    draws = iter([uuid.UUID(bytes=b"\xf8" + b"\x00" * 15), uuid.UUID(int=1)])
    monkeypatch.setattr(kafka_broker.uuid, "uuid4", lambda: next(draws))
    cluster_id = kafka_broker._cluster_id()
    assert not cluster_id.startswith("-")
    assert len(cluster_id) == 22


def test_first_error_prefers_stderr_over_info_logging() -> None:
    done = subprocess.CompletedProcess(
        args=[],
        returncode=1,
        stdout="[..] INFO Registered `kafka:type=kafka.Log4jController` MBean\n",
        stderr="usage: kafka-storage format ...\nkafka-storage: error: argument --cluster-id\n",
    )
    assert kafka_broker._first_error(done) == "kafka-storage: error: argument --cluster-id"
