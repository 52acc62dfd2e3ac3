"""The streaming dataflow: wiring only; the steps live in the modules beside it.

    python -m bytewax.run streaming.dataflow:get_flow                 # Kafka in and out
    python -m bytewax.run "streaming.dataflow:get_flow(replay='in.jsonl', out_dir='out')"

Kafka -> parse (dead-letter bad_json/schema) -> enrich with cached profiles
(dead-letter unknown_entity if configured) -> key by user -> event-time windows
(dead-letter late) -> online-store writes (latest per user per batch) and scoring
-> scores topic keyed by transaction_id.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, cast

import bytewax.operators as op
from bytewax.connectors.files import FileSink, FileSource
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow, Stream
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from core.settings import Settings, get_settings
from streaming.records import DeadLetter, Enriched, Event, Raw, Update, parse
from streaming.runtime import Runtime, Score, get_runtime
from streaming.windows import EventTimeWindows


def from_kafka(msg: Any) -> Raw | None:
    """Kafka messages become ``Raw``; consumer errors (a broker restart) are only logged."""
    if not isinstance(msg, KafkaSourceMessage) or msg.value is None:
        return None
    ingest_ms = msg.timestamp[1] if msg.timestamp else int(time.time() * 1000)
    return Raw(msg.key, msg.value, ingest_ms)


def from_line(line: str) -> Raw:
    return Raw(None, line.encode(), int(time.time() * 1000))


def window_step(lateness_us: int) -> Any:
    def step(state: EventTimeWindows | None, item: Enriched) -> tuple[Any, Update | DeadLetter]:
        state = state or EventTimeWindows(lateness_us)
        txn = item.event.txn
        applied = state.apply(item.event.ts_us, txn.amount, txn.merchant_id)
        if applied is None:
            newest = state.newest_us
            detail = f"event time {item.event.ts_us} us is older than newest {newest} us - lateness"
            return state, DeadLetter(item.event.raw, "late", detail)
        return state, Update(item, applied.at_event, applied.latest, applied.version_us)

    return step


class _OnlinePartition(StatelessSinkPartition[Update]):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def write_batch(self, items: list[Update]) -> None:
        self.runtime.write(items)


class OnlineSink(DynamicSink[Update]):
    """Each worker writes the batches it sees; Bytewax calls it once per micro-batch."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _OnlinePartition:
        return _OnlinePartition(get_runtime(self.settings))


def dead_letter_message(d: DeadLetter, topic: str) -> KafkaSinkMessage[bytes | None, bytes]:
    headers = [("reason", d.reason.encode()), ("detail", d.detail.encode())]
    return KafkaSinkMessage(d.raw.key, d.raw.value, topic=topic, headers=headers)


def dead_letter_line(d: DeadLetter) -> tuple[str, str]:
    value = d.raw.value.decode("utf-8", "backslashreplace")
    return "dlq", json.dumps({"reason": d.reason, "detail": d.detail, "value": value})


def get_flow(replay: str | None = None, out_dir: str | None = None, tail: bool = True) -> Dataflow:
    """Kafka by default; ``replay`` a JSONL file into ``out_dir`` with no broker.

    ``tail=False`` stops at the end of every partition (tests, benchmarks, backfills).
    """
    settings = get_settings()
    flow = Dataflow("fraud_stream")
    raw: Stream[Raw]
    if replay is None:
        source = KafkaSource(
            settings.kafka_bootstrap_servers.split(","),
            [settings.stream_transactions_topic],
            tail=tail,
            batch_size=settings.stream_consume_batch,
            raise_on_errors=False,
        )
        raw = op.filter_map("from_kafka", op.input("kafka_in", flow, source), from_kafka)
    else:
        lines = op.input("file_in", flow, FileSource(replay, settings.stream_consume_batch))
        raw = op.map("from_line", lines, from_line)

    parsed = op.branch("valid", op.map("parse", raw, parse), lambda x: isinstance(x, Event))
    events = cast(Stream[Event], parsed.trues)  # op.branch does not narrow types
    enriched = op.flat_map_batch(
        "enrich", events, lambda batch: get_runtime(settings).enrich(batch)
    )
    known = op.branch("known", enriched, lambda x: isinstance(x, Enriched))
    keyed = op.key_on(
        "by_user", cast(Stream[Enriched], known.trues), lambda e: str(e.event.txn.user_id)
    )
    lateness_us = int(settings.stream_allowed_lateness_s * 1_000_000)
    stepped = op.key_rm("unkey", op.stateful_map("windows", keyed, window_step(lateness_us)))
    on_time = op.branch("on_time", stepped, lambda x: isinstance(x, Update))
    updates = cast(Stream[Update], on_time.trues)
    op.output("online", updates, OnlineSink(settings))
    scores: Stream[Score] = op.flat_map_batch(
        "score", updates, lambda batch: get_runtime(settings).score(batch)
    )
    dead = cast(Stream[DeadLetter], op.merge("dead", parsed.falses, known.falses, on_time.falses))
    op.inspect("count_dead", dead, lambda _step, d: get_runtime(settings).dead([d]))

    if replay is None:
        brokers = settings.kafka_bootstrap_servers.split(",")
        scores_out = op.map(
            "score_msg",
            scores,
            lambda s: KafkaSinkMessage(s.transaction_id.encode(), s.to_json().encode()),
        )
        op.output("scores_out", scores_out, KafkaSink(brokers, settings.stream_scores_topic))
        dlq = settings.stream_dead_letter_topic
        dead_out = op.map("dlq_msg", dead, lambda d: dead_letter_message(d, dlq))
        op.output("dlq_out", dead_out, KafkaSink(brokers, None))
    else:
        out = Path(out_dir or "stream-out")
        out.mkdir(parents=True, exist_ok=True)
        score_lines = op.map("score_line", scores, lambda s: ("scores", s.to_json()))
        # FileSink takes (key, line) pairs; its annotations say plain lines.
        op.output("scores_out", cast(Any, score_lines), FileSink(out / "scores.jsonl"))
        dead_lines = op.map("dlq_line", dead, dead_letter_line)
        op.output("dlq_out", cast(Any, dead_lines), FileSink(out / "dlq.jsonl"))
    return flow
