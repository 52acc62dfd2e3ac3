"""`python -m batch score` and `backfill` end to end, on the real Feast repo and Redis."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from batch.output import MANIFEST, is_complete, read_manifest
from core.aggregations import FEATURE_NAMES
from core.duck import connect
from core.models import pin_models
from core.predictor import MANIFEST_FILE
from core.settings import PROJECT_ROOT
from core.store import feature_service, open_store
from harness.models import champion_dir
from harness.reference import reference
from serving.app import create_app
from tests.conftest import Clock, Stack
from tests.integration.test_cli_errors import assert_one_line_error

pytestmark = pytest.mark.integration


@pytest.fixture
def day(clock: Clock) -> date:
    """Yesterday as of the session's clock: the last whole day of the stack's data."""
    return clock.now.date() - timedelta(days=1)


def score(stack: Stack, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return stack.python("-m", "batch", "score", "--output", str(out), *args)


def read_scores(partition: Path) -> pd.DataFrame:
    return connect().sql(f"SELECT * FROM read_parquet('{partition}/part-*.parquet')").df()


def partition(out: Path, day: date) -> Path:
    return out / f"date={day.isoformat()}"


def day_transactions(stack: Stack, day: date) -> pd.DataFrame:
    tx = pd.read_parquet(stack.settings.data_dir / "transactions.parquet")
    start = pd.Timestamp(day.isoformat(), tz="UTC")
    return tx[
        (tx["event_timestamp"] >= start) & (tx["event_timestamp"] < start + pd.Timedelta(days=1))
    ]


def test_scores_equal_predictor_on_brute_force_join(
    trained: Stack, tmp_path: Path, day: date
) -> None:
    """The job's scores equal the predictor's on vectors joined by the brute-force reference
    (``harness.reference``: windows from the raw transactions, profiles row by row,
    request features from their meaning), which shares no code with the job."""
    history = pd.read_parquet(trained.settings.data_dir / "transactions.parquet")
    tied = history.duplicated(["user_id", "event_timestamp"], keep=False)  # order arbitrary
    rows = day_transactions(trained, day)
    entities = rows[~tied.loc[rows.index]].sample(400, random_state=3).drop(columns=["is_fraud"])
    edge = entities.head(2).copy()
    edge["transaction_id"] = ["unknown-user", "unknown-merchant"]
    edge["user_id"] = [10**9, edge["user_id"].iloc[1]]
    edge["merchant_id"] = [edge["merchant_id"].iloc[0], 10**9]
    entities = pd.concat([entities, edge], ignore_index=True)
    path = tmp_path / "entities.parquet"
    entities.to_parquet(path, index=False)

    out = score(trained, tmp_path / "scores", "--date", day.isoformat(), "--entities", str(path))
    assert out.returncode == 0, out.stderr
    got = read_scores(partition(tmp_path / "scores", day)).sort_values("transaction_id")

    store = open_store(trained.settings)
    service = feature_service(store)
    predictor = pin_models(trained.settings, service).champion
    entities = entities.sort_values("transaction_id").reset_index(drop=True)
    vectors = reference(store, service, history, entities, predictor.features).vectors
    # A user with no events has no window row at all: missing, not zero counts.
    vectors.loc["unknown-user", list(FEATURE_NAMES)] = None
    expected = predictor.score(vectors.loc[entities.transaction_id])

    assert got["transaction_id"].tolist() == entities["transaction_id"].tolist()
    # Same features, same predictor; a row's place in the matrix can move the last bit (SIMD).
    np.testing.assert_allclose(got["score"].to_numpy(), expected.scores, rtol=1e-12, atol=0)
    assert got["decision"].tolist() == expected.decisions.tolist()
    assert set(got["decision"]) > {"approve"}  # the sample reaches past the review band
    reasons = [[(r["feature"], r["contribution"]) for r in row] for row in got["reasons"]]
    want = [[(r["feature"], r["contribution"]) for r in rs] for rs in expected.all_reasons()]
    assert [[f for f, _ in row] for row in reasons] == [[f for f, _ in row] for row in want]
    assert sum(map(len, reasons)) > len(reasons)  # most rows have reasons
    got_c = np.array([c for row in reasons for _, c in row])
    np.testing.assert_allclose(got_c, [c for row in want for _, c in row], rtol=1e-12)
    assert got["challenger_score"].isna().all()  # no challenger set: null columns
    manifest = read_manifest(partition(tmp_path / "scores", day))
    assert manifest is not None
    assert manifest["rows_in"] == manifest["rows_out"] == len(entities)
    assert manifest["rows_missing_features"] >= 2
    assert manifest["model_version"] == predictor.version
    assert manifest["feature_service"] == service.name


def test_rerun_replaces_the_day_without_duplicates(
    trained: Stack, tmp_path: Path, day: date
) -> None:
    out = tmp_path / "scores"
    first = score(trained, out, "--date", day.isoformat(), "--chunk-rows", "3000")
    assert first.returncode == 0, first.stderr
    before = read_scores(partition(out, day))
    run_1 = read_manifest(partition(out, day))
    second = score(trained, out, "--date", day.isoformat(), "--chunk-rows", "4000")
    assert second.returncode == 0, second.stderr
    after = read_scores(partition(out, day))
    run_2 = read_manifest(partition(out, day))

    assert run_1 and run_2 and run_1["run_id"] != run_2["run_id"]
    assert set(after["run_id"]) == {run_2["run_id"]}
    assert after["transaction_id"].is_unique
    assert len(after) == len(before) == len(day_transactions(trained, day))
    merged = before.merge(after, on="transaction_id")
    np.testing.assert_allclose(merged["score_x"], merged["score_y"], rtol=1e-12, atol=0)
    assert [p.name for p in out.iterdir()] == [partition(out, day).name]  # no staging left over
    assert is_complete(partition(out, day))


def test_empty_day_writes_an_empty_manifest(trained: Stack, tmp_path: Path) -> None:
    out = score(trained, tmp_path, "--date", "2001-01-01")
    assert out.returncode == 0, out.stderr
    assert "no transactions" in out.stdout
    manifest = read_manifest(partition(tmp_path, date(2001, 1, 1)))
    assert manifest is not None
    assert manifest["empty"] is True and manifest["rows_in"] == manifest["rows_out"] == 0
    assert manifest["files"] == [] and manifest["note"] == "no transactions on this date"
    assert is_complete(partition(tmp_path, date(2001, 1, 1)))


def test_dry_run_and_limit_write_nothing(trained: Stack, tmp_path: Path, day: date) -> None:
    out = score(
        trained, tmp_path / "scores", "--date", day.isoformat(), "--limit", "50", "--dry-run"
    )
    assert out.returncode == 0, out.stderr
    assert '"rows_out": 50' in out.stdout and "dry run" in out.stdout
    assert not (tmp_path / "scores").exists()


def test_feast_engine_gives_the_same_scores(trained: Stack, tmp_path: Path, day: date) -> None:
    args = ("--date", day.isoformat(), "--limit", "2000")
    fast = score(trained, tmp_path / "fast", *args, "--chunk-rows", "700")
    ref = score(trained, tmp_path / "feast", *args, "--engine", "feast", "--chunk-rows", "700")
    assert fast.returncode == 0 and ref.returncode == 0, fast.stderr + ref.stderr
    a = read_scores(partition(tmp_path / "fast", day)).sort_values("transaction_id")
    b = read_scores(partition(tmp_path / "feast", day)).sort_values("transaction_id")
    assert a["transaction_id"].tolist() == b["transaction_id"].tolist()
    np.testing.assert_allclose(a["score"].to_numpy(), b["score"].to_numpy(), rtol=1e-12, atol=0)


def test_invalid_input_is_a_one_line_error(trained: Stack, tmp_path: Path, day: date) -> None:
    assert_one_line_error(score(trained, tmp_path, "--date", "2024-02-30"), "invalid date")
    assert_one_line_error(score(trained, tmp_path, "--limit", "0"), "positive integer")

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = score(trained, blocker / "scores", "--date", day.isoformat())
    assert_one_line_error(out, "not writable", str(blocker))

    model = tmp_path / "model"
    shutil.copytree(champion_dir(trained.settings), model)
    manifest = json.loads((model / MANIFEST_FILE).read_text())
    manifest["features"] = list(reversed(manifest["features"]))
    (model / MANIFEST_FILE).write_text(json.dumps(manifest))
    out = trained.python(
        "-m", "batch", "score", "--output", str(tmp_path), env={"MODEL_DIR": str(model)}
    )
    assert_one_line_error(out, "fraud_model_v1", "retrain")

    out = score(trained, tmp_path, "--entities", str(tmp_path / "nope.parquet"))
    assert_one_line_error(out, "missing file", "nope.parquet")
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"user_id": [1]}).to_parquet(bad)
    assert_one_line_error(score(trained, tmp_path, "--entities", str(bad)), "lacks column")
    assert not list(tmp_path.glob("date=*"))


def test_publish_serves_the_latest_score_online(trained: Stack, tmp_path: Path, day: date) -> None:
    out = score(trained, tmp_path, "--date", day.isoformat(), "--publish")
    assert out.returncode == 0, out.stderr
    scores = read_scores(partition(tmp_path, day))
    latest = (
        scores.sort_values(["event_timestamp", "transaction_id"])
        .groupby("user_id")
        .tail(1)
        .set_index("user_id")
    )
    manifest = read_manifest(partition(tmp_path, day))
    assert manifest and manifest["published_users"] == len(latest)

    store = open_store(trained.settings)
    users = latest.index[:50].tolist()
    online = store.get_online_features(
        features=["user_batch_score:score", "user_batch_score:scored_transaction_id"],
        entity_rows=[{"user_id": u} for u in users],
    ).to_dict()
    assert online["score"] == latest.loc[users, "score"].tolist()
    assert online["scored_transaction_id"] == latest.loc[users, "transaction_id"].tolist()
    with TestClient(create_app(trained.settings)) as client:  # GET /v1/scores serves it
        served = client.get(f"/v1/scores/{users[0]}")
    assert served.status_code == 200, served.text
    assert served.json()["score"] == online["score"][0]
    assert served.json()["scored_transaction_id"] == online["scored_transaction_id"][0]
    assert served.json()["model_version"] == latest.loc[users[0], "model_version"]

    # Offline too, and publishing the day again replaces rather than appends.
    again = score(trained, tmp_path, "--date", day.isoformat(), "--publish")
    assert again.returncode == 0, again.stderr
    published = pd.read_parquet(trained.settings.data_dir / "published_scores.parquet")
    assert published["user_id"].is_unique and len(published) == len(latest)


def test_backfill_resumes_after_a_crash(trained: Stack, tmp_path: Path, day: date) -> None:
    out = tmp_path / "scores"
    days = [day - timedelta(days=2), day - timedelta(days=1), day]
    args = ["-m", "batch", "backfill", "--output", str(out), "--start", days[0].isoformat()]
    # Kill it while the second date is being written.
    proc = subprocess.Popen(
        [sys.executable, *args, "--end", days[-1].isoformat(), "--chunk-rows", "100",
         "--workers", "1"],
        cwd=PROJECT_ROOT, env=trained.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while not list(out.glob(f".tmp-date={days[1].isoformat()}-*/part-*.parquet")):
        assert proc.poll() is None and time.monotonic() < deadline, "backfill ended early"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert is_complete(partition(out, days[0])) and not partition(out, days[1]).exists()
    first = read_manifest(partition(out, days[0]))

    resumed = trained.python(*args, "--end", days[-1].isoformat())
    assert resumed.returncode == 0, resumed.stderr
    assert f"{days[0]}: skipped" in resumed.stdout
    assert read_manifest(partition(out, days[0])) == first  # not redone
    for each in days:
        assert is_complete(partition(out, each))
        assert len(read_scores(partition(out, each))) == len(day_transactions(trained, each))
    assert not list(out.glob(".tmp-*")) and not (out / MANIFEST).exists()
