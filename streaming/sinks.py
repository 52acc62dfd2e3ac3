"""Outputs of the dataflow: the online store, the scores topic and the dead-letter topic.

``ScoreSink`` replaces Bytewax's ``KafkaSink`` for scores. It takes a whole micro-batch of
scores as one stream item and produces them straight from it; ``KafkaSink`` needs one
``KafkaSinkMessage`` (a frozen dataclass) per score as its own stream item and calls
``poll(0)`` after every message (``docs/performance.md``, "Streaming flow").

Both Kafka sinks flush before ``write_batch`` returns, so a Bytewax snapshot never covers
a message still in the producer's memory (at least once across a crash), and again on
close, so a ``tail=False`` run exits with every message delivered. Unlike ``KafkaSink``
they also check every delivery (see ``DELIVERY``).
"""

from __future__ import annotations

from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, Message, Producer

from core.kafka import DURABLE_PRODUCER
from core.settings import Settings
from streaming.records import Stepped
from streaming.runtime import FlowRuntime, Score, get_flow_runtime


class _OnlinePartition(StatelessSinkPartition[Stepped]):
    def __init__(self, runtime: FlowRuntime) -> None:
        self.runtime = runtime

    def write_batch(self, items: list[Stepped]) -> None:
        self.runtime.write(items)


class OnlineSink(DynamicSink[Stepped]):
    """Each worker writes the batches it sees; Bytewax calls it once per micro-batch."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _OnlinePartition:
        return _OnlinePartition(get_flow_runtime(self.settings))


# librdkafka gives up on a message after ``message.timeout.ms`` (default 300 s) and says so
# only to a delivery callback, which Bytewax's KafkaSink does not register, so a long broker
# outage lost scores silently (``docs/performance.md``, "Streaming flow"). 0 = no local timeout:
# flush() waits for the broker, holding the flow back; a permanent failure (message too
# large, no ACL) raises, so the flow stops and, restarted, resumes from its last snapshot.
DELIVERY = {"message.timeout.ms": 0}


class _Delivered:
    """A delivery callback that keeps failures; ``check`` raises after a flush."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.failed.append(f"{msg.topic()}: {err.str()}")

    def check(self) -> None:
        failed, self.failed = self.failed, []
        if failed:
            raise RuntimeError(f"{len(failed)} message(s) not delivered; first: {failed[0]}")


class _ScorePartition(StatelessSinkPartition[list[Score]]):
    def __init__(self, producer: Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.delivered = _Delivered()

    def write_batch(self, items: list[list[Score]]) -> None:
        produce = self.producer.produce
        for scores in items:
            for key, value in scores:
                while True:
                    try:
                        produce(
                            self.topic, value.encode(), key.encode(), on_delivery=self.delivered
                        )
                        break
                    except BufferError:  # local queue full: let librdkafka drain it
                        self.producer.poll(0.05)
        self.producer.flush()
        self.delivered.check()

    def close(self) -> None:
        self.producer.flush()
        self.delivered.check()


class ScoreSink(DynamicSink[list[Score]]):
    """Lists of (transaction_id, JSON) scores to one topic, keyed by transaction_id.

    ``config`` is the librdkafka client config (``core.kafka.client_config``: brokers and
    security).
    """

    def __init__(self, config: dict[str, str], topic: str) -> None:
        self.config = config
        self.topic = topic

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ScorePartition:
        return _ScorePartition(Producer(self.config | DURABLE_PRODUCER | DELIVERY), self.topic)


DeadMessage = KafkaSinkMessage[bytes | None, bytes]


class _DeadLetterPartition(StatelessSinkPartition[DeadMessage]):
    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.delivered = _Delivered()

    def write_batch(self, items: list[DeadMessage]) -> None:
        for m in items:
            assert m.topic is not None  # dead_letter_message names the topic
            headers: list[tuple[str, str | bytes | None]] = list(m.headers)
            self.producer.produce(
                m.topic, m.value, m.key, headers=headers, on_delivery=self.delivered
            )
            self.producer.poll(0)
        self.producer.flush()
        self.delivered.check()

    def close(self) -> None:
        self.producer.flush()
        self.delivered.check()


class DeadLetterSink(DynamicSink[DeadMessage]):
    """Bytewax's KafkaSink with delivery checked (see ``DELIVERY``): dead letters are data."""

    def __init__(self, config: dict[str, str]) -> None:
        self.config = config

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeadLetterPartition:
        return _DeadLetterPartition(Producer(self.config | DURABLE_PRODUCER | DELIVERY))
