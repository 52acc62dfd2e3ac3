"""Shared plumbing: errors, handles, pid files and detached processes.

Everything here is about the processes *we* start, so ``down`` can stop exactly those
and never touch a Redis or Kafka someone else runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from core.cli import UserError

STOP_GRACE_S = 10.0
MAVEN_MARKER = ".complete"  # in a jar cache: the hash of the pom it was fetched for


class ServiceError(UserError):
    """A service could not be found, started or stopped; ``core.cli`` prints it in one line."""


@dataclass(frozen=True)
class ServiceHandle:
    """What ``ensure_*`` found or started, so callers know whether they own it."""

    name: str
    address: str
    state: Literal["reused", "started"]
    pid: int | None = None
    log: Path | None = None

    def describe(self) -> str:
        if self.state == "reused":
            return f"{self.name}: reused at {self.address}"
        return f"{self.name}: started (pid {self.pid}) at {self.address}, log {self.log}"


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """``host[:port]`` -> (host, port); raises ServiceError on a bad port."""
    text = text.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    if text.startswith("["):  # [::1]:6379
        host, _, rest = text[1:].partition("]")
        port_text = rest.lstrip(":")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if not port_text:
        return host or "localhost", default_port
    try:
        port = int(port_text)
    except ValueError:
        raise ServiceError(f"bad port in {text!r}; expected host:port") from None
    if not 0 < port < 65536:
        raise ServiceError(f"port {port} in {text!r} is out of range")
    return host or "localhost", port


def is_local_host(host: str) -> bool:
    """We only ever start services bound to 127.0.0.1, so the name must reach it."""
    if host in {"localhost", "127.0.0.1"}:
        return True
    try:
        infos = socket.getaddrinfo(host, None, family=socket.AF_INET)
    except OSError:
        return False
    return any(info[4][0] == "127.0.0.1" for info in infos)


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Cheap "is anything listening" probe, used before slower protocol checks."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def service_lock(services_dir: Path, name: str) -> Iterator[None]:
    """Serialise ensure/stop of one service across processes (e.g. parallel test runs)."""
    services_dir.mkdir(parents=True, exist_ok=True)
    with open(services_dir / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def pid_file(services_dir: Path, name: str) -> Path:
    return services_dir / f"{name}.pid"


class Started(NamedTuple):
    """A process we started, as recorded in its pid file."""

    pid: int
    address: str


def read_pid(services_dir: Path, name: str) -> Started | None:
    """Pid file format: the pid on line 1 (so `kill $(head -1 f)` works), address on line 2."""
    try:
        pid_text, _, address = pid_file(services_dir, name).read_text().partition("\n")
        return Started(int(pid_text), address.strip())
    except (OSError, ValueError):
        return None


def write_pid(services_dir: Path, name: str, pid: int, address: str) -> None:
    pid_file(services_dir, name).write_text(f"{pid}\n{address}\n")


def pid_alive(pid: int, expect: str) -> bool:
    """True if ``pid`` runs and its command line contains ``expect`` (guards pid reuse)."""
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child that exited: reap it
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return True  # no /proc: trust the pid
    return expect.encode() in cmdline


def our_process(services_dir: Path, name: str, expect: str) -> Started | None:
    """The process from our pid file if it still runs; drops a stale file."""
    started = read_pid(services_dir, name)
    if started is None:
        pid_file(services_dir, name).unlink(missing_ok=True)
        return None
    if pid_alive(started.pid, expect):
        return started
    pid_file(services_dir, name).unlink(missing_ok=True)
    return None


def check_same_address(name: str, ours: Started, address: str) -> None:
    """One instance per service per services_dir: never silently swap ours for another."""
    if ours.address != address:
        raise ServiceError(
            f"the {name} we started (pid {ours.pid}) serves {ours.address}, not {address}; "
            f"run `python -m devservices down --only {name}` first or use another SERVICES_DIR"
        )


def status_line(name: str, ours: Started | None, address: str, up: bool) -> str:
    """``<name>: started (pid N) | reused | down at <address>``."""
    if ours is None:
        return f"{name}: {'reused' if up else 'down'} at {address}"
    line = f"{name}: started (pid {ours.pid}) at {ours.address}"
    if ours.address != address:
        return f"{line}; settings point at {address}"
    return line if up else f"{line}, NOT answering"


def start_detached(
    cmd: list[str], log: Path, cwd: Path, append: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session so it outlives us and Ctrl-C in our terminal."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab" if append else "wb") as out:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )


def terminate(pid: int, expect: str, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if not pid_alive(pid, expect):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not pid_alive(pid, expect):
                return
            time.sleep(0.1)
    raise ServiceError(f"pid {pid} survived SIGKILL; check it with `ps -p {pid}`")


def wait_until(
    ready: Callable[[], bool], died: Callable[[], bool], timeout_s: float, interval_s: float = 0.2
) -> Literal["ready", "died", "timeout"]:
    """Poll ``ready`` until it holds, the process dies, or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if ready():
            return "ready"
        if died():
            return "died"
        if time.monotonic() >= deadline:
            return "timeout"
        time.sleep(interval_s)


