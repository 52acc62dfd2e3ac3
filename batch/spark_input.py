"""The Spark engine's session and inputs: the day's rows selected in Spark SQL, checked there.

The checks are ``batch.validate``'s, run as Spark aggregates instead of DuckDB queries, with
Spark's types named as DuckDB names them, so a broken file gets the same one line on
either engine (``make fuzz``'s corpus runs against both). Only counts and one example row
ever reach the driver.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from batch import validate
from batch.entities import COLUMNS, ID, TS, DaySelection, day_bounds
from batch.plan import ViewSpec
from core import storage
from core.cli import UserError
from core.events import CHANNELS, MAX_AMOUNT

if TYPE_CHECKING:
    from core.settings import Settings

LOCAL_MASTER = "local[*]"
# Embedded defaults; SPARK_CONF (or spark-submit --conf) overrides any of them.
DEFAULT_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    # pandas writes nanosecond timestamps, which Spark refuses; read them as longs and convert.
    "spark.sql.legacy.parquet.nanosAsLong": "true",
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "50000",
    "spark.sql.execution.arrow.pyspark.enabled": "true",  # toPandas as Arrow types it
}
_LOG4J = Path(__file__).with_name("spark-log4j2.properties")
_DUCK_NAMES: dict[type[T.DataType], str] = {
    T.StringType: "VARCHAR",
    T.LongType: "BIGINT",
    T.IntegerType: "INTEGER",
    T.ShortType: "SMALLINT",
    T.ByteType: "TINYINT",
    T.DoubleType: "DOUBLE",
    T.FloatType: "FLOAT",
    T.BooleanType: "BOOLEAN",
    T.DateType: "DATE",
    T.TimestampType: "TIMESTAMP WITH TIME ZONE",
    T.TimestampNTZType: "TIMESTAMP",
}


def session(settings: Settings) -> SparkSession:
    """The job's session: ``local[*]`` unless SPARK_MASTER or spark-submit names a cluster."""
    builder = SparkSession.builder.appName("fraud-batch")
    conf = DEFAULT_CONF | _s3a_classpath(settings) | storage.spark_s3a_conf() | settings.spark_conf
    if "spark.driver.extraJavaOptions" not in conf:
        conf["spark.driver.extraJavaOptions"] = f"-Dlog4j2.configurationFile={_LOG4J.as_uri()}"
    for key, value in conf.items():
        builder = builder.config(key, value)
    if settings.spark_master:
        builder = builder.master(settings.spark_master)
    elif "PYSPARK_GATEWAY_PORT" not in os.environ:  # not launched by spark-submit
        builder = builder.master(LOCAL_MASTER)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers: this venv
    spark = builder.getOrCreate()
    _follow_aws_variables(spark, settings)
    return spark


def s3a_jars(settings: Settings) -> list[Path]:
    """hadoop-aws and the AWS SDK bundle as ``make install`` cached them (the directory
    appears whole, by a rename); none if it has not."""
    return sorted(settings.spark_s3a_jars_dir.glob("*.jar"))


def _s3a_classpath(settings: Settings) -> dict[str, str]:
    """The s3a jars for a new session: on the driver's classpath in local mode (one JVM, and
    ``spark.jars`` would copy the 690 MB SDK per session), shipped by ``spark.jars`` to a
    cluster's executors."""
    jars = s3a_jars(settings)
    if not jars or "PYSPARK_GATEWAY_PORT" in os.environ:  # spark-submit: its --jars
        return {}
    if (settings.spark_master or LOCAL_MASTER).startswith("local"):
        return {"spark.driver.extraClassPath": os.pathsep.join(map(str, jars))}
    return {"spark.jars": ",".join(jar.as_uri() for jar in jars)}


def _follow_aws_variables(spark: SparkSession, settings: Settings) -> None:
    """A reused session (``getOrCreate``) reads ``s3a://`` with today's AWS variables too:
    its Hadoop configuration takes the ``spark.hadoop.*`` settings now, not at its start."""
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in (storage.spark_s3a_conf() | settings.spark_conf).items():
        if key.startswith("spark.hadoop."):
            hadoop.set(key.removeprefix("spark.hadoop."), value)


def require_s3a(settings: Settings, *locations: str) -> None:
    """Fail in one line, before Spark starts, if an ``s3://`` location has no s3a jars."""
    s3 = [loc for loc in locations if storage.is_s3(loc)]
    if s3 and not s3a_jars(settings) and "PYSPARK_GATEWAY_PORT" not in os.environ:
        raise UserError(
            f"{s3[0]} needs hadoop-aws on Spark: run `make install` (it caches the jars in"
            f" {settings.spark_s3a_jars_dir})"
        )


def duck_type(data_type: T.DataType) -> str:
    """A Spark column type as DuckDB names it, for ``validate``'s messages and kinds."""
    if isinstance(data_type, T.DecimalType):
        return f"DECIMAL({data_type.precision},{data_type.scale})"
    return _DUCK_NAMES.get(type(data_type), data_type.simpleString().upper())


def read_table(spark: SparkSession, location: str) -> DataFrame:
    """A parquet or CSV file (or directory) as Spark reads it, nanosecond timestamps made
    timestamps; raises OSError/ValueError if it is not readable as that format."""
    if location.endswith(".csv"):
        return spark.read.csv(storage.s3a(location), header=True, inferSchema=True)
    nanos = _nanosecond_columns(location)
    frame = spark.read.parquet(storage.s3a(location))
    for name, utc in nanos.items():
        micros = F.timestamp_micros(F.floor(F.col(name) / 1000).cast("long"))
        frame = frame.withColumn(name, micros if utc else micros.cast("timestamp_ntz"))
    return frame


