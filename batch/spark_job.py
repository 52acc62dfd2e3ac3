"""``--engine spark``: the nightly job as one Spark job, the driver holding no rows.

The point-in-time join is the DuckDB fast path's (``batch.pit``), driven by the same
registry plan (``batch.plan``), in Spark's terms: per view, the feature rows and the
entity rows of each key are sorted together by time (feature rows first on a tie) and
each entity row takes the last feature row before it, nulled past the view's TTL. That is
a sort per key, not a range join, so it scales with the day. The executors run the
registry's on-demand transforms and the shared ``core`` predictor on Arrow batches
(``mapInArrow``) and Spark writes the parquet files into ``batch.output``'s staging
location; the driver only commits the manifest (counts and a histogram from one aggregate).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from batch import output
from batch.entities import ID, TS, DaySelection
from batch.plan import RetrievalPlan, ViewSpec
from batch.retrieve import apply_odfvs
from batch.score import BINS, ChunkResult, Job, ScoreOptions, scored_columns
from batch.spark_input import read_view, require_s3a, select_day, session, unique_rows
from core import storage
from core.contract import ENTITY_KEYS
from core.predictor import Models
from core.settings import Settings

log = logging.getLogger(__name__)
NULL_PREFIX = "_null_"
_US = 1_000_000
SCORE_DDL = (
    f"{ID} string, user_id long, merchant_id long, {TS} timestamp, score double,"
    " decision string, reasons array<struct<feature:string,contribution:double>>,"
    " model_version string, challenger_version string, challenger_score double,"
    " challenger_decision string, run_id string, scored_at timestamp"
)


@dataclass(frozen=True)
class Scored:
    """What the driver learns about a day it scored: counts, never rows."""

    rows: int
    missing_rows: int
    missing_by_feature: dict[str, int]
    histogram: np.ndarray
    files: list[tuple[str, int]]  # (name in the staging directory, rows)
    partitions: int


def check_sources(spark: SparkSession, plan: RetrievalPlan, sel: DaySelection) -> list[DataFrame]:
    """Each view's source, checked as the DuckDB engine checks it, before anything is written."""
    assert sel.first is not None and sel.last is not None
    sources = [read_view(spark, view) for view in plan.views]
    for view, source in zip(plan.views, sources, strict=True):
        unique_rows(source, view, sel.first, sel.last)
    return sources


def features(
    plan: RetrievalPlan, sources: list[DataFrame], entities: DataFrame, sel: DaySelection
) -> DataFrame:
    """Every entity column plus each stored view's features as of the row's timestamp."""
    assert sel.first is not None and sel.last is not None
    out = entities
    for view, source in zip(plan.views, sources, strict=True):
        out = out.join(as_of(view, _view_rows(source, view, sel.first, sel.last), entities), ID)
    return out


def _view_rows(source: DataFrame, view: ViewSpec, lo: datetime, hi: datetime) -> DataFrame:
    """``batch.pit.view_sql``: keys, ``_ts`` and features; the latest-created row per time."""
    ts = F.col(view.timestamp_field).cast("timestamp")
    cols = [*(F.col(k) for k in view.join_keys), ts.alias("_ts")]
    cols += [F.col(src).alias(name) for src, name in view.field_mapping]
    where = ts <= hi
    if view.ttl is not None:
        where &= ts >= lo - view.ttl  # older rows are expired for every entity row
    rows = source.where(where)
    if view.created_timestamp_column:
        order = F.col(view.created_timestamp_column).desc_nulls_last()
        latest = Window.partitionBy(*view.join_keys, view.timestamp_field).orderBy(order)
        rows = rows.withColumn("_rank", F.row_number().over(latest)).where("_rank = 1")
    return rows.select(*cols)


