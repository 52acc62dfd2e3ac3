"""The nightly job: one day's records, features as of each record, the shared predictor.

The day is split into chunks by a hash of the user key, so every chunk reads only
its own users' feature rows and memory stays bounded whatever the day's size.
Chunks run on a thread pool: DuckDB, numpy and the parquet writer release the GIL.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast import FeatureService, FeatureStore

from batch import output, validate
from batch.entities import ID, TS, VIEW, DaySelection, day_bounds, define_entities
from batch.pit import Partition
from batch.plan import RetrievalPlan, build_plan, supports_duckdb
from batch.progress import Progress
from batch.publish import publish_scores
from batch.retrieve import duckdb_features, feast_features
from core import storage
from core.cli import UserError
from core.contract import ENTITY_KEYS
from core.duck import connect
from core.models import pin_models
from core.predictor import Models, Scored
from core.settings import Settings
from core.store import feature_service, open_store

log = logging.getLogger(__name__)
Engine = Literal["duckdb", "feast", "spark"]
CHUNK_KEY = ENTITY_KEYS[0]  # the user: the key with the most feature rows per entity row
BINS = 10
NO_ROWS = DaySelection(0, None, None)
REASONS_TYPE = pa.list_(pa.struct([("feature", pa.string()), ("contribution", pa.float64())]))
SCORE_SCHEMA = pa.schema(
    [
        (ID, pa.string()),
        ("user_id", pa.int64()),
        ("merchant_id", pa.int64()),
        (TS, pa.timestamp("us", tz="UTC")),
        ("score", pa.float64()),
        ("decision", pa.string()),
        ("reasons", REASONS_TYPE),
        ("model_version", pa.string()),
        # null without a challenger, so every date's files share one schema
        ("challenger_version", pa.string()),
        ("challenger_score", pa.float64()),
        ("challenger_decision", pa.string()),
        ("run_id", pa.string()),
        ("scored_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class ScoreOptions:
    day: date
    entities: str | Path | None = None  # a local path or an s3:// URI
    engine: Engine | None = None  # None: DuckDB when the offline store reads parquet
    publish: bool = False
    limit: int | None = None
    dry_run: bool = False
    chunk_rows: int = 250_000
    workers: int = 0  # 0: one per core


@dataclass
class ChunkResult:
    file: str | None
    rows: int
    missing_rows: int
    missing_by_feature: dict[str, int]
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(BINS, dtype=np.int64))


@dataclass(frozen=True)
class Job:
    """Everything a chunk needs, resolved once per run."""

    store: FeatureStore
    service: FeatureService
    plan: RetrievalPlan | None  # None: Feast's own retrieval
    models: Models
    con: duckdb.DuckDBPyConnection
    selection: DaySelection
    chunks: int
    run_id: str
    scored_at: datetime
    staging: output.Stage | None  # None: a dry run writes nothing


def output_root(settings: Settings) -> str:
    """The scores root: a local directory or an ``s3://`` prefix."""
    return storage.as_location(settings.batch_output_dir or settings.data_dir / "scores")


def run_score(settings: Settings, opts: ScoreOptions) -> dict[str, Any]:
    """Score one day and atomically replace its partition; returns the manifest."""
    started = time.monotonic()
    scored_at = datetime.now(timezone.utc)
    run_id = f"{scored_at:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    root = output_root(settings)
    if not opts.dry_run:
        output.check_writable(root)
    store = open_store(settings)
    service = feature_service(store)
    models = pin_models(settings, service)  # one version (and challenger) for the whole run
    note_model_change(root, opts.day, models)
    engine = resolve_engine(store, opts.engine)
    plan = build_plan(store, service) if engine != "feast" else None
    source = storage.as_location(
        opts.entities or settings.batch_transactions or settings.data_dir / "transactions.parquet"
    )
    job = Job(store, service, plan, models, connect(), NO_ROWS, 1, run_id, scored_at, None)
    if engine == "spark":
        from batch.spark_job import run_spark  # pyspark: the optional extra `spark`

        job, results, workers = run_spark(settings, opts, job, source, root)
    else:
        job, results, workers = _run_here(opts, job, engine, source, root)

    duration = time.monotonic() - started
    manifest = build_manifest(job, opts, engine, source, results, duration, workers)
    if (staging := job.staging) is not None:
        manifest = staging.commit(manifest)
        if opts.publish:
            manifest["published_users"] = publish_scores(store, root, opts.day)
            output.write_manifest(staging.partition, manifest)
    return manifest


