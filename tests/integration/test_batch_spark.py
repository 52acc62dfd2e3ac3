"""``--engine spark`` (Spark in local mode) against the DuckDB engine, on data built to hit
Feast's point-in-time corners: equal features and scores row for row, the same manifest,
a SIGKILL mid-write that leaves the previous partition whole, an empty day, and the
``make fuzz`` corpus of broken inputs with the same one-line errors; on ``s3://`` (s3a on
s3proxy) too: equality, ``--publish`` served by Feast, and the kill.

One Spark session serves the module (the job's ``getOrCreate``); only the kill runs the
job as its own process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from feast.cli.cli import cli as feast_main
from pyspark.sql import SparkSession

from batch import output
from batch.entities import VIEW, define_entities
from batch.plan import RetrievalPlan, build_plan
from batch.retrieve import duckdb_features
from batch.score import Engine, ScoreOptions, run_score
from batch.spark_input import select_day, session
from batch.spark_job import check_sources, features
from core import storage
from core.contract import BATCH_SCORE_VIEW, FEATURE_SERVICE_NAME, feature_order
from core.duck import connect
from core.settings import PROJECT_ROOT, Settings, get_settings
from core.store import copy_feature_repo, feature_service, open_store
from datagen.generate import PUBLISHED_SCORE_SCHEMA
from devservices.spark_jars import ensure_spark_jars
from harness.models import champion_dir
from harness.report import table
from tests.conftest import Stack, feast_cli
from tests.integration.test_batch_equivalence import T0, US, H, crafted
from tests.integration.test_batch_object_store import (  # noqa: F401 (bucket, s3_env: fixtures)
    bucket,
    s3_env,
    s3_sources,
)
from verify import fuzz_batch

pytestmark = pytest.mark.integration

DAY = (T0 + 270 * H).date()  # a day of the crafted entity rows, with corners added
EMPTY_DAY = date(2025, 3, 1)
SPARK_CONF = {"spark.driver.memory": "640m", "spark.sql.shuffle.partitions": "4"}
SOURCES = {"entities": "transactions"}
FEATURES = ("account_age_days", "avg_amount_30d", "risk_score", "txn_count_1h")


@dataclass(frozen=True)
class Corners:
    settings: Settings
    root: Path
    spark: SparkSession


def _add_corners(frames: dict[str, pd.DataFrame]) -> None:
    """On DAY: a TTL edge and one microsecond past it (user 45, one profile row), a
    corrected profile row (user 46: same timestamp, created later, wins), and two entity rows
    with the same keys and time."""
    edge, fixed = T0 + 270 * H, T0 + 250 * H
    profile = pd.DataFrame(
        {
            "user_id": [45, 46, 46, 46],
            "event_timestamp": [edge - timedelta(days=2), fixed, fixed, fixed],
            "created_timestamp": [edge - timedelta(days=2), fixed, fixed + 5 * H, fixed + H],
            "account_age_days": [7, 20, 21, 22],
            "avg_amount_30d": [5.0, 1.0, 2.0, 3.0],
            "txn_count_30d": [1, 1, 2, 3],
            "home_country": ["US", "US", "GB", "DE"],
        }
    )
    frames["user_profile"] = pd.concat([frames["user_profile"], profile], ignore_index=True)
    rows = pd.DataFrame(
        {
            "transaction_id": ["edge", "expired", "corrected", "twin-a", "twin-b"],
            "user_id": [45, 45, 46, 2, 2],
            "merchant_id": [1, 1, 1, 2, 2],
            "amount": [10.0, 11.0, 12.0, 13.0, 14.0],
            "channel": ["pos", "online", "pos", "pos", "atm"],
            "country": ["US", "GB", "US", "US", "US"],
            "event_timestamp": [edge, edge + US, fixed + 16 * H, edge + 10 * H, edge + 10 * H],
        }
    )
    frames["entities"] = pd.concat([frames["entities"], rows], ignore_index=True)


@pytest.fixture(scope="module")
def corners(trained: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corners]:
    """A feature repo copy over the crafted data (its entity rows as the transactions),
    applied, with the session's trained model; and the module's one Spark session."""
    root = tmp_path_factory.mktemp("spark-corners")
    copy_feature_repo(root)
    data = root / "data"
    data.mkdir()
    frames = crafted(np.random.default_rng(4))
    _add_corners(frames)
    for name, frame in frames.items():  # microseconds, as datagen writes them
        for column in ("event_timestamp", "created_timestamp"):
            if column in frame:
                frame[column] = frame[column].astype("datetime64[us, UTC]")
        frame.to_parquet(data / f"{SOURCES.get(name, name)}.parquet", index=False)
    pa.Table.from_pylist([], schema=PUBLISHED_SCORE_SCHEMA).to_pandas().to_parquet(
        data / "published_scores.parquet", index=False
    )
    applied = trained.run(feast_cli(), "apply", cwd=root / "feature_repo")
    assert applied.returncode == 0, applied.stderr
    settings = Settings(
        feature_repo=root / "feature_repo",
        redis_connection_string=trained.settings.redis_connection_string,
        model_dir=champion_dir(trained.settings),
        spark_conf=SPARK_CONF,
    )
    ensure_spark_jars(settings)  # make install's step: s3a on the one session's classpath
    spark = session(settings)
    try:
        yield Corners(settings, root, spark)
    finally:
        spark.stop()


def _score(corners: Corners, engine: Engine, out: str, day: date = DAY) -> dict[str, Any]:
    settings = corners.settings.model_copy(update={"batch_output_dir": str(corners.root / out)})
    return run_score(settings, ScoreOptions(day=day, engine=engine, chunk_rows=60))


def _rows(partition: Path) -> pd.DataFrame:
    files = sorted(partition.glob("part-*.parquet"))
    assert files, f"no part files in {partition}"
    frame = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    return frame.sort_values("transaction_id").reset_index(drop=True)


def _spark_and_duckdb_joins(
    spark: SparkSession, plan: RetrievalPlan, source: str, local: Corners
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The Spark join of ``plan`` over the transactions at ``source``, and the DuckDB fast
    path's over the local corner files, each sorted by transaction; equal selections."""
    entities, sel = select_day(spark, source, DAY, None)
    got = features(plan, check_sources(spark, plan, sel), entities, sel).toPandas()
    store = open_store(local.settings)
    local_plan = build_plan(store, feature_service(store))
    con = connect()
    duck = define_entities(con, str(local.settings.data_dir / "transactions.parquet"), DAY, None)
    assert (duck.rows, duck.first, duck.last) == (sel.rows, sel.first, sel.last)
    assert duck.first is not None and duck.last is not None
    want = duckdb_features(con.cursor(), local_plan, VIEW, duck.first, duck.last).to_pandas()
    names = ["transaction_id", "user_id", *(f for v in plan.views for f in v.features)]
    assert len(got) == sel.rows > 100
    return tuple(  # type: ignore[return-value]
        f[names].sort_values("transaction_id").reset_index(drop=True) for f in (got, want)
    )


