"""A redis-server of our own on loopback: to kill and restart, or to lock with a password.

The shared Redis is never stopped: a proof that kills Redis starts this one, copies the
online-store rows it needs into it, and saves them to its RDB file, so a restart comes
back with the same data, as a production Redis with persistence does.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis


@dataclass
class PrivateRedis:
    port: int
    workdir: Path
    extra_args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, timeout_s: float = 10.0) -> None:
        """Start (or restart) the server; returns once it accepts connections."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--dir", str(self.workdir), "--dbfilename", "dump.rdb"]
        cmd += ["--save", "", "--appendonly", "no", *self.extra_args]
        with (self.workdir / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while not _accepts(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server on port {self.port} did not start; see {log.name}"
                )
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would: no shutdown save."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def private_redis(port: int, workdir: Path, *extra_args: str) -> Iterator[PrivateRedis]:
    server = PrivateRedis(port, workdir, extra_args)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def copy_rows(source: redis.Redis, target: redis.Redis) -> int:
    """Copy every key of the source database (DUMP/RESTORE), then SAVE the target to disk."""
    copied = 0
    keys: list[bytes] = []
    for key in source.scan_iter(count=1000):
        keys.append(key)
        if len(keys) == 1000:
            copied += _copy(source, target, keys)
            keys = []
    copied += _copy(source, target, keys)
    target.save()
    return copied


def _copy(source: redis.Redis, target: redis.Redis, keys: list[bytes]) -> int:
    if not keys:
        return 0
    read = source.pipeline(transaction=False)
    for key in keys:
        read.dump(key)
    write = target.pipeline(transaction=False)
    for key, value in zip(keys, read.execute(), strict=True):
        if value is not None:  # expired between SCAN and DUMP
            write.restore(key, 0, value, replace=True)
    write.execute()
    return len(keys)