def note_model_change(root: str, day: date, models: Models) -> None:
    """A re-run of a date that another champion scored says so: its scores will change."""
    previous = output.read_manifest(output.partition(root, day)) or {}
    before = previous.get("model_version")
    if before is not None and before != models.champion.version:
        log.warning(
            "re-scoring %s with %s; its previous run %s used %s",
            day,
            models.champion.version,
            previous.get("run_id"),
            before,
        )


def _run_here(
    opts: ScoreOptions, job: Job, engine: Engine, source: str, root: str
) -> tuple[Job, list[ChunkResult], int]:
    """Select, check and score the day in this process (DuckDB, or Feast's retrieval)."""
    con, plan = job.con, job.plan
    storage.attach(con, *[view.path for view in (plan.views if plan else ())])  # s3:// sources
    selection = define_entities(con, source, opts.day, opts.limit)
    if plan is not None and selection.first is not None and selection.last is not None:
        validate.feature_sources(con, plan, selection.first, selection.last)
    chunks = max(1, math.ceil(selection.rows / opts.chunk_rows))
    workers = 1 if engine == "feast" else min(opts.workers or os.cpu_count() or 1, chunks)
    staging = None if opts.dry_run else output.begin(root, opts.day, job.run_id)
    job = replace(job, selection=selection, chunks=chunks, staging=staging)
    log.info(
        "scoring %s: %d rows from %s, %d chunk(s) on %d worker(s), engine %s, model %s",
        opts.day,
        selection.rows,
        source,
        chunks,
        workers,
        engine,
        job.models.champion.version,
    )
    results: list[ChunkResult] = []
    if selection.rows:
        progress = Progress(selection.rows, f"score {opts.day}")
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chunk") as pool:
            for result in pool.map(lambda k: score_chunk(job, k), range(chunks)):
                results.append(result)
                progress.update(result.rows)
        progress.close()
    return job, results, workers


def resolve_engine(store: FeatureStore, wanted: Engine | None) -> Engine:
    if wanted == "spark":
        return "spark"  # any offline store: Spark reads the views' parquet files itself
    if wanted == "feast" or (wanted is None and not supports_duckdb(store)):
        return "feast"
    if not supports_duckdb(store):
        raise UserError(
            f"--engine duckdb needs a parquet offline store, not {store.config.offline_store.type};"
            " use --engine feast"
        )
    return "duckdb"


def score_chunk(job: Job, index: int) -> ChunkResult:
    """Retrieve, score and write one hash bucket of the day's rows."""
    partition = Partition(CHUNK_KEY, job.chunks, index)
    cursor = job.con.cursor()  # one connection per thread, same database (and view)
    try:
        if job.plan is not None:
            assert job.selection.first is not None and job.selection.last is not None
            table = duckdb_features(
                cursor,
                job.plan,
                VIEW,
                job.selection.first,
                job.selection.last,
                partition,
                order_by=(TS, ID),
            )
        else:
            frame = cursor.sql(f"SELECT * FROM {VIEW} WHERE {partition.where()}").df()
            if frame.empty:
                return ChunkResult(None, 0, 0, {})
            table = feast_features(job.store, job.service, frame)
            table = table.sort_by([(TS, "ascending"), (ID, "ascending")])
    finally:
        cursor.close()
    if table.num_rows == 0:
        return ChunkResult(None, 0, 0, {})
    features = job.models.champion.features
    scored = scored_columns(job.models, table)
    scores = scored["score"].to_numpy()
    nulls = {name: table[name].null_count for name in features}
    any_null = np.zeros(table.num_rows, dtype=bool)
    for name in features:
        if nulls[name]:
            any_null |= pc.is_null(table[name]).to_numpy(zero_copy_only=False)
    result = ChunkResult(
        None,
        table.num_rows,
        int(any_null.sum()),
        {k: v for k, v in nulls.items() if v},
        np.histogram(scores, bins=BINS, range=(0.0, 1.0))[0],
    )
    if job.staging is not None:
        result.file = f"part-{index:05d}.parquet"
        job.staging.write_table(result.file, scored_table(job, table, scored))
    return result


