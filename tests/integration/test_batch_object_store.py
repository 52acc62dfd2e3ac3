"""The DuckDB-engine job with its input and its scores on a real S3-compatible server
(s3proxy, started by devservices), configured only by the standard AWS variables.

Killed mid-run, the committed day stays whole and a reader polling throughout only ever
resolves one whole run; the re-run commits each transaction once and publishes it to the
API; an empty day commits an empty manifest; feature sources are read from ``s3://`` too.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from batch import output
from batch.entities import ID, VIEW, define_entities
from batch.plan import RetrievalPlan, build_plan
from batch.retrieve import duckdb_features
from batch.score import ScoreOptions, run_score
from core import storage
from core.duck import connect
from core.settings import PROJECT_ROOT, Settings
from core.store import feature_service, open_store
from devservices.s3proxy import client_env, ensure_s3proxy
from serving.app import create_app
from tests.conftest import Clock, Stack

pytestmark = pytest.mark.integration
KILL_AFTER_PARTS = 3
PARTS = 12
WAIT_S = 300.0


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    """A fresh bucket on the devservices s3proxy; this process and the jobs reach it only
    through the standard AWS variables."""
    settings = Settings()
    ensure_s3proxy(settings)
    env = client_env(settings)
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def bucket(s3_env: dict[str, str]) -> Iterator[str]:
    """A fresh prefix of the tests' bucket for this module, emptied afterwards."""
    location = f"s3://fraud-tests/{uuid.uuid4().hex[:12]}"
    storage.make_dirs("s3://fraud-tests")
    yield location
    storage.delete_tree(location)


@pytest.fixture(scope="module")
def day(clock: Clock) -> date:
    return clock.now.date() - timedelta(days=1)


@pytest.fixture(scope="module")
def job_env(trained: Stack, s3_env: dict[str, str], bucket: str) -> dict[str, str]:
    """The stack's env plus the AWS variables, with the transactions uploaded to the bucket."""
    source = f"{bucket}/input/transactions.parquet"
    fs, path = storage.filesystem(source)
    pq.write_table(
        pq.read_table(trained.settings.data_dir / "transactions.parquet"), path, filesystem=fs
    )
    return trained.env | s3_env | {"BATCH_TRANSACTIONS": source}


def in_process(trained: Stack, job_env: dict[str, str], root: str) -> Settings:
    """The job's settings for a run in this process (the AWS variables are set here too)."""
    source = job_env["BATCH_TRANSACTIONS"]
    return trained.settings_with(batch_transactions=source, batch_output_dir=root)


def score_cmd(root: str, day: date, rows: int, *extra: str) -> list[str]:
    chunk_rows = -(-rows // PARTS)
    return [sys.executable, "-m", "batch", "score", "--output", root, "--date", day.isoformat(),
            "--chunk-rows", str(chunk_rows), "--workers", "1", *extra]  # fmt: skip


def day_rows(trained: Stack, day: date) -> int:
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    table = pq.read_table(
        trained.settings.data_dir / "transactions.parquet", columns=["event_timestamp"]
    )
    ts = table["event_timestamp"]
    return int(
        pc.sum(pc.and_(pc.greater_equal(ts, start), pc.less(ts, start + timedelta(days=1)))).as_py()
    )


def run_dirs(root: str, day: date) -> list[str]:
    return [d for d in storage.list_dirs(output.partition(root, day)) if d.startswith("run=")]


class Reader(threading.Thread):
    """Resolves and reads the day again and again, as a consumer would; a read is whole
    when all its rows come from one run and match that run's manifest."""

    def __init__(self, root: str, day: date) -> None:
        super().__init__(daemon=True)
        self.root, self.day = root, day
        self.reads = 0
        self.bad: list[str] = []
        self.runs: set[str] = set()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.05):  # a consumer's pace, not a load test
            try:
                self.read_once()
            except Exception as exc:  # a failed read counts against the promise too
                self.bad.append(repr(exc))

    def read_once(self) -> None:
        read = output.read_committed(self.root, self.day, ["transaction_id", "run_id"])
        if read is None:
            self.bad.append("no committed day")
            return
        resolved, table = read
        self.reads += 1
        runs = set(table["run_id"].unique().to_pylist())
        self.runs |= runs
        whole = table.num_rows == resolved.manifest["rows_out"]
        one_run = runs == {resolved.manifest["run_id"]}
        unique = len(pc.unique(table["transaction_id"])) == table.num_rows
        if not (whole and one_run and unique):
            self.bad.append(f"{table.num_rows} rows from runs {sorted(runs)}")

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)


def run_job(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=WAIT_S
    )