def test_spark_features_equal_the_duckdb_join_at_every_corner(corners: Corners) -> None:
    store = open_store(corners.settings)
    plan = build_plan(store, feature_service(store))
    source = str(corners.settings.data_dir / "transactions.parquet")
    got, want = _spark_and_duckdb_joins(corners.spark, plan, source, corners)
    pd.testing.assert_frame_equal(got, want, check_exact=True, check_dtype=False)

    row = got.set_index("transaction_id")
    assert row.loc["corrected", "account_age_days"] == 21  # the latest-created row wins
    assert row.loc["edge", "account_age_days"] == 7  # exactly at the TTL: still in
    assert row["account_age_days"].isna()["expired"]  # one microsecond past it: expired
    twins = row.loc[["twin-a", "twin-b"], list(FEATURES)]
    assert twins.iloc[0].equals(twins.iloc[1])
    unknown = row[row.user_id.between(40, 41)]  # users with no rows anywhere
    assert len(unknown) and unknown[["account_age_days", "txn_count_1h"]].isna().all().all()


def _feast_in_process(args: list[str], env: dict[str, str], mp: pytest.MonkeyPatch) -> Result:
    """The feast CLI's click group in this process, so it reuses the imported Feast and the
    module's Spark session (a ``feast`` process starts its own: 46-110 s here). It chdirs,
    extends sys.path and imports the repo's ``features``; all three are put back after."""
    mp.chdir(Path.cwd())
    mp.setattr(sys, "path", list(sys.path))
    mp.delitem(sys.modules, "features", raising=False)
    try:
        return CliRunner(env=env).invoke(feast_main, args, catch_exceptions=False)
    finally:
        sys.modules.pop("features", None)