def scored_columns(models: Models, table: pa.Table) -> dict[str, pa.Array]:
    """Score, decision, reasons and the models' columns: what both engines write per row."""
    both = models.score(table)
    champion, challenger = both.champion, both.challenger
    n = table.num_rows
    columns = {
        "score": pa.array(champion.scores, pa.float64()),
        "decision": pa.array(champion.decisions, pa.string()),
        "reasons": reasons_array(champion),
        "model_version": pa.array([champion.version] * n, pa.string()),
    }
    if challenger is None:
        columns |= {
            "challenger_version": pa.nulls(n, pa.string()),
            "challenger_score": pa.nulls(n, pa.float64()),
            "challenger_decision": pa.nulls(n, pa.string()),
        }
    else:
        columns |= {
            "challenger_version": pa.array([challenger.version] * n, pa.string()),
            "challenger_score": pa.array(challenger.scores, pa.float64()),
            "challenger_decision": pa.array(challenger.decisions, pa.string()),
        }
    return columns


def reasons_array(scored: Scored) -> pa.Array:
    """Each row's reasons as a list of (feature, contribution), built without a row loop."""
    keep = scored.reason_index >= 0  # the used slots lead each row, highest first
    offsets = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int32)
    names = pa.array(scored.features, pa.string()).take(pa.array(scored.reason_index[keep]))
    values = pa.array(scored.reason_value[keep], pa.float64())
    items = pa.StructArray.from_arrays([names, values], names=["feature", "contribution"])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), items).cast(REASONS_TYPE)


def scored_table(job: Job, table: pa.Table, scored: dict[str, pa.Array]) -> pa.Table:
    n = table.num_rows
    columns = {c: table[c] for c in (ID, "user_id", "merchant_id", TS)}
    columns |= scored
    columns |= {
        "run_id": pa.array([job.run_id] * n, pa.string()),
        "scored_at": pa.array([job.scored_at] * n, pa.timestamp("us", tz="UTC")),
    }
    return pa.table(columns, schema=SCORE_SCHEMA)


def build_manifest(
    job: Job,
    opts: ScoreOptions,
    engine: Engine,
    source: str,
    results: list[ChunkResult],
    duration: float,
    workers: int,
) -> dict[str, Any]:
    rows_out = sum(r.rows for r in results)
    histogram = sum((r.histogram for r in results), np.zeros(BINS, dtype=np.int64))
    missing: dict[str, int] = {}
    for r in results:
        for name, count in r.missing_by_feature.items():
            missing[name] = missing.get(name, 0) + count
    edges = np.linspace(0.0, 1.0, BINS + 1)
    start, end = day_bounds(opts.day)
    sel = job.selection
    return {
        "status": "complete",
        "date": opts.day.isoformat(),
        "run_id": job.run_id,
        "empty": sel.rows == 0,
        "note": "no transactions on this date" if sel.rows == 0 else None,
        "dry_run": opts.dry_run,
        "engine": engine,
        "feature_service": job.service.name,
        "model_version": job.models.champion.version,
        "challenger_version": None if (c := job.models.challenger) is None else c.version,
        "entities": source,
        "limit": opts.limit,
        "rows_in": sel.rows,
        "rows_out": rows_out,
        "rows_missing_features": sum(r.missing_rows for r in results),
        "missing_by_feature": missing,
        "duration_s": round(duration, 3),
        "rows_per_s": round(rows_out / duration, 1) if duration > 0 else None,
        "chunks": job.chunks,
        "workers": workers,
        "score_histogram": {
            "edges": [round(float(e), 2) for e in edges],
            "counts": [int(c) for c in histogram],
        },
        "input_time_range": {
            "day": [start.isoformat(), end.isoformat()],
            "first": sel.first.isoformat() if sel.first else None,
            "last": sel.last.isoformat() if sel.last else None,
        },
        "scored_at": job.scored_at.isoformat(),
        "files": [{"name": r.file, "rows": r.rows} for r in results if r.file],
    }
