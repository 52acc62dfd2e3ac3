"""Logging the feature vectors the API served, through Feast's feature-logging facility.

Off unless ``FEATURE_LOG_DIR`` is set. The request path only appends a reference to what
it already holds (the rows, the online read and the clock) to a buffer; a background
thread turns the buffer into Feast's log schema (``FeatureServiceLoggingSource``: join
keys, request fields, ``view__feature`` with its ``__timestamp`` and ``__status``, and
``__log_timestamp``/``__log_date``/``__request_id``) and writes it with
``store.write_logged_features`` to a ``FileLoggingDestination`` (the DuckDB offline store
writes it as parquet). ``python -m batch skew`` compares these logs with point-in-time
offline retrieval. The FeatureService in the registry stays unchanged: the logging
config is attached to an in-memory copy, so enabling logs needs no ``feast apply``.

Feast's writer rather than a hand-written parquet sink: its cost is off the request path
(figures: ``docs/performance.md``, "Feature logging").
"""

from __future__ import annotations

import copy
import logging
import random
import threading
from collections.abc import Sequence
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa
from feast import FeatureService, FeatureStore
from feast.feature_logging import (
    LOG_DATE_FIELD,
    LOG_TIMESTAMP_FIELD,
    REQUEST_ID_FIELD,
    FeatureServiceLoggingSource,
    LoggingConfig,
)
from feast.infra.offline_stores.file_source import FileLoggingDestination
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

from core.plan import ServicePlan, plan_service
from serving.online import OnlineRead, RequestRow

log = logging.getLogger(__name__)
FLUSH_ROWS = 5000  # write as soon as this many rows wait
FLUSH_S = 2.0  # and at least this often
MAX_PENDING_ROWS = 200_000  # past this (a writer far behind) new rows are dropped and counted
Pending = tuple[Sequence[RequestRow], OnlineRead, float]  # one request's rows, read and time


class FeatureLog:
    """A bounded-latency, batched writer of served feature vectors."""

    def __init__(
        self, store: FeatureStore, service: FeatureService, path: Path, sample_rate: float = 1.0
    ) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.store = store
        self.service = copy.deepcopy(service)
        self.service.logging_config = LoggingConfig(
            FileLoggingDestination(path=str(path)), sample_rate
        )
        self.schema = FeatureServiceLoggingSource(service, store.project).get_schema(store.registry)
        self.columns = _column_plan(plan_service(store, service))
        self.keys = [n for n in self.schema.names if "__" not in n]  # join keys, request fields
        self.sample_rate = sample_rate
        self._pending: list[Pending] = []
        self._rows = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._dropped = 0
        self._thread = threading.Thread(target=self._run, name="feature-log", daemon=True)
        self._thread.start()

    def record(self, rows: Sequence[RequestRow], read: OnlineRead, now: float) -> None:
        """Queue one request's vectors (what the request path pays: an append)."""
        with self._lock:
            if self._rows >= MAX_PENDING_ROWS:
                self._dropped += len(rows)
                return
            self._pending.append((rows, read, now))
            self._rows += len(rows)
            if self._rows >= FLUSH_ROWS:
                self._wake.set()

    def close(self) -> None:
        """Write what is buffered and stop the writer."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_S)
            self._wake.clear()
            stop = self._stop
            try:
                self.flush()
            except Exception:  # a full disk must not take the API down; the logs say so
                log.exception("feature log write failed; its batch is dropped")
            if stop:
                return

    def flush(self) -> int:
        with self._lock:
            pending, self._pending, self._rows = self._pending, [], 0
            dropped, self._dropped = self._dropped, 0
        if dropped:
            log.warning("feature log: %d rows dropped, the writer fell behind", dropped)
        table = self.to_table(pending)
        if table.num_rows:
            self.store.write_logged_features(table, self.service)
        return table.num_rows

    def to_table(self, pending: Sequence[Pending]) -> pa.Table:
        """The buffered requests in Feast's log schema, sampled at ``sample_rate``."""
        arrays = _arrays(self.schema, self.keys, self.columns, pending)
        table = pa.Table.from_arrays([arrays[n] for n in self.schema.names], schema=self.schema)
        if self.sample_rate < 1.0:
            keep = [random.random() < self.sample_rate for _ in range(table.num_rows)]
            table = table.filter(pa.array(keep))
        return table


# (log column prefix, feature, view whose timestamp it carries or None for request-time)
_Column = tuple[str, str, str | None]


def _column_plan(plan: ServicePlan) -> list[_Column]:
    return [(f"{use}__{feature}", feature, view) for use, feature, view in plan.log_columns]


def _arrays(
    schema: pa.Schema,
    keys: list[str],
    columns: list[_Column],
    pending: Sequence[Pending],
) -> dict[str, pa.Array]:
    """Every log column over all buffered requests, one column at a time.

    Columns chained across requests, not rows: the build holds the GIL the request path
    needs (figures: ``docs/performance.md``, "Feature logging").
    """
    rows = [row for request_rows, _, _ in pending for row in request_rows]
    reads = [read for _, read, _ in pending]
    now = np.repeat([t for _, _, t in pending], [len(r) for r, _, _ in pending]).astype(float)
    stale = [names for read in reads for names in read.stale]
    any_stale = any(stale)
    out = {key: pa.array([r.get(key) for r in rows], schema.field(key).type) for key in keys}
    for prefix, feature, view in columns:
        values = list(chain.from_iterable(read.columns[feature] for read in reads))
        if view is None:  # request-time features: computed at the request's time
            stamps = now
        else:
            stamps = np.array(
                list(chain.from_iterable(read.timestamps[view] for read in reads)), dtype=float
            )
        present = np.array([v is not None for v in values], dtype=bool)
        outdated = (
            np.array([feature in names for names in stale], dtype=bool)
            if any_stale
            else np.zeros(len(values), dtype=bool)
        )
        status = np.select(
            [present, outdated, np.isnan(stamps)],
            [FieldStatus.PRESENT, FieldStatus.OUTSIDE_MAX_AGE, FieldStatus.NOT_FOUND],
            FieldStatus.NULL_VALUE,
        )
        out[prefix] = pa.array(values, schema.field(prefix).type)
        out[f"{prefix}__timestamp"] = _timestamps(stamps, schema.field(f"{prefix}__timestamp").type)
        out[f"{prefix}__status"] = pa.array(status.astype(np.int32), pa.int32())
    out[LOG_TIMESTAMP_FIELD] = _timestamps(now, schema.field(LOG_TIMESTAMP_FIELD).type)
    out[LOG_DATE_FIELD] = pa.array((now // 86_400).astype(np.int32), pa.date32())
    out[REQUEST_ID_FIELD] = pa.array([r.get("transaction_id") for r in rows], pa.string())
    return out


_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _timestamps(seconds: np.ndarray, kind: pa.TimestampType) -> pa.Array:
    """Epoch seconds (NaN: none) in the schema's unit (Feast logs feature times in seconds)."""
    missing = np.isnan(seconds)
    ticks = np.floor(np.where(missing, 0.0, seconds) * _PER_SECOND[kind.unit]).astype(np.int64)
    return pa.array(ticks, kind, mask=missing)
