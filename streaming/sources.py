"""Inputs of the dataflow, each turned into ``Raw`` messages (key, JSON bytes, ingest time).

Kafka messages come from Bytewax's ``KafkaSource``; replay files are JSONL (Bytewax's
``FileSource``) or parquet (``ParquetSource`` here: Bytewax has no parquet source). A
parquet row is encoded to the same JSON a producer would send, so replayed events take
the one parse-and-validate path and a bad row is dead-lettered with its bytes.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from core.events import TRANSACTION_SCHEMA
from streaming.records import Raw

log = logging.getLogger(__name__)
FIELDS = TRANSACTION_SCHEMA.names


def from_kafka(msg: Any) -> Raw | None:
    """Kafka messages become ``Raw``; consumer errors (a broker restart) are only logged.

    A null value (a tombstone) becomes empty bytes, so it is dead-lettered as ``bad_json``
    rather than dropped without a trace.
    """
    if isinstance(msg, KafkaError):
        log.warning("kafka consumer error: %s", msg.err)
        return None
    if not isinstance(msg, KafkaSourceMessage):
        return None
    ingest_ms = msg.timestamp[1] if msg.timestamp else time.time() * 1000
    where = None
    if msg.topic is not None and msg.partition is not None and msg.offset is not None:
        where = (msg.topic, msg.partition, msg.offset)
    return Raw(msg.key, msg.value or b"", ingest_ms, where)


def from_line(line: str) -> Raw:
    return Raw(None, line.encode(), time.time() * 1000)


def row_json(row: dict[str, Any]) -> bytes:
    body = {f: row.get(f) for f in FIELDS}
    ts = body["event_timestamp"]
    if isinstance(ts, datetime):
        body["event_timestamp"] = ts.isoformat()
    return json.dumps(body).encode()


class _ParquetPartition(StatefulSourcePartition[Raw, int]):
    def __init__(self, path: Path, batch_size: int, resume: int | None) -> None:
        self.offset = resume or 0
        file = pq.ParquetFile(path)
        columns = [f for f in FIELDS if f in file.schema_arrow.names]
        self.batches = file.iter_batches(batch_size=batch_size, columns=columns)
        self.skip = self.offset  # rows already emitted before a resume

    def next_batch(self) -> list[Raw]:
        batch = next(self.batches)  # StopIteration ends the input
        rows = batch.to_pylist()
        if self.skip:
            dropped, self.skip = min(self.skip, len(rows)), max(0, self.skip - len(rows))
            rows = rows[dropped:]
        self.offset += len(rows)
        now = time.time() * 1000
        return [Raw(str(row.get("user_id")).encode(), row_json(row), now) for row in rows]

    def snapshot(self) -> int:
        return self.offset

    def close(self) -> None:
        self.batches.close()


class ParquetSource(FixedPartitionedSource[Raw, int]):
    """One parquet file, read in record batches; resumes at the row it had reached."""

    def __init__(self, path: str | Path, batch_size: int) -> None:
        self.path = Path(path)
        self.batch_size = batch_size

    def list_parts(self) -> list[str]:
        return [str(self.path)] if self.path.exists() else []

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> _ParquetPartition:
        return _ParquetPartition(Path(for_part), self.batch_size, resume_state)