def kill_after_parts(cmd: list[str], env: dict[str, str], root: str, day: date, keep: str) -> int:
    """Start the job; SIGKILL it once its run directory holds ``KILL_AFTER_PARTS`` files."""
    proc = subprocess.Popen(
        cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + WAIT_S
    staged = 0
    while staged < KILL_AFTER_PARTS:
        assert proc.poll() is None and time.monotonic() < deadline, "the job ended before the kill"
        time.sleep(0.05)
        runs = [d for d in run_dirs(root, day) if d != keep]
        staged = len(storage.list_files(output.partition(root, day) + "/" + runs[0])) if runs else 0
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return staged


def test_killed_job_leaves_the_day_whole_and_the_rerun_commits_each_row_once(
    trained: Stack, job_env: dict[str, str], bucket: str, day: date
) -> None:
    root = f"{bucket}/scores"
    rows = day_rows(trained, day)
    assert rows >= PARTS, f"the day holds {rows} rows, too few for {PARTS} part files"
    cmd = score_cmd(root, day, rows)
    run_score(in_process(trained, job_env, root), ScoreOptions(day, chunk_rows=-(-rows // PARTS)))
    committed = output.resolve(root, day)
    assert committed is not None and output.is_complete(output.partition(root, day))
    assert committed.manifest["entities"] == job_env["BATCH_TRANSACTIONS"]  # read from s3://
    assert committed.manifest["rows_out"] == rows and len(committed.files) == PARTS

    reader = Reader(root, day)
    reader.start()
    try:
        staged = kill_after_parts(
            cmd, job_env, root, day, keep=f"run={committed.manifest['run_id']}"
        )
        assert staged >= KILL_AFTER_PARTS
        after_kill = output.resolve(root, day)
        assert after_kill is not None and after_kill.manifest == committed.manifest
        assert output.is_complete(output.partition(root, day))
        rerun = run_job([*cmd, "--publish"], job_env)
        assert rerun.returncode == 0, rerun.stderr
    finally:
        reader.stop()
    assert reader.reads > 0 and not reader.bad, reader.bad[:5]
    final = output.resolve(root, day)
    assert final is not None and final.manifest["run_id"] != committed.manifest["run_id"]
    assert committed.manifest["run_id"] in reader.runs  # it read before and after the kill
    assert reader.runs <= {committed.manifest["run_id"], final.manifest["run_id"]}
    table = output.read_day(root, day)
    assert table is not None and table.num_rows == rows
    assert len(pc.unique(table["transaction_id"])) == rows  # each transaction once
    # What is left: the new run and the one it replaced (for readers mid-read); the killed
    # run's files are gone.
    assert sorted(run_dirs(root, day)) == sorted(
        f"run={m['run_id']}" for m in (final.manifest, committed.manifest)
    )
    assert_published(trained, table, final.manifest)


def assert_published(trained: Stack, table: pa.Table, manifest: dict[str, object]) -> None:
    """``--publish`` from the object store: GET /v1/scores serves each user's latest score."""
    frame = table.to_pandas().sort_values(["event_timestamp", "transaction_id"])
    latest = frame.groupby("user_id").tail(1).set_index("user_id")
    assert manifest["published_users"] == len(latest)
    users = latest.index[:3].tolist()
    with TestClient(create_app(trained.settings)) as client:
        for user in users:
            served = client.get(f"/v1/scores/{user}")
            assert served.status_code == 200, served.text
            assert served.json()["score"] == latest.loc[user, "score"]
            assert served.json()["scored_transaction_id"] == latest.loc[user, "transaction_id"]


def test_empty_day_commits_an_empty_manifest(
    trained: Stack, job_env: dict[str, str], bucket: str
) -> None:
    root = f"{bucket}/empty"
    empty_day = date(2001, 1, 1)
    run_score(in_process(trained, job_env, root), ScoreOptions(empty_day))
    resolved = output.resolve(root, empty_day)
    assert resolved is not None and resolved.manifest["empty"] and resolved.files == []
    assert output.is_complete(output.partition(root, empty_day))
    table = output.read_day(root, empty_day)
    assert table is not None and table.num_rows == 0


def s3_sources(plan: RetrievalPlan, prefix: str) -> RetrievalPlan:
    """``plan`` with each view's source file copied under ``prefix`` (``s3://``) and read
    from there, as a ``FileSource(path="s3://...")`` in features.py would give it."""
    remote_views = []
    for view in plan.views:
        remote = f"{prefix}/{Path(view.path).name}"
        fs, path = storage.filesystem(remote)
        pq.write_table(pq.read_table(view.path), path, filesystem=fs)
        remote_views.append(dataclasses.replace(view, path=remote))
    assert len(remote_views) == len(plan.views) > 0
    return dataclasses.replace(plan, views=tuple(remote_views))


def test_feature_sources_are_read_from_s3(trained: Stack, bucket: str, day: date) -> None:
    """The fast path's join over the views' files copied to s3:// equals it over local ones."""
    store = open_store(trained.settings)
    plan = build_plan(store, feature_service(store))
    remote_plan = s3_sources(plan, f"{bucket}/features")
    con = connect()
    sel = define_entities(con, trained.settings.data_dir / "transactions.parquet", day, None)
    assert sel.first is not None and sel.last is not None
    local = duckdb_features(con.cursor(), plan, VIEW, sel.first, sel.last, order_by=(ID,))
    storage.attach(con, *(v.path for v in remote_plan.views))
    remote = duckdb_features(con.cursor(), remote_plan, VIEW, sel.first, sel.last, order_by=(ID,))
    assert local.num_rows > 0 and remote.equals(local)