@dataclass(frozen=True)
class Managed:
    """A server kind ``devservices`` starts itself: its pid-file name, a string its command
    line must contain (so a recycled pid is never taken for it), and its name in messages."""

    name: str
    expect: str
    label: str

    def launch(
        self,
        cmd: list[str],
        log: Path,
        cwd: Path,
        address: str,
        services_dir: Path,
        up: Callable[[], bool],
        timeout_s: float,
        interval_s: float = 0.2,
        cleanup: Callable[[], None] = lambda: None,
    ) -> ServiceHandle:
        """Start ``cmd`` detached and wait until ``up``; on failure leave nothing behind."""
        proc = start_detached(cmd, log, cwd=cwd)
        write_pid(services_dir, self.name, proc.pid, address)
        outcome = wait_until(up, lambda: proc.poll() is not None, timeout_s, interval_s)
        if outcome == "ready":
            return ServiceHandle(self.name, address, "started", proc.pid, log)
        if outcome == "timeout":
            terminate(proc.pid, self.expect)
        pid_file(services_dir, self.name).unlink(missing_ok=True)
        cleanup()
        what = "exited" if outcome == "died" else f"did not answer within {timeout_s:.0f} s"
        raise ServiceError(f"{self.label} {what}; log {log}: {log_tail(log)}")

    def stop(self, services_dir: Path, cleanup: Callable[[], None] = lambda: None) -> int | None:
        """Stop the process we started (if any); returns its pid. Others' are left alone."""
        with service_lock(services_dir, self.name):
            ours = our_process(services_dir, self.name, self.expect)
            if ours is not None:
                terminate(ours.pid, self.expect)
            pid_file(services_dir, self.name).unlink(missing_ok=True)
            cleanup()
            return None if ours is None else ours.pid


def log_tail(log: Path, lines: int = 5, width: int = 600) -> str:
    """Last log lines squeezed into one line, so errors stay single-line."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    joined = " | ".join(tail) or "(log is empty)"
    return joined if len(joined) <= width else "..." + joined[-width:]


def maven_fetch(pom: Path, libs: Path, what: str, expect: str) -> Path:
    """Copy ``pom``'s runtime dependencies from Maven Central into ``libs`` once; a marker
    holds the pom's hash, so editing the pom refetches. ``expect``: a glob that must match."""
    pom_hash = hashlib.sha256(pom.read_bytes()).hexdigest()
    with contextlib.suppress(OSError):
        if (libs / MAVEN_MARKER).read_text().strip() == pom_hash and any(libs.glob(expect)):
            return libs
    mvn = shutil.which("mvn")
    if not mvn:
        raise ServiceError(
            f"{what} is not cached in {libs} and `mvn` is missing; run `apt-get install maven`"
        )
    staging = libs.with_name(libs.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies"]
    cmd += [f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise ServiceError(f"mvn took over 15 min resolving {what}; check network") from None
    if done.returncode != 0 or not any(staging.glob(expect)):
        lines = (done.stdout + done.stderr).strip().splitlines() or ["no output"]
        errors = [line for line in lines if "ERROR" in line] or lines
        raise ServiceError(f"mvn could not fetch {what}: {errors[0].strip()}")
    (staging / MAVEN_MARKER).write_text(pom_hash + "\n")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    return libs
