"""Shared fixtures: the real Redis and Kafka, and a Feast repo over freshly generated data.

Integration tests run against the servers ``devservices`` reuses or starts; nothing
is faked and nothing skips. Each session gets its own copy of ``feature_repo/`` with
its own ``data/`` beside it, and its own Redis database, so a demo's state is untouched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from batch.aggregates import backfill_windows
from core.redis_url import sync_client, with_db
from core.settings import PROJECT_ROOT, Settings
from core.store import copy_feature_repo
from datagen.generate import GeneratorConfig, generate
from devservices import ensure_all

# Its own Redis database, so tests never touch a demo's online store.
TEST_REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "1"))
# The default generator config: training on it must reach the acceptance AUC.
DATA = GeneratorConfig()
NOW = datetime.now(timezone.utc).replace(microsecond=0)
MATERIALIZE_START = (DATA.first_day() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
MATERIALIZE_END = NOW.strftime("%Y-%m-%dT%H:%M:%S")


@dataclass(frozen=True)
class Stack:
    """A feature repo copy wired to the test Redis database, plus the env its CLIs need."""

    settings: Settings
    env: dict[str, str]

    @property
    def repo(self) -> Path:
        return self.settings.feature_repo

    def run(
        self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command as a user would, with this stack's environment (plus ``env``)."""
        return subprocess.run(
            list(args),
            cwd=cwd or self.repo,
            env=self.env | (env or {}),
            capture_output=True,
            text=True,
            timeout=300,
        )

    def python(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, *args, cwd=PROJECT_ROOT, env=env)


def feast_cli() -> str:
    return str(Path(sys.executable).with_name("feast"))


@pytest.fixture(scope="session")
def services() -> Settings:
    settings = Settings()
    ensure_all(settings)
    return settings


@pytest.fixture(scope="session")
def stack(services: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    copy_feature_repo(root)
    redis_url = with_db(services.redis_connection_string, TEST_REDIS_DB)
    # A generous online-read bound: a loaded CI box must not turn reads into 503s.
    settings = Settings(
        feature_repo=root / "feature_repo", redis_connection_string=redis_url, redis_timeout_ms=2000
    )
    env = os.environ | {
        "FEATURE_REPO": str(settings.feature_repo),
        "REDIS_CONNECTION_STRING": redis_url,
        "REDIS_TIMEOUT_MS": "2000",
        "KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap_servers,
    }
    sync_client(redis_url).flushdb()

    files = generate(DATA, settings.data_dir)
    backfill_windows(files.transactions, settings.data_dir / "user_txn_windows.parquet")
    stack = Stack(settings, env)
    applied = stack.run(feast_cli(), "apply")
    assert applied.returncode == 0, applied.stderr
    yield stack


@pytest.fixture(scope="session")
def materialized(stack: Stack) -> Stack:
    """`feast materialize START END`, exactly as a user types it."""
    out = stack.run(feast_cli(), "materialize", MATERIALIZE_START, MATERIALIZE_END)
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
