"""Helpers for the streaming integration tests: private users and topics per test run.

Each run remaps the stack's users to a fresh id range (and copies their profiles to
the online store under the new ids), so no other test's online values change, and
uses uuid-suffixed topics so runs never collide.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import cast

import pandas as pd
from confluent_kafka import Consumer, KafkaError, Producer

from core.aggregations import FEATURE_NAMES
from core.contract import WINDOWS_VIEW
from core.settings import PROJECT_ROOT
from core.store import open_store
from streaming.produce import encode, ensure_topic
from tests.conftest import Stack
from verify.stream_harness import expected_latest
from verify.topics import Topics, free_ports

FLOW = "streaming.dataflow:get_flow"


def private_events(stack: Stack, users: int, hours: float, end: datetime) -> pd.DataFrame:
    """The last ``hours`` of ``users`` users' transactions, shifted to end at ``end``,
    under fresh user ids whose profiles are copied to the online store."""
    tx = pd.read_parquet(stack.settings.data_dir / "transactions.parquet")
    tx = tx[tx.user_id < users]
    tx = tx[tx.event_timestamp > tx.event_timestamp.max() - timedelta(hours=hours)].copy()
    offset = 10**12 + uuid.uuid4().int % 10**9 * 1000
    tx["event_timestamp"] += end - tx.event_timestamp.max()
    tx["transaction_id"] = tx.transaction_id + f"-{offset}"
    profiles = pd.read_parquet(stack.settings.data_dir / "user_profile.parquet")
    latest = profiles[profiles.user_id.isin(tx.user_id.unique())]
    latest = latest.sort_values("event_timestamp").groupby("user_id").tail(1).copy()
    latest["user_id"] += offset
    latest["event_timestamp"] = datetime.now(timezone.utc) - timedelta(minutes=5)
    open_store(stack.settings).write_to_online_store("user_profile", latest)
    tx["user_id"] += offset
    return tx.drop(columns=["is_fraud"]).sort_values("event_timestamp").reset_index(drop=True)


def produce(bootstrap: str, topic: str, items: Iterable[tuple[bytes, bytes]], parts: int) -> None:
    ensure_topic(bootstrap, topic, parts)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for key, value in items:
        producer.produce(topic, value, key)
    assert producer.flush(30) == 0


def encoded(events: pd.DataFrame) -> list[tuple[bytes, bytes]]:
    return [encode(row) for row in events.to_dict("records")]


def drain(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes, dict[str, bytes]]]:
    """Every message of ``topic``, reading each partition to its end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.subscribe([topic])
    out: list[tuple[bytes | None, bytes, dict[str, bytes]]] = []
    done: set[int] = set()
    while len(done) < len(parts):
        msg = consumer.poll(10)
        assert msg is not None, f"timed out reading {topic}"
        err = msg.error()
        if err is not None:
            assert err.code() == KafkaError._PARTITION_EOF, err
            done.add(int(msg.partition() or 0))
            continue
        headers = dict(cast(list[tuple[str, bytes]], msg.headers() or []))
        out.append((msg.key(), msg.value() or b"", headers))
    consumer.close()
    return out


def scores(bootstrap: str, topic: str) -> pd.DataFrame:
    return pd.DataFrame([json.loads(v) for _, v, _ in drain(bootstrap, topic)])


def run_flow(
    stack: Stack, topics: Topics, *args: str, flow: str = f"{FLOW}(tail=False)"
) -> subprocess.CompletedProcess[str]:
    return stack.python("-m", "bytewax.run", flow, *args, env=topics.env())


def run_cluster(stack: Stack, topics: Topics, processes: int, timeout_s: float = 300) -> None:
    """The flow as a Bytewax cluster of ``processes`` processes (``-i``/``-a``), as it runs
    across hosts; here all on this one, each with one worker."""
    addresses = ";".join(f"127.0.0.1:{port}" for port in free_ports(processes))
    command = [sys.executable, "-m", "bytewax.run", f"{FLOW}(tail=False)", "-a", addresses]
    procs = [
        subprocess.Popen(
            [*command, "-i", str(i)],
            cwd=PROJECT_ROOT,
            env=stack.env | topics.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(processes)
    ]
    outputs = [proc.communicate(timeout=timeout_s)[0] for proc in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output


def popen_flow(
    stack: Stack, topics: Topics, *args: str, flow: str = f"{FLOW}(tail=False)"
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "streaming", flow, *args],
        cwd=PROJECT_ROOT,
        env=stack.env | topics.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def produce_paced(
    bootstrap: str, topic: str, items: list[tuple[bytes, bytes]], per_s: float
) -> threading.Thread:
    """Produce ``items`` at about ``per_s`` a second from a thread (joined by the caller)."""

    def run() -> None:
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        step = max(1, int(per_s / 20))
        for start in range(0, len(items), step):
            for key, value in items[start : start + step]:
                producer.produce(topic, value, key)
            producer.poll(0)
            time.sleep(0.05)
        assert producer.flush(30) == 0

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def online_windows(stack: Stack, users: list[int]) -> pd.DataFrame:
    got = open_store(stack.settings).get_online_features(
        features=[f"{WINDOWS_VIEW}:{n}" for n in FEATURE_NAMES],
        entity_rows=[{"user_id": u} for u in users],
    )
    return got.to_df().set_index("user_id")


def assert_online_equals_backfill(stack: Stack, events: pd.DataFrame) -> None:
    want = expected_latest(events)
    got = online_windows(stack, [int(u) for u in want.index])
    for name in FEATURE_NAMES:
        pd.testing.assert_series_equal(
            got[name].astype("float64"), want[name].astype("float64"), obj=name
        )
