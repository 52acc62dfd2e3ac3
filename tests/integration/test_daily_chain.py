"""`python -m batch daily`: the nightly chain in order, killed mid-way (SIGKILL while
scoring) and resumed at that step, then re-run as a no-op; on a registry of its own, so
its materialization is its own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from batch.daily import Day, run_daily
from batch.output import read_day
from core.contract import MERCHANT_PROFILE_VIEW, USER_PROFILE_VIEW, WINDOWS_VIEW
from core.settings import PROJECT_ROOT
from core.store import open_store
from harness.models import champion_dir
from harness.workspace import Workspace, create
from tests.conftest import Clock, Stack

pytestmark = pytest.mark.integration
STEPS = ["materialize", "score", "publish", "skew"]


@pytest.fixture(scope="module")
def chain(trained: Stack, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A feature repo applied afresh over the session's data and model (same Redis)."""
    s = trained.settings
    ws = create(
        tmp_path_factory.mktemp("daily"),
        s.redis_connection_string,
        redis_timeout_ms=2000,
        model_dir=champion_dir(s),
    )
    skip = shutil.ignore_patterns("registry.db", "model", "scores", "runs", "published_*")
    shutil.copytree(s.data_dir, ws.settings.data_dir, ignore=skip, dirs_exist_ok=True)
    ws.feast("apply")
    return ws


def manifest(runs: Path, day: date) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((runs / f"{day.isoformat()}.json").read_text())
    return loaded


def day_rows(ws: Workspace, day: date) -> int:
    tx = pd.read_parquet(ws.settings.data_dir / "transactions.parquet", columns=["event_timestamp"])
    start = pd.Timestamp(day.isoformat(), tz="UTC")
    return int(tx.event_timestamp.between(start, start + pd.Timedelta(days=1), "left").sum())


def kill_while_scoring(ws: Workspace, day: date, runs: Path) -> None:
    """``python -m batch daily``, SIGKILLed as soon as its manifest says it is scoring."""
    args = ["-m", "batch", "daily", "--date", day.isoformat(), "--runs", str(runs)]
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        env=ws.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    path = runs / f"{day.isoformat()}.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and manifest(runs, day)["steps"].get("score", {}).get("status"):
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"not killed while scoring: {err[-2000:]!r}"


def test_killed_resumed_then_rerun_as_a_no_op(
    chain: Workspace, clock: Clock, tmp_path: Path
) -> None:
    day = clock.now.date() - timedelta(days=1)
    kill_while_scoring(chain, day, tmp_path)
    killed = manifest(tmp_path, day)
    assert killed["status"] == "running"
    assert [s["status"] for s in killed["steps"].values()] == ["done", "running"]
    # The batch views, from the next midnight back one TTL (2 days); the pushed views: not.
    midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), timezone.utc)
    store = open_store(chain.settings)
    for name in (USER_PROFILE_VIEW, MERCHANT_PROFILE_VIEW):
        intervals = store.get_feature_view(name).materialization_intervals
        assert intervals == [(midnight - timedelta(days=2), midnight)], name
    assert store.get_feature_view(WINDOWS_VIEW).materialization_intervals == []

    job = Day(chain.settings, day, tmp_path)
    resumed = run_daily(job)  # in this process: only the kill needs a process of its own
    assert resumed == manifest(tmp_path, day)
    assert resumed["status"] == "complete"
    assert list(resumed["steps"]) == STEPS
    assert [s["status"] for s in resumed["steps"].values()] == ["done"] * 3 + ["skipped"]
    assert resumed["steps"]["skew"]["reason"] == "no logged vectors"
    first, second = (r["run_id"] for r in resumed["runs"])
    assert resumed["steps"]["materialize"] == killed["steps"]["materialize"], "not redone"
    assert [resumed["steps"][s]["run_id"] for s in STEPS[1:]] == [second] * 3 != [first] * 3
    steps = resumed["steps"]
    assert steps["score"]["rows_out"] == day_rows(chain, day) > 0
    assert steps["publish"]["published_users"] > 0
    scores = chain.settings.data_dir / "scores"
    scored = read_day(scores, day, ["transaction_id"])
    assert scored is not None and scored.num_rows == steps["score"]["rows_out"]
    assert len(set(scored.column("transaction_id").to_pylist())) == scored.num_rows

    text = (tmp_path / f"{day.isoformat()}.json").read_bytes()
    assert run_daily(job) == resumed
    assert (tmp_path / f"{day.isoformat()}.json").read_bytes() == text
    partition = json.loads((scores / f"date={day.isoformat()}" / "_manifest.json").read_text())
    assert partition["run_id"] == steps["score"]["score_run_id"], "the re-run scored again"
