"""What the API's /metrics derives: each view's age from the newest value read, and the
last nightly run from the newest complete batch manifest."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from core.predictor import MAX_REASONS, Scored
from serving.metrics import Metrics
from serving.online import OnlineRead


def _scored(version: str, n: int) -> Scored:
    features = ["amount"]
    none = np.full((n, MAX_REASONS), -1)
    return Scored(version, features, np.full(n, 0.5), np.zeros(n, np.int8), none, none * 0.0)


def _read(view: str, ages: list[float | None]) -> OnlineRead:
    now = time.time()
    stamps = [None if a is None else now - a for a in ages]
    return OnlineRead({"amount": [1.0] * len(ages)}, {view: stamps}, [set() for _ in ages])


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition()[0].decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_views_age_is_that_of_the_newest_value_read_and_never_goes_back() -> None:
    # Labels of its own: once Feast is imported, prometheus_client may be in multi-process
    # mode, where every Metrics in this process shares series with the same labels.
    view, version = f"view_{uuid.uuid4().hex[:8]}", f"v_{uuid.uuid4().hex[:8]}"
    metrics = Metrics()
    metrics.set_max_ages({view: 172800.0})
    rows: list[list[float | None]] = [[7200.0, None], [3600.0], [90000.0]]
    for ages in rows:  # the last, an older row: no change
        metrics.observe(_scored(version, len(ages)), _read(view, ages), time.time())
    samples = _samples(metrics)
    age = samples[("serving_feature_view_age_seconds", (("feature_view", view),))]
    assert 3600 <= age < 3600 + 60
    assert samples[("serving_feature_view_max_age_seconds", (("feature_view", view),))]
    score_count = (
        "serving_prediction_score_count",
        (("model_version", version), ("role", "champion")),
    )
    assert samples[score_count] == 4
    approved = ("serving_decisions_total", (("decision", "approve"), ("model_version", version)))
    assert samples[approved] == 4


def _partition(root: Path, day: str, status: str, rows: int) -> None:
    (root / f"date={day}").mkdir(parents=True)
    manifest = {
        "status": status,
        "date": day,
        "run_id": f"r-{day}",
        "model_version": "m1",
        "rows_in": rows,
        "rows_out": rows,
        "rows_missing_features": 2,
        "missing_by_feature": {"avg_amount_30d": 2},
        "duration_s": 1.5,
        "scored_at": "2026-11-28T02:15:00+00:00",
        "score_histogram": {"edges": [0.0, 0.5, 1.0], "counts": [rows - 1, 1]},
    }
    (root / f"date={day}" / "_manifest.json").write_text(json.dumps(manifest))


def test_the_last_batch_run_comes_from_the_newest_complete_manifest(tmp_path: Path) -> None:
    assert not any(k[0].startswith("batch_") for k in _samples(Metrics(tmp_path)))  # none yet
    _partition(tmp_path, "2026-11-26", "complete", 10)
    _partition(tmp_path, "2026-11-27", "complete", 20)
    _partition(tmp_path, "2026-11-28", "running", 30)  # not complete: skipped
    samples = _samples(Metrics(tmp_path))
    info = (("date", "2026-11-27"), ("model_version", "m1"), ("run_id", "r-2026-11-27"))
    assert samples[("batch_last_run_info", info)] == 1
    assert samples[("batch_last_run_rows", (("kind", "out"),))] == 20
    missing = (("feature", "avg_amount_30d"),)
    assert samples[("batch_last_run_missing_features", missing)] == 2
    assert samples[("batch_last_run_duration_seconds", ())] == 1.5
    scored = samples[("batch_last_run_timestamp_seconds", ())]
    assert scored < time.time()
    version = ("model_version", "m1")
    assert samples[("batch_prediction_score_bucket", (("le", "0.5"), version))] == 19
    assert samples[("batch_prediction_score_bucket", (("le", "+Inf"), version))] == 20
