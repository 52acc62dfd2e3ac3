"""The streaming dataflow: wiring only; the steps live in the modules beside it.

    python -m bytewax.run streaming.dataflow:get_flow                 # Kafka in and out
    python -m bytewax.run "streaming.dataflow:get_flow(replay='in.jsonl', out_dir='out')"
    python -m bytewax.run "streaming.dataflow:get_flow(replay='in.parquet', out_dir='out')"

Kafka -> ingest: parse (dead-letter bad_json/schema), enrich with cached profiles
(dead-letter unknown_entity if configured), group by user shard -> event-time windows
per shard (dead-letter late) -> online-store writes (latest per user per batch) and
scoring -> scores topic keyed by transaction_id.

Every step after the input works on whole micro-batches: one stream item is one shard's
part of a micro-batch, never one event, because Bytewax's per-item operator calls cost
more than the work of a cheap step (``docs/performance.md``, "Streaming flow").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import bytewax.operators as op
from bytewax.connectors.files import FileSink, FileSource
from bytewax.connectors.kafka import KafkaSinkMessage, KafkaSource
from bytewax.dataflow import Dataflow, Stream

from core.cli import setup_logging
from core.kafka import client_config, ensure_stream_topics
from core.settings import Settings, get_settings
from streaming.records import Chunk, DeadLetter, Raw, Stepped, source_headers
from streaming.runtime import FlowRuntime, get_flow_runtime
from streaming.sinks import DeadLetterSink, OnlineSink, ScoreSink
from streaming.sources import ParquetSource, from_kafka, from_line
from streaming.windows import ShardLogic

# librdkafka refuses a message over its message.max.bytes (1,000,000 by default), which is
# below the broker's default limit (1,048,588): a dead letter carrying a near-limit input
# whole would stop the flow, and stop it again on every restart. Headers ride on top.
DLQ_MAX_VALUE = 900_000


def dead_letter_message(d: DeadLetter, topic: str) -> KafkaSinkMessage[bytes | None, bytes]:
    headers = [("reason", d.reason.encode()), ("detail", d.detail.encode())]
    headers += source_headers(d.raw)  # where the original is: topic, partition, offset, time
    value = d.raw.value
    if len(value) > DLQ_MAX_VALUE:  # the whole message stays in the source topic
        digest = hashlib.sha256(value).hexdigest()
        headers += [("original_bytes", str(len(value)).encode()), ("sha256", digest.encode())]
        value = value[:DLQ_MAX_VALUE]
    return KafkaSinkMessage(d.raw.key, value, topic=topic, headers=headers)


def dead_letter_line(d: DeadLetter) -> tuple[str, str]:
    value = d.raw.value.decode("utf-8", "backslashreplace")
    return "dlq", json.dumps({"reason": d.reason, "detail": d.detail, "value": value})


def _input(
    flow: Dataflow, settings: Settings, kafka: dict[str, str], replay: str | None, tail: bool
) -> tuple[Stream[Any], Callable[[Any], Raw | None]]:
    """The input stream (Kafka, or a replayed parquet/JSONL file) and its item -> ``Raw``."""
    if replay is None:
        ensure_stream_topics(settings)  # fitted to the brokers found, unless set
        source = KafkaSource(
            kafka["bootstrap.servers"].split(","),
            [settings.stream_transactions_topic],
            tail=tail,
            add_config=kafka,  # security settings (SASL/TLS) from the environment
            batch_size=settings.stream_consume_batch,
            raise_on_errors=False,
        )
        return op.input("kafka_in", flow, source), from_kafka
    if replay.endswith(".parquet"):
        parquet = ParquetSource(replay, settings.stream_consume_batch)
        return op.input("parquet_in", flow, parquet), lambda raw: raw
    lines = FileSource(replay, settings.stream_consume_batch)
    return op.input("file_in", flow, lines), from_line


def get_flow(replay: str | None = None, out_dir: str | None = None, tail: bool = True) -> Dataflow:
    """Kafka by default; ``replay`` a JSONL or parquet file into ``out_dir`` with no broker.

    ``tail=False`` stops at the end of every partition (tests, benchmarks, backfills).
    """
    setup_logging()  # bytewax.run sets none: model swaps and refusals must reach the log
    settings = get_settings()
    flow = Dataflow("fraud_stream")

    def runtime() -> FlowRuntime:
        return get_flow_runtime(settings)

    kafka = client_config(settings) if replay is None else {}
    items, to_raw = _input(flow, settings, kafka, replay, tail)

    def ingest(batch: list[Any]) -> list[tuple[str, Chunk]]:
        return runtime().ingest(raw for raw in map(to_raw, batch) if raw is not None)

    keyed = op.flat_map_batch("ingest", items, ingest)
    lateness_us = int(settings.stream_allowed_lateness_s * 1_000_000)
    windows = op.stateful_batch(
        "shard_windows", keyed, lambda resume: ShardLogic(lateness_us, resume)
    )
    stepped: Stream[Stepped] = op.key_rm("unkey", windows)
    op.output("online", stepped, OnlineSink(settings))
    dead: Stream[DeadLetter] = op.flat_map_batch("dead", stepped, lambda b: runtime().dead(b))

    if replay is None:
        # One stream item per micro-batch: the list of its scores (see ``ScoreSink``).
        scores = op.flat_map_batch("score", stepped, lambda b: [runtime().score(b)])
        op.output("scores_out", scores, ScoreSink(kafka, settings.stream_scores_topic))
        dlq = settings.stream_dead_letter_topic
        dead_out = op.map("dlq_msg", dead, lambda d: dead_letter_message(d, dlq))
        op.output("dlq_out", dead_out, DeadLetterSink(kafka))
    else:
        out = Path(out_dir or "stream-out")
        out.mkdir(parents=True, exist_ok=True)
        score_lines = op.flat_map_batch(
            "score", stepped, lambda b: [("scores", s[1]) for s in runtime().score(b)]
        )
        # FileSink takes (key, line) pairs; its annotations say plain lines.
        op.output("scores_out", cast(Any, score_lines), FileSink(out / "scores.jsonl"))
        dead_lines = op.map("dlq_line", dead, dead_letter_line)
        op.output("dlq_out", cast(Any, dead_lines), FileSink(out / "dlq.jsonl"))
    return flow
