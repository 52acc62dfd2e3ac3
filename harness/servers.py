"""Servers the tests, proofs, benchmarks and demo start and stop: free ports, ``python -m
serving``/``feast serve`` until ready, and private Redis and Kafka servers to kill at will.

The shared Redis and Kafka (``devservices``) are never stopped: a case that kills a server
starts a private one on a port of its own.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import redis

from core.settings import PROJECT_ROOT, Settings
from devservices._common import (
    ServiceError,
    log_tail,
    our_process,
    pid_file,
    service_lock,
    start_detached,
    tcp_open,
    terminate,
    wait_until,
    write_pid,
)
from devservices.kafka_broker import (
    EXPECT,
    READY_TIMEOUT_S,
    broker_answers,
    broker_command,
    ensure_jars,
    find_java,
)

HOST = "127.0.0.1"

# One valid scoring request, for the serving tests.
SAMPLE_REQUEST: dict[str, Any] = {
    "user_id": 5,
    "merchant_id": 3,
    "amount": 120.5,
    "channel": "online",
    "country": "GB",
}


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free right now (held together, so never the same one)."""
    socks = [socket.socket() for _ in range(n)]
    for sock in socks:
        sock.bind((HOST, 0))
    ports = [int(sock.getsockname()[1]) for sock in socks]
    for sock in socks:
        sock.close()
    return ports


def free_port() -> int:
    (port,) = free_ports(1)
    return port


def serving_command(port: int, workers: int = 1) -> list[str]:
    """``python -m serving`` as users run it."""
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


@contextmanager
def serving_process(env: dict[str, str], log: Path) -> Iterator[str]:
    """``python -m serving`` as users run it, from the project root with ``env``; yields its
    base URL once /health answers."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    with launched(serving_command(port), f"{url}/health", log, env, PROJECT_ROOT):
        yield url


@dataclass
class PrivateRedis:
    """A redis-server of our own on loopback: to kill and restart, or to lock with a password.

    A case that kills Redis copies the online-store rows it needs into this one and saves
    them to its RDB file, so a restart comes back with the same data, as a production Redis
    with persistence does."""

    port: int
    workdir: Path
    extra_args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, timeout_s: float = 10.0) -> None:
        """Start (or restart) the server; returns once it accepts connections."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = ["redis-server", "--port", str(self.port), "--bind", HOST]
        cmd += ["--dir", str(self.workdir), "--dbfilename", "dump.rdb"]
        cmd += ["--save", "", "--appendonly", "no", *self.extra_args]
        with (self.workdir / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while not tcp_open(HOST, self.port):
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
def private_redis(
    port: int, workdir: Path | None = None, *extra_args: str
) -> Iterator[PrivateRedis]:
    """A started ``PrivateRedis``, killed on exit (``workdir`` None: a temporary one)."""
    with tempfile.TemporaryDirectory(prefix="redis-") as tmp:
        server = PrivateRedis(port, workdir or Path(tmp), extra_args)
        server.start()
        try:
            yield server
        finally:
            server.kill()


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


STOP_GRACE_S = 30.0  # a controlled shutdown of a one-node broker takes a few seconds


class PrivateKafka:
    """One KRaft broker on ``127.0.0.1:port`` over ``data_dir``: ``stop()`` then ``start()``
    restarts it over the same data dir, so acknowledged messages, topics and offsets survive,
    as after a production restart. The controller listens on ``port + 1``; the log is
    ``<data_dir>/broker.log``; the pid is recorded in ``settings.services_dir`` so a broker
    left behind by a killed run of ours is stopped by the next ``start`` on that port."""

    def __init__(self, settings: Settings, port: int, data_dir: Path, heap: str = "512m") -> None:
        if not 1024 <= port < 65535:
            raise ServiceError(f"port {port}: choose 1024..65534 (the controller takes port + 1)")
        self.settings = settings
        self.port = port
        self.data_dir = data_dir
        self.heap = heap
        self.log = data_dir / "broker.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self.running else None

    @property
    def _name(self) -> str:
        return f"kafka-{self.port}"

    def is_up(self) -> bool:
        """True if the broker answers a metadata request."""
        return broker_answers(self.bootstrap, HOST, self.port)

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Start the broker over ``data_dir`` (formatted on first use); the seconds it took to
        answer. A no-op returning 0 if it runs already."""
        if self.running:
            return 0.0
        services_dir = self.settings.services_dir
        with service_lock(services_dir, self._name):
            leftover = our_process(services_dir, self._name, EXPECT)
            if leftover is not None:  # a run of ours killed before its stop()
                terminate(leftover.pid, EXPECT)
                pid_file(services_dir, self._name).unlink(missing_ok=True)
            for port in (self.port, self.port + 1):
                if tcp_open(HOST, port):
                    raise ServiceError(
                        f"port {port} is in use; PrivateKafka runs only a broker of its own, "
                        "so choose a free port (the controller takes port + 1)"
                    )
            self.data_dir.mkdir(parents=True, exist_ok=True)
            libs = ensure_jars(self.settings)
            cmd = broker_command(find_java(), libs, self.data_dir, HOST, self.port, self.heap)
            began = time.monotonic()
            self._proc = start_detached(cmd, self.log, cwd=self.data_dir, append=True)
            write_pid(services_dir, self._name, self._proc.pid, self.bootstrap)
        outcome = wait_until(self.is_up, lambda: not self.running, timeout_s, 0.1)
        if outcome == "ready":
            return time.monotonic() - began
        self.stop(kill=True)
        what = "exited" if outcome == "died" else f"did not answer within {timeout_s:.0f} s"
        raise ServiceError(f"private Kafka broker {what}; log {self.log}: {log_tail(self.log)}")

    def stop(self, kill: bool = False) -> int | None:
        """SIGTERM (a controlled shutdown, waited for) or SIGKILL; the exit code, None if it
        was not running. The data dir is kept for the next ``start``."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        pid_file(self.settings.services_dir, self._name).unlink(missing_ok=True)
        return proc.returncode

    def __enter__(self) -> PrivateKafka:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