def as_of(view: ViewSpec, rows: DataFrame, entities: DataFrame) -> DataFrame:
    """(transaction_id, features) with Feast's semantics: the latest row at or before the
    entity's time, null if it is older than the TTL or there is none."""
    names = list(view.features)
    packed = F.struct(F.col("_ts").alias("_fts"), *(F.col(n) for n in names))
    facts = rows.select(*view.join_keys, "_ts", F.lit(0).alias("_kind"), packed.alias("_f"))
    asks = entities.select(
        *view.join_keys,
        F.col(TS).alias("_ts"),
        F.lit(1).alias("_kind"),
        F.lit(None).cast(facts.schema["_f"].dataType).alias("_f"),
        ID,
    )
    events = facts.withColumn(ID, F.lit(None).cast("string")).unionByName(asks)
    upto = (
        Window.partitionBy(*view.join_keys)
        .orderBy("_ts", "_kind")
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    found = events.withColumn("_f", F.last("_f", ignorenulls=True).over(upto)).where("_kind = 1")
    fresh = F.col("_f._fts").isNotNull()
    if view.ttl is not None:
        ttl_us = int(view.ttl.total_seconds() * _US)
        fresh &= F.unix_micros(F.col("_f._fts")) + ttl_us >= F.unix_micros(F.col("_ts"))
    return found.select(ID, *(F.when(fresh, F.col(f"_f.{n}")).alias(n) for n in names))


def scorer(
    plan: RetrievalPlan, models: Models, run_id: str, scored_at: datetime
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The executors' function: on-demand transforms, the models, null flags per feature.

    Spark pickles it with the plan's on-demand views and the fitted models, so every
    executor scores with exactly the artifacts the driver verified, and writes the columns
    the DuckDB engine writes (``batch.score.scored_columns``)."""
    names = models.champion.features

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            table = apply_odfvs(plan, pa.Table.from_batches([batch]))
            n = table.num_rows
            columns = {c: table[c] for c in (ID, *ENTITY_KEYS, TS)}
            columns |= scored_columns(models, table)
            columns |= {
                "run_id": pa.array([run_id] * n, pa.string()),
                "scored_at": pa.array([scored_at] * n, pa.timestamp("us", tz="UTC")),
            }
            columns |= {f"{NULL_PREFIX}{i}": pc.is_null(table[f]) for i, f in enumerate(names)}
            yield from pa.table(columns).to_batches()

    return score


def score_day(
    plan: RetrievalPlan,
    sources: list[DataFrame],
    models: Models,
    entities: DataFrame,
    sel: DaySelection,
    partitions: int,
    stage: output.Stage | None,
    run_id: str,
    scored_at: datetime,
) -> Scored:
    """Join, score and (unless a dry run) write the day; only aggregates reach the driver."""
    names = models.champion.features
    ddl = SCORE_DDL + "".join(f", {NULL_PREFIX}{i} boolean" for i in range(len(names)))
    joined = features(plan, sources, entities, sel).repartition(partitions, ENTITY_KEYS[0])
    scored = joined.sortWithinPartitions(TS, ID).mapInArrow(
        scorer(plan, models, run_id, scored_at), ddl
    )
    scored = scored.persist(StorageLevel.MEMORY_AND_DISK)  # one scoring, two readers
    try:
        tally = _tally(scored, names)
        if stage is not None:
            out = scored.select(*(c.split()[0] for c in SCORE_DDL.split(", ")))
            out.write.mode("overwrite").parquet(storage.s3a(stage.directory))
    finally:
        scored.unpersist()
    files = _files(stage) if stage is not None else []
    return Scored(*tally, files, partitions)


def _tally(scored: DataFrame, names: list[str]) -> tuple[int, int, dict[str, int], np.ndarray]:
    """Rows, rows with a missing feature, misses per feature, and ``np.histogram``'s bins
    (the same edges, so the manifest equals the DuckDB engine's)."""
    flags = [F.col(f"{NULL_PREFIX}{i}") for i in range(len(names))]
    any_null = flags[0]
    for flag in flags[1:]:
        any_null |= flag
    edges = np.linspace(0.0, 1.0, BINS + 1)
    bucket = F.lit(0)
    for edge in edges[1:-1]:
        bucket += (F.col("score") >= float(edge)).cast("int")
    aggs = [F.count(F.lit(1)), F.count_if(any_null), *(F.count_if(f) for f in flags)]
    aggs += [F.count_if(bucket == b) for b in range(BINS)]
    row = scored.agg(*aggs).first()
    assert row is not None
    missing = {name: int(v) for name, v in zip(names, row[2 : 2 + len(names)], strict=True) if v}
    histogram = np.array(row[2 + len(names) :], dtype=np.int64)
    return int(row[0]), int(row[1]), missing, histogram


def _files(stage: output.Stage) -> list[tuple[str, int]]:
    """The part files Spark committed into the staging directory, with their row counts
    (parquet footers only); Spark's hidden checksum files go."""
    for crc in storage.list_files(stage.directory):
        if storage.name(crc).startswith("."):
            fs, path = storage.filesystem(crc)
            fs.delete_file(path)
    return [(name, _rows(stage.location(name))) for name in stage.written()]


def _rows(location: str) -> int:
    fs, path = storage.filesystem(location)
    with fs.open_input_file(path) as fh:
        return int(pq.read_metadata(fh).num_rows)


def run_spark(
    settings: Settings, opts: ScoreOptions, job: Job, source: str, root: str
) -> tuple[Job, list[ChunkResult], int]:
    """The Spark engine's part of ``batch.score.run_score``: select, check, score, write.

    ``job`` arrives with what every engine resolves (store, FeatureService, predictor, plan,
    run id); it leaves with the day's selection and staging location."""
    plan = job.plan
    assert plan is not None
    require_s3a(settings, source, root, *(view.path for view in plan.views))
    spark = session(settings)
    entities, sel = select_day(spark, source, opts.day, opts.limit)
    sources = check_sources(spark, plan, sel) if sel.rows else []
    partitions = max(1, math.ceil(sel.rows / opts.chunk_rows))
    stage = None if opts.dry_run else output.begin(root, opts.day, job.run_id)
    job = replace(job, selection=sel, chunks=partitions, staging=stage)
    workers = spark.sparkContext.defaultParallelism
    log.info(
        "scoring %s on Spark (%s, %d cores): %d rows from %s in %d partition(s), model %s",
        opts.day,
        spark.sparkContext.master,
        workers,
        sel.rows,
        source,
        partitions,
        job.models.champion.version,
    )
    if not sel.rows:
        return job, [], workers
    got = score_day(
        plan,
        sources,
        job.models,
        entities,
        sel,
        partitions,
        stage,
        job.run_id,
        job.scored_at,
    )
    return job, _results(got), workers


def _results(got: Scored) -> list[ChunkResult]:
    """The tally in ``build_manifest``'s terms: one result per file (the first also carrying
    the day's misses and histogram), or one without a file for a dry run."""
    tally = ChunkResult(None, got.rows, got.missing_rows, got.missing_by_feature, got.histogram)
    if not got.files:
        return [tally]
    if sum(rows for _, rows in got.files) != got.rows:
        raise RuntimeError(f"Spark wrote {got.files} but scored {got.rows} rows")
    results = [ChunkResult(name, rows, 0, {}) for name, rows in got.files]
    results[0] = replace(tally, file=got.files[0][0], rows=got.files[0][1])
    return results
