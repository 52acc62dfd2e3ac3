"""`make demo`'s streaming step: the last day's final transactions through the dataflow.

Through Kafka (fresh demo topics) when a broker answers, else in replay mode from a JSONL
file; it says which. Two malformed events ride along to show the dead-letter path.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.settings import Settings, get_settings
from devservices import kafka_is_up
from harness.flow import BATCH_FLOW, FLOW, flow_env, run_flow
from harness.kafka import Topics, drain, produce
from streaming.produce import encode

EVENTS = 3000
PARTITIONS = 2
MALFORMED = [(b"1", b'{"user_id": 1, "amount": '), (b"2", b'{"user_id": "two", "amount": -5}')]


def messages(settings: Settings) -> list[tuple[bytes, bytes]]:
    tx = pd.read_parquet(settings.data_dir / "transactions.parquet").tail(EVENTS)
    now = datetime.now(timezone.utc)  # event time := now, as a live feed would carry it
    return [encode(row, now) for row in tx.to_dict("records")] + MALFORMED


def through_kafka(
    settings: Settings, msgs: list[tuple[bytes, bytes]]
) -> tuple[list[Any], list[str]]:
    bootstrap = settings.kafka_bootstrap_servers
    topics = Topics.created("demo", bootstrap, PARTITIONS)
    produce(bootstrap, topics.transactions, msgs, PARTITIONS)
    run(BATCH_FLOW, flow_env(settings, bootstrap, topics))
    scores = [json.loads(r.value) for r in drain(bootstrap, topics.scores)]
    reasons = [r.headers["reason"].decode() for r in drain(bootstrap, topics.dlq)]
    return scores, reasons


def replay(msgs: list[tuple[bytes, bytes]]) -> tuple[list[Any], list[str]]:
    work = Path(tempfile.mkdtemp(prefix="demo-stream-"))
    (work / "in.jsonl").write_bytes(b"\n".join(v for _, v in msgs) + b"\n")
    run(f"{FLOW}(replay='{work / 'in.jsonl'}', out_dir='{work}')", dict(os.environ))
    scores = [json.loads(line) for line in (work / "scores.jsonl").read_text().splitlines()]
    dead = [json.loads(line)["reason"] for line in (work / "dlq.jsonl").read_text().splitlines()]
    return scores, dead


def run(flow: str, env: dict[str, str]) -> None:
    done = run_flow(env, flow=flow)
    if done.returncode != 0:
        raise SystemExit(f"the flow failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


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
