"""The streaming dataflow against the real Kafka broker, Redis and Feast registry."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.contract import REQUEST_FIELDS
from core.predictor import Predictor
from core.store import feature_service, open_store
from streaming.produce import ensure_topic
from tests.conftest import Stack
from tests.integration.stream_support import (
    Topics,
    assert_online_equals_backfill,
    drain,
    encoded,
    popen_flow,
    private_events,
    produce,
    run_flow,
    scores,
)

pytestmark = pytest.mark.integration


def make_topics(stack: Stack, parts: int) -> Topics:
    topics = Topics.fresh()
    bootstrap = stack.settings.kafka_bootstrap_servers
    for topic in (topics.transactions, topics.scores, topics.dlq):
        ensure_topic(bootstrap, topic, parts)
    return topics


def test_events_become_fresh_aggregates_scores_and_dead_letters(ready: Stack) -> None:
    stack = ready
    bootstrap = stack.settings.kafka_bootstrap_servers
    events = private_events(stack, users=300, hours=20, end=datetime.now(timezone.utc))
    topics = make_topics(stack, parts=3)
    last = events.iloc[-1].to_dict()
    late = last | {
        "transaction_id": "late-1",
        "event_timestamp": last["event_timestamp"] - timedelta(hours=1),
    }
    bad = [
        (b"1", b"{not json"),
        (b"1", json.dumps({"transaction_id": "x", "user_id": 1}).encode()),
    ]
    produce(
        bootstrap, topics.transactions, [*encoded(events), *bad, *encoded(pd.DataFrame([late]))], 3
    )

    out = run_flow(stack, topics)
    assert out.returncode == 0, out.stdout + out.stderr

    got = scores(bootstrap, topics.scores)
    assert sorted(got.transaction_id) == sorted(events.transaction_id)
    predictor_version = json.loads((stack.settings.model_path / "manifest.json").read_text())
    assert set(got.model_version) == {predictor_version["model_version"]}
    assert (got.latency_ms >= 0).all()

    dead = drain(bootstrap, topics.dlq)
    assert sorted(h["reason"].decode() for _, _, h in dead) == ["bad_json", "late", "schema"]
    assert {v for _, v, _ in dead} >= {b"{not json"}

    assert_online_equals_backfill(stack, events)

    # Each user's newest event scores as the online SDK read of the same record would.
    store = open_store(stack.settings)
    predictor = Predictor.load(stack.settings.model_path, feature_service(store))
    newest = events.groupby("user_id").tail(1).head(50)
    rows = [
        {"user_id": int(str(r.user_id)), "merchant_id": int(str(r.merchant_id))}
        | {f: getattr(r, f) for f in REQUEST_FIELDS}
        for r in newest.itertuples()
    ]
    online = store.get_online_features(features=feature_service(store), entity_rows=rows)
    want = predictor.predict(online.to_dict())
    by_id = got.set_index("transaction_id").score
    np.testing.assert_allclose(by_id.loc[newest.transaction_id].to_numpy(), want, rtol=1e-9)


def test_two_workers_over_partitions_equal_one(ready: Stack) -> None:
    stack = ready
    bootstrap = stack.settings.kafka_bootstrap_servers
    events = private_events(stack, users=300, hours=20, end=datetime.now(timezone.utc))
    results = []
    for workers in ("1", "2"):
        topics = make_topics(stack, parts=4)
        produce(bootstrap, topics.transactions, encoded(events), 4)
        out = run_flow(stack, topics, "-w", workers)
        assert out.returncode == 0, out.stdout + out.stderr
        results.append(scores(bootstrap, topics.scores).set_index("transaction_id").sort_index())
        assert_online_equals_backfill(stack, events)
    one, two = results
    assert len(one) == len(events)
    pd.testing.assert_series_equal(one.score, two.score)


def test_sigkill_then_resume_loses_and_double_counts_nothing(ready: Stack, tmp_path: Path) -> None:
    stack = ready
    bootstrap = stack.settings.kafka_bootstrap_servers
    events = private_events(stack, users=5000, hours=20, end=datetime.now(timezone.utc))
    topics = make_topics(stack, parts=2)
    produce(bootstrap, topics.transactions, encoded(events), 2)
    recovery = tmp_path / "recovery"
    args = ("-r", str(recovery), "-s", "1", "-b", "0")
    stack_env = {"STREAM_CONSUME_BATCH": "100"}
    first = popen_flow(stack.__class__(stack.settings, stack.env | stack_env), topics, *args)
    deadline = time.monotonic() + 120
    seen = 0
    while time.monotonic() < deadline and seen < 1000:
        time.sleep(0.5)
        seen = len(drain(bootstrap, topics.scores))
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert 0 < seen < len(events), "the kill must land mid-stream"

    second = popen_flow(stack.__class__(stack.settings, stack.env | stack_env), topics, *args)
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, output

    got = scores(bootstrap, topics.scores)
    assert set(got.transaction_id) == set(events.transaction_id)  # at least once
    # Duplicates (replayed since the last snapshot) carry identical scores.
    assert (got.groupby("transaction_id").score.nunique() == 1).all()
    assert_online_equals_backfill(stack, events)


def test_replay_mode_needs_no_broker(ready: Stack, tmp_path: Path) -> None:
    stack = ready
    events = private_events(stack, users=200, hours=20, end=datetime.now(timezone.utc))
    source = tmp_path / "events.jsonl"
    lines = [v.decode() for _, v in encoded(events)] + ["{broken"]
    source.write_text("\n".join(lines) + "\n")
    out_dir = tmp_path / "out"
    flow = f"streaming.dataflow:get_flow(replay={str(source)!r}, out_dir={str(out_dir)!r})"
    out = stack.python("-m", "bytewax.run", flow, env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert out.returncode == 0, out.stdout + out.stderr
    got = [json.loads(x) for x in (out_dir / "scores.jsonl").read_text().splitlines()]
    assert sorted(s["transaction_id"] for s in got) == sorted(events.transaction_id)
    dead = [json.loads(x) for x in (out_dir / "dlq.jsonl").read_text().splitlines()]
    assert [(d["reason"], d["value"]) for d in dead] == [("bad_json", "{broken")]
    assert_online_equals_backfill(stack, events)
