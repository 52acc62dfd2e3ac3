"""The streaming dataflow as the harness runs it: its environment, and launching,
interrupting or running it to the end as ``python -m streaming``/``bytewax.run`` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.settings import PROJECT_ROOT, Settings
from harness.kafka import Topics
from harness.servers import free_ports
from streaming.__main__ import FLOW

BATCH_FLOW = f"{FLOW}(tail=False)"  # stops at the topics' ends


def flow_env(settings: Settings, bootstrap: str, topics: Topics) -> dict[str, str]:
    """This process's environment plus the flow's settings: repo, Redis, Kafka, model, topics."""
    env = os.environ | topics.env()
    env |= {
        "FEATURE_REPO": str(settings.feature_repo),
        "REDIS_CONNECTION_STRING": settings.redis_connection_string,
        "REDIS_TYPE": settings.redis_type,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
    }
    if settings.model_dir is not None:
        env["MODEL_DIR"] = str(settings.model_dir)
    return env


def launch_flow(
    env: dict[str, str], recovery: Path, log: Path, tail: bool
) -> subprocess.Popen[bytes]:
    """``fraud-stream`` (``python -m streaming``) with recovery on in ``recovery``, a
    snapshot every second and no backup delay; output, with a progress line every second,
    appended to ``log``."""
    args = ["-r", str(recovery), "-s", "1", "-b", "0"]
    env = env | {"STREAM_LOG_INTERVAL_S": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streaming", f"{FLOW}(tail={tail})", *args],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def interrupt(flow: subprocess.Popen[bytes], grace_s: float = 15) -> None:
    """Ctrl-C for a tailing flow we are done with; SIGKILL if it does not stop in time."""
    if flow.poll() is None:
        flow.send_signal(signal.SIGINT)
        try:
            flow.wait(grace_s)
        except subprocess.TimeoutExpired:
            flow.kill()
            flow.wait()


def run_flow(
    env: dict[str, str], *args: str, flow: str = BATCH_FLOW, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m bytewax.run FLOW ARGS`` to its end, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "bytewax.run", flow, *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def cluster_commands(processes: int, flow: str = BATCH_FLOW) -> list[list[str]]:
    """One ``bytewax.run -i I -a ADDRESSES`` command per process of a local Bytewax cluster,
    as it runs across hosts; each process has one worker."""
    addresses = ";".join(f"127.0.0.1:{port}" for port in free_ports(processes))
    command = [sys.executable, "-m", "bytewax.run", flow, "-a", addresses]
    return [[*command, "-i", str(i)] for i in range(processes)]


def run_cluster(env: dict[str, str], processes: int, timeout_s: float = 300) -> None:
    """The batch flow as a local Bytewax cluster of ``processes`` processes to its end;
    RuntimeError with its output if any process fails."""
    procs = [
        subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for command in cluster_commands(processes)
    ]
    outputs = [proc.communicate(timeout=timeout_s)[0] for proc in procs]
    for i, (proc, output) in enumerate(zip(procs, outputs, strict=True)):
        if proc.returncode != 0:
            raise RuntimeError(f"cluster process {i} exited {proc.returncode}:\n{output}")


@contextmanager
def tailing(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``fraud-stream`` tailing its topics, as deployed; interrupted on exit."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streaming"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        interrupt(proc)
