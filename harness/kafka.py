"""Kafka for tests, proofs, benchmarks and the demo: private topics, producing, reading a
topic to its end, a paced producer and a score watcher.

All share the one broker; uuid-tagged topics keep runs apart. Threads here re-raise their
failure in the caller's ``join``, so an assert inside one is never lost.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple, cast

import pandas as pd
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from core.kafka import ensure_topics
from streaming.produce import encode, send

QUIET = {"log_level": 2}  # our clients: no librdkafka FAIL lines while a broker is down


@dataclass(frozen=True)
class Topics:
    """One run's transactions, scores and dead-letter topics."""

    transactions: str
    scores: str
    dlq: str

    @classmethod
    def fresh(cls, prefix: str) -> Topics:
        tag = uuid.uuid4().hex[:10]
        return cls(f"{prefix}-tx-{tag}", f"{prefix}-scores-{tag}", f"{prefix}-dlq-{tag}")

    @classmethod
    def created(cls, prefix: str, bootstrap: str, partitions: int) -> Topics:
        """Fresh topics, created up front with ``partitions`` partitions each."""
        topics = cls.fresh(prefix)
        names = (topics.transactions, topics.scores, topics.dlq)
        ensure_topics({"bootstrap.servers": bootstrap}, names, partitions)
        return topics

    def env(self) -> dict[str, str]:
        """The flow's topic settings, as environment variables."""
        return {
            "STREAM_TRANSACTIONS_TOPIC": self.transactions,
            "STREAM_SCORES_TOPIC": self.scores,
            "STREAM_DEAD_LETTER_TOPIC": self.dlq,
        }


# One well-formed transaction event: tests and benchmarks vary it with `|`.
SAMPLE_EVENT: dict[str, object] = {
    "transaction_id": "t1",
    "user_id": 1,
    "merchant_id": 2,
    "amount": 12.5,
    "channel": "pos",
    "country": "NL",
    "event_timestamp": "2026-01-01T00:00:00Z",
}


class Record(NamedTuple):
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


def encoded(events: pd.DataFrame) -> list[tuple[bytes, bytes]]:
    """(key, value) of every event, as ``fraud-produce`` sends them."""
    return [encode(row) for row in events.to_dict("records")]


def produce(bootstrap: str, topic: str, items: Iterable[tuple[bytes, bytes]], parts: int) -> None:
    """Create ``topic`` if needed and produce every (key, value), all acknowledged."""
    ensure_topics({"bootstrap.servers": bootstrap}, [topic], parts)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20})
    for key, value in items:
        send(producer, topic, key, value)
    if producer.flush(60) != 0:
        raise TimeoutError(f"messages to {topic} not acknowledged within 60 s")


def read_topic(
    bootstrap: str, topic: str, timeout_s: float = 60, at_least: int = 0
) -> list[Message]:
    """Every message of ``topic``, each partition read to its end, and at least ``at_least``
    messages (waiting for a flow still writing); TimeoutError if not within ``timeout_s``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"harness-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "fetch.max.bytes": 64 << 20,  # room for the fuzzer's near-limit messages
        }
        | QUIET
    )
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.subscribe([topic])
    out: list[Message] = []
    done: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while (len(done) < len(parts) or len(out) < at_least) and time.monotonic() < deadline:
        for msg in consumer.consume(10_000, 0.5):
            err = msg.error()
            if err is None:
                out.append(msg)
            elif err.code() == KafkaError._PARTITION_EOF:
                done.add(int(msg.partition() or 0))
            else:
                consumer.close()
                raise KafkaException(err)
    consumer.close()
    if len(done) < len(parts) or len(out) < at_least:
        raise TimeoutError(f"read {len(out)} messages of {topic}, not all within {timeout_s} s")
    return out


def drain(bootstrap: str, topic: str, timeout_s: float = 60) -> list[Record]:
    """``read_topic`` as (key, value, headers) records."""
    return [
        Record(m.key(), m.value() or b"", dict(cast(list[tuple[str, bytes]], m.headers() or [])))
        for m in read_topic(bootstrap, topic, timeout_s)
    ]


def scores(bootstrap: str, topic: str) -> pd.DataFrame:
    """The scores topic as a frame, one row per message."""
    return pd.DataFrame([json.loads(r.value) for r in drain(bootstrap, topic)])


class Worker(threading.Thread):
    """A daemon thread whose failure ``join`` raises in the caller."""

    def __init__(self, target: Callable[[], None] | None = None) -> None:
        super().__init__(daemon=True)
        self._target_fn = target
        self.error: BaseException | None = None

    def work(self) -> None:
        assert self._target_fn is not None, "give a target or override work()"
        self._target_fn()

    def run(self) -> None:
        try:
            self.work()
        except BaseException as exc:  # re-raised in join(): an assert here must fail the caller
            self.error = exc

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self.error is not None:
            raise self.error


class PacedProducer(Worker):
    """Produces the events in event-time order at an even pace (all of them in ``seconds``
    of sending), with an idempotent producer: retries across a broker outage add no
    duplicates. It sends only up to the index ``allow()`` last set, so a fault case can
    hold the stream back until the flow is up, or until the fault is over, and be sure the
    fault lands mid-stream; the pace restarts from each release."""

    def __init__(self, bootstrap: str, topic: str, events: pd.DataFrame, seconds: float) -> None:
        super().__init__()
        self.messages = encoded(events)
        self.topic = topic
        self.interval = seconds / max(len(self.messages), 1)
        self.limit = 0
        self.changed = threading.Condition()
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
            | {"message.timeout.ms": 0}  # retry until the broker is back, however long
            | QUIET
        )
        self.sent = 0
        self.acked = 0
        self.failed: list[str] = []

    def allow(self, upto: int) -> None:
        """Let events ``[0, upto)`` out (a lower value than before holds the rest back)."""
        with self.changed:
            self.limit = min(upto, len(self.messages))
            self.changed.notify_all()

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.acked += 1
        else:
            self.failed.append(str(err))

    def work(self) -> None:
        began = time.monotonic()
        for i, (key, value) in enumerate(self.messages):
            if i >= self.limit:
                with self.changed:
                    while i >= self.limit:
                        self.changed.wait(0.05)
                        self.producer.poll(0)
                began = time.monotonic() - i * self.interval
            while (wait := began + i * self.interval - time.monotonic()) > 0:
                self.producer.poll(min(wait, 0.05))
            self.producer.produce(self.topic, value, key, on_delivery=self._delivered)
            self.producer.poll(0)
            self.sent += 1
        self.producer.flush(900)  # bounded here: the messages themselves never time out


class ScoreWatcher(Worker):
    """Follows the scores topic as the flow writes it: the distinct transactions scored so far."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__()
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"harness-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
            | QUIET
        )
        self.consumer.subscribe([topic])
        self.seen: set[bytes] = set()
        self.stopping = threading.Event()

    @property
    def distinct(self) -> int:
        return len(self.seen)

    def work(self) -> None:
        while not self.stopping.is_set():
            for msg in self.consumer.consume(1000, 0.05):
                if msg.error() is None and msg.key() is not None:
                    self.seen.add(msg.key())  # type: ignore[arg-type]
        self.consumer.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)

    def wait_for(self, count: int, flow: subprocess.Popen[bytes], timeout_s: float) -> bool:
        """True once ``count`` distinct transactions are scored; False if the flow died or
        time ran out first."""
        deadline = time.monotonic() + timeout_s
        while self.distinct < count:
            if flow.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True
