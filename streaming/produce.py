"""``fraud-produce``: replay the synthetic transactions into Kafka, paced or as fast as possible.

Messages are keyed by user_id, so one user's events stay in order in one partition
(the window state relies on it), and carry no label. ``--retime`` stamps each event
with its send time, so its aggregates are fresh enough for the online store's TTL.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from confluent_kafka import Producer

from core.cli import Parser, UserError, run_cli
from core.events import TRANSACTION_SCHEMA
from core.kafka import ensure_stream_topics, producer_config
from core.settings import get_settings

FIELDS = TRANSACTION_SCHEMA.names


def encode(row: Mapping[Any, Any], now: datetime | None = None) -> tuple[bytes, bytes]:
    """(key, JSON value) of one transaction; ``now`` replaces its event time."""
    ts = now or row["event_timestamp"]
    assert isinstance(ts, datetime)
    body = {f: row[f] for f in FIELDS} | {"event_timestamp": ts.isoformat()}
    return str(row["user_id"]).encode(), json.dumps(body).encode()


def read_rows(path: Path, limit: int | None) -> Iterator[dict[str, object]]:
    """Rows in file order (event-time order for datagen output), streamed by record batch."""
    sent = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536, columns=FIELDS):
        for row in batch.to_pylist():
            if limit is not None and sent >= limit:
                return
            sent += 1
            yield row


def send(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    """Queue one message, waiting while librdkafka's local queue is full."""
    while True:
        try:
            producer.produce(topic, value, key)
            return
        except BufferError:  # local queue full: let deliveries drain it
            producer.poll(0.05)


def produce(
    producer: Producer,
    topic: str,
    rows: Iterable[Mapping[Any, Any]],
    rate: float | None,
    retime: bool,
) -> int:
    """Send every row; at ``rate`` events/s the pacing is checked every 1/100 s of events."""
    began = time.perf_counter()
    chunk = max(1, int(rate / 100)) if rate else 10_000
    sent = 0
    for row in rows:
        key, value = encode(row, datetime.now(timezone.utc) if retime else None)
        send(producer, topic, key, value)
        sent += 1
        if sent % chunk == 0:
            producer.poll(0)
            if rate:
                ahead = sent / rate - (time.perf_counter() - began)
                if ahead > 0:
                    time.sleep(ahead)
    producer.flush()
    return sent


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fraud-produce", description=__doc__)
    parser.add_argument("--file", type=Path, help="default: <data dir>/transactions.parquet")
    parser.add_argument("--topic", help="default: STREAM_TRANSACTIONS_TOPIC")
    parser.add_argument("--rate", type=float, help="events/s (default: as fast as possible)")
    parser.add_argument("--limit", type=int, help="send at most this many events")
    parser.add_argument(
        "--partitions", type=int, help="if the topic is created (default: KAFKA_TOPIC_PARTITIONS)"
    )
    parser.add_argument("--retime", action="store_true", help="event time := send time")
    return parser


def _main(args: argparse.Namespace) -> int:
    settings = get_settings()
    path = args.file or settings.data_dir / "transactions.parquet"
    if not path.exists():
        raise UserError(f"no {path}; run `python -m datagen` first")
    if args.rate is not None and args.rate <= 0:
        raise UserError("--rate must be positive")
    topic = args.topic or settings.stream_transactions_topic
    ensure_stream_topics(settings, [topic], args.partitions)
    producer = Producer(producer_config(settings) | {"linger.ms": 5})
    began = time.perf_counter()
    sent = produce(producer, topic, read_rows(path, args.limit), args.rate, args.retime)
    elapsed = time.perf_counter() - began
    print(f"sent {sent} events to {topic} in {elapsed:.1f} s ({sent / max(elapsed, 1e-9):.0f}/s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
