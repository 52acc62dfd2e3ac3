"""`make demo`'s streaming step: the last day's final transactions through the dataflow.

Through Kafka (fresh demo topics) when a broker answers, else in replay mode from a JSONL
file; it says which. Two malformed events ride along to show the dead-letter path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
from confluent_kafka import Consumer, Producer

from core.settings import PROJECT_ROOT, Settings, get_settings
from devservices import kafka_is_up
from streaming.produce import encode, ensure_topic

EVENTS = 3000
PARTITIONS = 2
FLOW = "streaming.dataflow:get_flow"
MALFORMED = [(b"1", b'{"user_id": 1, "amount": '), (b"2", b'{"user_id": "two", "amount": -5}')]


def messages(settings: Settings) -> list[tuple[bytes, bytes]]:
    tx = pd.read_parquet(settings.data_dir / "transactions.parquet").tail(EVENTS)
    now = datetime.now(timezone.utc)  # event time := now, as a live feed would carry it
    return [encode(row, now) for row in tx.to_dict("records")] + MALFORMED


def drain(bootstrap: str, topic: str) -> list[tuple[bytes, dict[str, bytes]]]:
    """Every message of a finished topic: read until three seconds pass without one."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"demo-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    out: list[tuple[bytes, dict[str, bytes]]] = []
    idle = 0
    while idle < 6:
        msg = consumer.poll(0.5)
        error = None if msg is None else msg.error()
        if msg is None or error is not None:
            idle += 1
            continue
        idle = 0
        pairs = cast(list[tuple[str, bytes]], msg.headers() or [])
        out.append((msg.value() or b"", dict(pairs)))
    consumer.close()
    return out


def through_kafka(
    settings: Settings, msgs: list[tuple[bytes, bytes]]
) -> tuple[list[Any], list[str]]:
    suffix = uuid.uuid4().hex[:8]
    topics = {
        "STREAM_TRANSACTIONS_TOPIC": f"demo-transactions-{suffix}",
        "STREAM_SCORES_TOPIC": f"demo-scores-{suffix}",
        "STREAM_DEAD_LETTER_TOPIC": f"demo-dlq-{suffix}",
    }
    bootstrap = settings.kafka_bootstrap_servers
    for topic in topics.values():
        ensure_topic(bootstrap, topic, PARTITIONS)
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in msgs:
        producer.produce(topics["STREAM_TRANSACTIONS_TOPIC"], value, key)
    producer.flush()
    run([f"{FLOW}(tail=False)"], topics)
    scores = [json.loads(v) for v, _ in drain(bootstrap, topics["STREAM_SCORES_TOPIC"])]
    reasons = [
        h["reason"].decode() for _, h in drain(bootstrap, topics["STREAM_DEAD_LETTER_TOPIC"])
    ]
    return scores, reasons


def replay(msgs: list[tuple[bytes, bytes]]) -> tuple[list[Any], list[str]]:
    work = Path(tempfile.mkdtemp(prefix="demo-stream-"))
    (work / "in.jsonl").write_bytes(b"\n".join(v for _, v in msgs) + b"\n")
    run([f"{FLOW}(replay='{work / 'in.jsonl'}', out_dir='{work}')"], {})
    scores = [json.loads(line) for line in (work / "scores.jsonl").read_text().splitlines()]
    dead = [json.loads(line)["reason"] for line in (work / "dlq.jsonl").read_text().splitlines()]
    return scores, dead


def run(args: list[str], env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "bytewax.run", *args],
        cwd=PROJECT_ROOT,
        env=os.environ | env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def main() -> None:
    settings = get_settings()
    msgs = messages(settings)
    use_kafka = kafka_is_up(settings)
    scores, dead = through_kafka(settings, msgs) if use_kafka else replay(msgs)
    mode = f"through Kafka at {settings.kafka_bootstrap_servers}" if use_kafka else "replay mode"
    latency = np.array([s["latency_ms"] for s in scores]) if scores else np.zeros(1)
    by_reason = {r: dead.count(r) for r in sorted(set(dead))}
    print(
        f"  streaming          {mode}: {len(msgs)} events in, {len(scores)} scores out, "
        f"{len(dead)} dead letters {by_reason}; enqueue-to-score p50 "
        f"{np.percentile(latency, 50):.0f} ms, p99 {np.percentile(latency, 99):.0f} ms "
        "(events were queued before the flow started; `make bench-stream` measures freshness)"
    )


if __name__ == "__main__":
    main()
