"""Shared fixtures: the real Redis and Kafka, and a Feast repo over freshly generated data.

Integration tests run against the servers ``devservices`` reuses or starts; nothing
is faked and nothing skips. Each session gets its own workspace (``harness.workspace``):
a copy of ``feature_repo/`` with its own ``data/`` beside it, and its own Redis database,
so a demo's state is untouched.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import pytest

from core.contract import WINDOWS_VIEW
from core.redis_url import sync_client, with_db
from core.settings import Settings
from datagen.generate import GeneratorConfig
from devservices import ensure_all
from harness.workspace import Workspace, create, feast_cli, generate_data, set_project, stamp

# Its own Redis database, so tests never touch a demo's online store; under pytest-xdist
# (make test runs two workers) each worker gets the next one, as its session fixtures flush it.
TEST_REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "1")) + int(
    os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
)

Stack = Workspace  # the session's workspace, as the tests name it

# The data ends at 00:00 UTC, so late in the day every user's windows are past their 1-day TTL
# and the API imputes them, while Feast's SDK (no TTL on online reads) returns them. Tests that
# hold the API equal to the SDK bound the windows' age with this, so the hour does not matter.
SDK_EQUAL_MAX_AGE = {WINDOWS_VIEW: 7 * 86400.0}

__all__ = ["SDK_EQUAL_MAX_AGE", "Clock", "Stack", "feast_cli"]


@dataclass(frozen=True)
class Clock:
    """The session's "now", taken once, so a session crossing UTC midnight keeps one today."""

    now: datetime
    data: GeneratorConfig  # the default generator config (training on it must reach the
    # acceptance AUC), its first day pinned to this "now"

    @property
    def materialize_start(self) -> str:
        return stamp(self.data.first_day() - timedelta(days=1))

    @property
    def materialize_end(self) -> str:
        return stamp(self.now)


@pytest.fixture(scope="session")
def clock() -> Clock:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    data = GeneratorConfig()
    return Clock(now, replace(data, start=data.first_day()))


@pytest.fixture(scope="session")
def services() -> Settings:
    settings = Settings()
    ensure_all(settings)
    return settings


@pytest.fixture(scope="session")
def stack(services: Settings, clock: Clock, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    root = tmp_path_factory.mktemp("stack")
    # A generous online-read bound: a loaded CI box must not turn reads into 503s.
    if services.redis_type == "redis_cluster":  # only db 0: a Feast project of its own instead
        ws = create(root, services.redis_connection_string, redis_timeout_ms=2000)
        set_project(ws, f"tests_{uuid.uuid4().hex[:10]}")
    else:
        redis_url = with_db(services.redis_connection_string, TEST_REDIS_DB)
        ws = create(root, redis_url, redis_timeout_ms=2000)
        sync_client(redis_url).flushdb()
    generate_data(ws, clock.data)
    ws.feast("apply")
    return ws


@pytest.fixture(scope="session")
def materialized(stack: Stack, clock: Clock) -> Stack:
    """`feast materialize START END`, exactly as a user types it."""
    out = stack.run(feast_cli(), "materialize", clock.materialize_start, clock.materialize_end)
    assert out.returncode == 0, out.stderr
    return stack


@pytest.fixture(scope="session")
def trained(stack: Stack) -> Stack:
    """`python -m training` on the default synthetic data."""
    out = stack.python("-m", "training")
    assert out.returncode == 0, out.stderr
    return stack


@pytest.fixture(scope="session")
def ready(materialized: Stack, trained: Stack) -> Stack:
    """Online store loaded and model trained: what serving and streaming need."""
    return trained
