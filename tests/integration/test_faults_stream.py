"""Streaming under faults, with real processes and signals: a Kafka broker stopped and
restarted mid-stream, by SIGTERM and by SIGKILL (a private broker; the shared one is never
touched), and the flow SIGKILLed at three seeded points and resumed from its recovery
snapshots. The same scenarios as ``make faults`` (``verify.faults_stream``), smaller."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.report import table
from tests.conftest import Stack
from verify.faults_stream import broker_restart, worker_kills

pytestmark = pytest.mark.integration

# A broker of this test's own (its controller takes the next port); never the shared one.
PRIVATE_KAFKA_PORT = int(os.environ.get("TEST_PRIVATE_KAFKA_PORT", "19092"))


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_broker_restart_mid_stream_loses_and_double_counts_nothing(
    ready: Stack, tmp_path: Path, kill: bool
) -> None:
    checks = broker_restart(
        ready.settings,
        tmp_path,
        budget=1000,
        seconds=6,
        outage_s=3,
        port=PRIVATE_KAFKA_PORT,
        kill=kill,
    )
    assert all(c.ok for c in checks), "\n" + table(checks)


def test_worker_sigkilled_three_times_resumes_with_equal_aggregates(
    ready: Stack, tmp_path: Path
) -> None:
    checks = worker_kills(ready.settings, tmp_path, budget=1200, seconds=6, kills=3)
    assert all(c.ok for c in checks), "\n" + table(checks)