def _nanosecond_columns(location: str) -> dict[str, bool]:
    """Timestamp columns stored in nanoseconds (name -> adjusted to UTC), from the footers."""
    if storage.is_file(location):
        fs, path = storage.filesystem(location)
        schema = pq.read_schema(path, filesystem=fs)
    else:
        schema = storage.dataset(location).schema
    found = {}
    for field in schema:
        if str(field.type).startswith("timestamp[ns"):
            found[field.name] = getattr(field.type, "tz", None) is not None
    return found


def types_of(frame: DataFrame) -> dict[str, str]:
    return {f.name: duck_type(f.dataType) for f in frame.schema.fields}


def select_day(
    spark: SparkSession, source: str, day: date, limit: int | None
) -> tuple[DataFrame, DaySelection]:
    """The day's rows of ``source`` as a lazy DataFrame, checked as the DuckDB engine checks."""
    if not storage.exists(source):
        raise FileNotFoundError(2, "no such file", source)
    try:
        frame = read_table(spark, source)
    except Exception as exc:  # pyarrow's and Spark's read errors have no common base
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read entities from {source}: {first}") from exc
    validate.column_types(source, types_of(frame), validate.ENTITY_TYPES)
    start, end = day_bounds(day)
    ts = F.col(TS).cast("timestamp")
    rows = frame.select(*COLUMNS[:-1], ts.alias(TS)).where((ts >= start) & (ts < end))
    if limit is not None:
        rows = rows.orderBy(TS, ID).limit(limit)
    return rows, entity_rows(rows, source, f"the rows of {day} (UTC)")


def entity_rows(rows: DataFrame, source: str, what: str) -> DaySelection:
    """``validate.entity_rows`` in one Spark aggregate: counts to the driver, never rows."""
    checks: dict[str, Column] = {
        "null key or field(s)": _any(F.col(c).isNull() for c in validate.ENTITY_TYPES),
        f"amount(s) not in (0, {MAX_AMOUNT:g}] or not finite": (
            F.isnan("amount")
            | F.col("amount").isin(float("inf"), float("-inf"))
            | (F.col("amount") <= 0)
            | (F.col("amount") > MAX_AMOUNT)
        ),
        "negative user_id/merchant_id(s)": (F.col("user_id") < 0) | (F.col("merchant_id") < 0),
        f"channel(s) not in {', '.join(CHANNELS)}": ~F.col("channel").isin(*CHANNELS),
        "country code(s) not two capital letters": ~F.col("country").rlike("^[A-Z]{2}$"),
    }
    aggs = [F.count(F.lit(1)), F.min(TS), F.max(TS), F.count(ID) - F.count_distinct(ID)]
    aggs += [F.count_if(F.coalesce(cond, F.lit(False))) for cond in checks.values()]
    row = rows.agg(*aggs).first()
    assert row is not None
    if row[3]:
        twice = rows.where(F.col(ID).isNotNull()).groupBy(ID).count().where("count > 1")
        example = twice.select(ID).first()
        raise UserError(
            f"{source}: {row[3]} repeated transaction_id(s) in {what}, e.g."
            f" {example[0] if example else None!r}; each transaction must be scored once"
        )
    for (problem, cond), bad in zip(checks.items(), row[4:], strict=True):
        if bad:
            example = rows.where(F.coalesce(cond, F.lit(False))).select(ID).first()
            raise UserError(
                f"{source}: {bad} row(s) in {what} with {problem},"
                f" e.g. {example[0] if example else None!r}"
            )
    return DaySelection(int(row[0]), _utc(row[1]), _utc(row[2]))


def _utc(value: datetime | None) -> datetime | None:
    """Spark hands timestamps back naive, in the session's time zone (UTC)."""
    return value.replace(tzinfo=timezone.utc) if value is not None else None


def _any(conditions: Iterable[Column]) -> Column:
    out: Column | None = None
    for cond in conditions:
        out = cond if out is None else out | cond
    assert out is not None
    return out


def read_view(spark: SparkSession, view: ViewSpec) -> DataFrame:
    """A view's source, checked as ``validate.feature_sources`` checks it."""
    try:
        frame = read_table(spark, view.path)
    except Exception as exc:  # pyarrow's and Spark's read errors have no common base
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"view {view.name}: cannot read {view.path}: {first}") from exc
    where = f"view {view.name}'s source {view.path}"
    validate.column_types(where, types_of(frame), validate._wanted(view))
    return frame


def unique_rows(frame: DataFrame, view: ViewSpec, lo: datetime, hi: datetime) -> None:
    """One row per (keys, timestamp[, created]) among the rows the join can reach."""
    ts = F.col(view.timestamp_field).cast("timestamp")
    keys = [*view.join_keys, view.timestamp_field]
    if view.created_timestamp_column:
        keys.append(view.created_timestamp_column)
    reach = ts <= hi
    if view.ttl is not None:
        reach &= ts >= lo - view.ttl
    repeats = frame.where(reach).groupBy(*keys).count().where("count > 1")
    row = repeats.agg(
        F.count(F.lit(1)), F.first(F.concat_ws(", ", *(F.col(k).cast("string") for k in keys)))
    ).first()
    if row and row[0]:
        raise UserError(
            f"view {view.name}'s source {view.path}: {row[0]} ({', '.join(keys)}) value(s)"
            f" appear on more than one row, e.g. {row[1]}; keep one row per key and time"
        )