def test_feast_apply_on_the_spark_yaml_registers_the_same_feature_service(
    trained: Stack, corners: Corners, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``FEAST_SOURCE=spark feast -f feature_store.spark.yaml apply``, as the README says: the
    same FeatureService and feature list as the default yaml's, its views over SparkSources."""
    repo = corners.settings.feature_repo
    spark_yaml = repo / "feature_store.spark.yaml"
    env = {k: trained.env[k] for k in ("REDIS_CONNECTION_STRING", "REDIS_TYPE")}
    args = ["--chdir", str(repo), "-f", str(spark_yaml), "apply"]
    out = _feast_in_process(args, env | {"FEAST_SOURCE": "spark"}, monkeypatch)
    corners.spark.conf.unset("spark.sql.parser.quotedRegexColumnNames")  # Feast's, session-wide
    assert out.exit_code == 0, out.output
    registered = []
    for yaml in (repo / "feature_store.yaml", spark_yaml):
        monkeypatch.setenv("FEAST_FS_YAML_FILE_PATH", str(yaml))
        store = open_store(corners.settings)
        service = feature_service(store)
        views = {p.name for p in service.feature_view_projections}
        sources = {
            type(v.batch_source).__name__ for v in store.list_feature_views() if v.name in views
        }
        registered.append((service.name, feature_order(service), sources))
    (name, order, file_sources), (spark_name, spark_order, spark_sources) = registered
    assert (spark_name, spark_order) == (name, order) == (FEATURE_SERVICE_NAME, order)
    assert len(order) > 10
    assert (file_sources, spark_sources) == ({"FileSource"}, {"SparkSource"})


def test_spark_job_output_equals_the_duckdb_engine_row_for_row(corners: Corners) -> None:
    duck = _score(corners, "duckdb", "duck")
    spark = _score(corners, "spark", "spark")
    assert spark["engine"] == "spark" and spark["rows_out"] == duck["rows_out"] > 100
    for key in ("rows_in", "rows_missing_features", "missing_by_feature", "score_histogram"):
        assert spark[key] == duck[key], key
    assert spark["model_version"] == duck["model_version"]
    assert spark["input_time_range"] == duck["input_time_range"]

    d_part = output.partition_dir(corners.root / "duck", DAY)
    s_part = output.partition_dir(corners.root / "spark", DAY)
    assert output.is_complete(s_part) and output.is_complete(d_part)
    d, s = _rows(d_part), _rows(s_part)
    assert list(s.columns) == list(d.columns)
    assert s.transaction_id.tolist() == d.transaction_id.tolist()
    assert float(np.max(np.abs(s.score - d.score))) <= 1e-9
    same = ["user_id", "merchant_id", "event_timestamp", "model_version", "decision"]
    same += ["challenger_version", "challenger_score", "challenger_decision"]  # all null here
    pd.testing.assert_frame_equal(s[same], d[same], check_exact=True)
    assert [[r["feature"] for r in row] for row in s.reasons] == [
        [r["feature"] for r in row] for row in d.reasons
    ]
    s_terms, d_terms = ([r["contribution"] for row in f.reasons for r in row] for f in (s, d))
    np.testing.assert_allclose(s_terms, d_terms, rtol=1e-9)
    assert not [p for p in (corners.root / "spark").iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def s3_source(corners: Corners, bucket: str) -> str:  # noqa: F811 (the fixture)
    """The crafted transactions uploaded to the module's bucket prefix."""
    source = f"{bucket}/spark-in/transactions.parquet"
    fs, path = storage.filesystem(source)
    pq.write_table(
        pq.read_table(corners.root / "data" / "transactions.parquet"), path, filesystem=fs
    )
    return source


def test_spark_reads_feature_sources_and_transactions_from_s3(
    corners: Corners,
    bucket: str,  # noqa: F811 (the fixture)
    s3_source: str,
) -> None:
    """Every view's source and the day's transactions on s3:// (s3a on s3proxy): the Spark
    join equals the DuckDB fast path's over the local files, row for row."""
    store = open_store(corners.settings)
    plan = s3_sources(build_plan(store, feature_service(store)), f"{bucket}/spark-features")
    assert all(view.path.startswith("s3://") for view in plan.views)
    spark = session(corners.settings)  # the module's session, given today's AWS variables
    got, want = _spark_and_duckdb_joins(spark, plan, s3_source, corners)
    pd.testing.assert_frame_equal(got, want, check_exact=True, check_dtype=False)


def test_spark_on_s3_equals_duckdb_on_local_files_and_commits_by_manifest(
    corners: Corners,
    bucket: str,  # noqa: F811 (the fixture)
    s3_source: str,
) -> None:
    """s3:// input and output (s3a on s3proxy): Spark writes under the run's prefix, the
    driver PUTs the manifest last, readers resolving it get the DuckDB engine's rows, and
    ``--publish`` puts each user's latest score online for Feast's SDK."""
    root = f"{bucket}/spark-scores"
    duck = _score(corners, "duckdb", "duck-vs-s3")
    settings = corners.settings.model_copy(
        update={"batch_transactions": s3_source, "batch_output_dir": root}
    )
    opts = ScoreOptions(day=DAY, engine="spark", chunk_rows=60, publish=True)
    spark = run_score(settings, opts)
    assert spark["engine"] == "spark" and spark["rows_out"] == duck["rows_out"] > 100
    for key in ("rows_in", "rows_missing_features", "missing_by_feature", "score_histogram"):
        assert spark[key] == duck[key], key

    resolved = output.resolve(root, DAY)
    assert resolved is not None and resolved.manifest["run_id"] == spark["run_id"]
    run_prefix = f"{output.partition(root, DAY)}/run={spark['run_id']}/part-"
    assert len(resolved.files) > 1 and all(f.startswith(run_prefix) for f in resolved.files)
    assert output.is_complete(output.partition(root, DAY))
    assert storage.list_dirs(output.partition(root, DAY)) == [f"run={spark['run_id']}"]
    read = output.read_day(root, DAY)
    assert read is not None
    s = read.to_pandas().sort_values("transaction_id").reset_index(drop=True)
    d = _rows(output.partition_dir(corners.root / "duck-vs-s3", DAY))
    assert s.transaction_id.tolist() == d.transaction_id.tolist()
    assert float(np.max(np.abs(s.score - d.score))) <= 1e-9
    same = ["user_id", "merchant_id", "event_timestamp", "model_version"]
    pd.testing.assert_frame_equal(s[same], d[same], check_exact=True)
    _assert_published(corners, s, spark)


def _assert_published(corners: Corners, scores: pd.DataFrame, manifest: dict[str, Any]) -> None:
    """Feast's online read of the batch score view returns each user's latest score."""
    latest = (
        scores.sort_values(["event_timestamp", "transaction_id"])
        .groupby("user_id")
        .tail(1)
        .set_index("user_id")
    )
    assert manifest["published_users"] == len(latest) > 10
    users = latest.index[:20].tolist()
    online = (
        open_store(corners.settings)
        .get_online_features(
            features=[f"{BATCH_SCORE_VIEW}:score", f"{BATCH_SCORE_VIEW}:scored_transaction_id"],
            entity_rows=[{"user_id": int(u)} for u in users],
        )
        .to_dict()
    )
    assert len(users) == 20 and online["score"] == latest.loc[users, "score"].tolist()
    assert online["scored_transaction_id"] == latest.loc[users, "transaction_id"].tolist()


def test_an_empty_day_gives_an_empty_partition_with_a_manifest(corners: Corners) -> None:
    manifest = _score(corners, "spark", "empty", EMPTY_DAY)
    partition = output.partition_dir(corners.root / "empty", EMPTY_DAY)
    assert manifest["empty"] is True and manifest["note"] == "no transactions on this date"
    assert output.read_manifest(partition) == json.loads(json.dumps(manifest, default=str))
    assert output.is_complete(partition) and not list(partition.glob("part-*"))


def _kill_when_writing(cmd: list[str], env: dict[str, str], staged: Callable[[], int]) -> int:
    """Run the Spark job as its own process group; SIGKILL the group (driver, JVM, Python
    workers) once Spark's committer holds task output. The files seen, or -1 if it ended."""
    proc = subprocess.Popen(
        cmd, cwd=PROJECT_ROOT, env=env, start_new_session=True, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    while not (seen := staged()):
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return -1
        time.sleep(0.1)  # an s3:// listing is a request: poll the store gently
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return seen


def _committed(root: str) -> tuple[bytes, list[str], pd.DataFrame]:
    """What readers of DAY get: the manifest's bytes, the files it names, their rows."""
    resolved, table = output.read_committed(root, DAY) or (None, None)
    assert resolved is not None and table is not None
    manifest = storage.read_bytes(storage.join(output.partition(root, DAY), output.MANIFEST))
    rows = table.to_pandas().sort_values("transaction_id").reset_index(drop=True)
    return manifest, resolved.files, rows


def _staged_parts(root: str) -> Callable[[], int]:
    """Counts the task output of a run in progress: Spark's ``_temporary`` part files in the
    local staging directory, or under ``date=D/run=<run>/`` on s3://."""
    if storage.is_s3(root):
        partition = output.partition(root, DAY)
        return lambda: sum(
            "/_temporary/" in f and storage.name(f).startswith("part-")
            for f in storage.list_files(partition, recursive=True)
        )
    staged = f".tmp-date={DAY.isoformat()}-*/_temporary/**/part-*"
    return lambda: len(list(Path(root).glob(staged)))


@pytest.mark.parametrize("store", ["local", "s3"])
def test_spark_job_killed_mid_write_leaves_the_previous_partition_whole(
    corners: Corners, store: str, request: pytest.FixtureRequest
) -> None:
    """SIGKILL mid-write: readers still get the committed day (local: the very same tree);
    the re-run commits each row once and leaves only itself and the run it replaced."""
    root, update = str(corners.root / "killed"), {}
    if store == "s3":  # the fixtures also put the AWS variables in os.environ
        root = f"{request.getfixturevalue('bucket')}/killed"
        update = {"batch_transactions": request.getfixturevalue("s3_source")}
    settings = corners.settings.model_copy(update={"batch_output_dir": root} | update)
    env = os.environ | {
        "FEATURE_REPO": str(corners.settings.feature_repo),
        "REDIS_CONNECTION_STRING": corners.settings.redis_connection_string,
        "MODEL_DIR": str(champion_dir(corners.settings)),
        "SPARK_MASTER": "local[1]",  # tasks one at a time: a long window of staged output
        "SPARK_CONF": json.dumps(SPARK_CONF),
    }
    env |= {k.upper(): v for k, v in update.items()}
    previous = run_score(settings, ScoreOptions(day=DAY, engine="duckdb", chunk_rows=60))
    before, digest = _committed(root), _local_digest(root)
    cmd = [sys.executable, "-m", "batch", "score", "--engine", "spark", "--date", str(DAY)]
    cmd += ["--output", root, "--chunk-rows", "40"]
    count = _staged_parts(root)
    seen = _kill_when_writing(cmd, env, count)
    assert seen > 0, "the job ended before Spark wrote any task output"
    after = _committed(root)
    assert after[:2] == before[:2] and _local_digest(root) == digest
    pd.testing.assert_frame_equal(after[2], before[2], check_exact=True)
    partition = output.partition(root, DAY)
    assert output.is_complete(partition)
    if store == "s3":  # the killed run's files sit beside the day until the next run
        assert len(storage.list_dirs(partition)) == 2, storage.list_dirs(partition)

    again = run_score(settings, ScoreOptions(day=DAY, engine="spark", chunk_rows=60))
    assert again["run_id"] != previous["run_id"] and output.is_complete(partition)
    _, files, rows = _committed(root)
    assert len(rows) == again["rows_out"] == previous["rows_out"] > 100
    assert not rows.transaction_id.duplicated().any()
    if store == "s3":
        runs = sorted(f"run={m['run_id']}" for m in (again, previous))
        assert storage.list_dirs(partition) == runs and count() == 0
        assert len(files) > 1
        assert all(f.startswith(f"{partition}/run={again['run_id']}/") for f in files)
    else:
        assert not [p for p in Path(root).iterdir() if p.name.startswith(".")]


def _local_digest(root: str) -> dict[str, str] | None:
    """The whole local partition's digest (an object store keeps the killed run's files
    beside the committed day until the next run, so there only the manifest counts)."""
    if storage.is_s3(root):
        return None
    return fuzz_batch.tree_digest(output.partition_dir(Path(root), DAY))


def test_bad_inputs_fail_as_on_duckdb_and_leave_the_output_untouched(
    trained: Stack, corners: Corners, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``make fuzz``'s batch corpus, run through ``python -m batch``'s ``main`` on Spark."""
    day = fuzz_batch.latest_day(trained.settings)
    env = fuzz_batch.prepare(trained.settings, tmp_path, day, rows=300)  # scored on DuckDB
    for name in ("FEATURE_REPO", "REDIS_CONNECTION_STRING", "KAFKA_BOOTSTRAP_SERVERS", "MODEL_DIR"):
        monkeypatch.setenv(name, env[name])  # MODEL_DIR: the champion that prepare copied
    monkeypatch.setenv("BATCH_ENGINE", "spark")
    get_settings.cache_clear()
    try:
        checks = [
            fuzz_batch.check(case, fuzz_batch.run_case(tmp_path, day, case), tmp_path)
            for case in fuzz_batch.CASES
        ]
    finally:
        get_settings.cache_clear()
    assert len(checks) == len(fuzz_batch.CASES) == 20 and all(c.ok for c in checks), table(checks)
