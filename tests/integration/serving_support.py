"""Helpers for the serving tests: an app over the test stack, and a real uvicorn process."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.settings import PROJECT_ROOT, Settings
from serving.launch import free_port, launched, serving_command
from tests.conftest import Stack

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
    """A throwaway redis-server of our own, to stop and restart at will."""
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield proc
    finally:
        proc.kill()
        proc.wait()
