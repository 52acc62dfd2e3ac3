"""Helpers for the streaming integration tests, over the harness (``harness.kafka``,
``harness.flow``, ``harness.stream``): private users and topics per test run.

Each run remaps the stack's users to a fresh id range (and copies their profiles to
the online store under the new ids), so no other test's online values change, and
uses uuid-suffixed topics so runs never collide.
"""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta

import pandas as pd

from core.aggregations import FEATURE_NAMES
from core.settings import PROJECT_ROOT
from harness.flow import BATCH_FLOW, cluster_commands
from harness.kafka import Topics, drain, encoded, produce, scores
from harness.stream import expected_latest, online_windows, privatize
from tests.conftest import Stack

__all__ = [
    "Topics",
    "assert_online_equals_backfill",
    "drain",
    "encoded",
    "online_windows",
    "private_events",
    "produce",
    "run_cluster",
    "run_flow",
    "scores",
]


def private_events(stack: Stack, users: int, hours: float, end: datetime) -> pd.DataFrame:
    """The last ``hours`` of ``users`` users' transactions, shifted to end at ``end``,
    under fresh user ids whose profiles are copied to the online store."""
    tx = pd.read_parquet(stack.settings.data_dir / "transactions.parquet")
    tx = tx[tx.user_id < users]
    tx = tx[tx.event_timestamp > tx.event_timestamp.max() - timedelta(hours=hours)]
    return privatize(stack.settings, tx, end - tx.event_timestamp.max())


def run_flow(
    stack: Stack, topics: Topics, *args: str, flow: str = BATCH_FLOW
) -> subprocess.CompletedProcess[str]:
    return stack.python("-m", "bytewax.run", flow, *args, env=topics.env())


def run_cluster(stack: Stack, topics: Topics, processes: int, timeout_s: float = 300) -> None:
    """The flow as a Bytewax cluster of ``processes`` processes (``-i``/``-a``), as it runs
    across hosts; here all on this one, each with one worker."""
    procs = [
        subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=stack.env | topics.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for command in cluster_commands(processes)
    ]
    outputs = [proc.communicate(timeout=timeout_s)[0] for proc in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output


def assert_online_equals_backfill(stack: Stack, events: pd.DataFrame) -> None:
    want = expected_latest(events)
    got = online_windows(stack.settings, [int(u) for u in want.index])
    for name in FEATURE_NAMES:
        pd.testing.assert_series_equal(
            got[name].astype("float64"), want[name].astype("float64"), obj=name
        )
