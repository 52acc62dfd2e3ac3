"""A private Kafka broker for fault tests: a port and a data dir of its own, stopped and
started at will, keeping its topics across restarts.

Tests must never stop the shared broker (``ensure_kafka``, KAFKA_BOOTSTRAP_SERVERS): other
runs use it. To prove a client survives a broker restart, run a second one-node KRaft broker
with ``PrivateKafka``. ``stop()`` then ``start()`` restarts it over the same data dir, so every
acknowledged message, topic and partition is still there, as after a production restart::

    with PrivateKafka(settings, port=19092, data_dir=tmp / "kafka") as broker:
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        broker.stop()          # SIGTERM: a controlled shutdown; stop(kill=True): SIGKILL
        broker.start()         # same data dir: topics and offsets survive
    # leaving the block stops the broker; the data dir stays (the caller owns it)

The controller listens on ``port + 1``; the broker's log is ``<data_dir>/broker.log``,
appended across restarts. Its pid is recorded as ``kafka-<port>.pid`` in
``settings.services_dir``, so a broker left behind by a killed run of ours is stopped by the
next ``start`` on that port, while a port held by anything else is refused, never taken over.
Nothing happens at import time.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

from core.settings import Settings

from ._common import (
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
from .kafka_broker import (
    EXPECT,
    READY_TIMEOUT_S,
    broker_answers,
    broker_command,
    ensure_jars,
    find_java,
)

HOST = "127.0.0.1"
STOP_GRACE_S = 30.0  # a controlled shutdown of a one-node broker takes a few seconds


class PrivateKafka:
    """One KRaft broker on ``127.0.0.1:port`` over ``data_dir``; restartable, data kept."""

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
