"""Helpers for the serving tests: a request row, settings over the test stack, and
`python -m serving` and a throwaway Redis as real processes (from ``harness.servers``)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.settings import PROJECT_ROOT, Settings
from harness.servers import free_port, launched, private_redis, serving_command
from tests.conftest import Stack

__all__ = ["ROW", "free_port", "redis_server", "settings_for", "uvicorn_process"]

ROW: dict[str, Any] = {
    "user_id": 5,
    "merchant_id": 3,
    "amount": 120.5,
    "channel": "online",
    "country": "GB",
}


def settings_for(stack: Stack, **overrides: Any) -> Settings:
    return Settings(**(stack.settings.model_dump() | overrides))


@contextmanager
def uvicorn_process(stack: Stack, env: dict[str, str], log: Path) -> Iterator[str]:
    """`python -m serving` as users run it; yields its base URL once /health answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with launched(serving_command(port), f"{url}/health", log, stack.env | env, PROJECT_ROOT):
        yield url


@contextmanager
def redis_server(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A throwaway redis-server of our own (``harness.servers.private_redis``), to kill and
    restart at will; yields its process."""
    with private_redis(port) as server:
        assert server.proc is not None
        yield server.proc
