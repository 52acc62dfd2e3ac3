"""Run an HTTP server as a child process until its readiness URL answers.

The demo, the tests and the benchmarks start `python -m serving` (and `feast serve`)
the way users do; this is the one place that waits for them and stops them.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serving_command(port: int, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "serving", "--port", str(port), "--workers", str(workers)]


@contextmanager
def launched(
    cmd: list[str],
    ready_url: str,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = 60.0,
) -> Iterator[None]:
    """Start ``cmd``, wait until ``ready_url`` answers below 500, stop it on exit."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(ready_url, timeout=1).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                raise RuntimeError(f"{' '.join(cmd[:4])} did not start; {log} ends:\n{tail}")
            time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)
