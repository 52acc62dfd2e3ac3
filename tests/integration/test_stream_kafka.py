"""The streaming dataflow against the real Kafka broker, Redis and Feast registry."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from core.aggregations import FEATURE_NAMES, SECS_SINCE_LAST, to_us
from core.contract import REQUEST_FIELDS, WINDOWS_VIEW
from core.models import pin_models
from core.store import feature_service, open_store
from harness.flow import run_cluster, run_flow
from harness.kafka import Topics, drain, encoded, produce, scores
from harness.stream import assert_online_equals_backfill, online_windows, recent_events
from streaming.online import OnlineWriter
from streaming.records import WindowRow
from tests.conftest import Stack

pytestmark = pytest.mark.integration


def make_topics(stack: Stack, parts: int) -> Topics:
    return Topics.created("test", stack.settings.kafka_bootstrap_servers, parts)


def test_events_become_fresh_aggregates_scores_and_dead_letters(ready: Stack) -> None:
    stack = ready
    bootstrap = stack.settings.kafka_bootstrap_servers
    events = recent_events(stack.settings, users=300, hours=20, end=datetime.now(timezone.utc))
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

    out = run_flow(stack.env | topics.env())
    assert out.returncode == 0, out.stdout + out.stderr

    got = scores(bootstrap, topics.scores)
    assert sorted(got.transaction_id) == sorted(events.transaction_id)
    store = open_store(stack.settings)
    predictor = pin_models(stack.settings, feature_service(store)).champion
    assert set(got.model_version) == {predictor.version}
    assert (got.latency_ms >= 0).all()

    dead = drain(bootstrap, topics.dlq)
    assert sorted(h["reason"].decode() for _, _, h in dead) == ["bad_json", "late", "schema"]
    assert {v for _, v, _ in dead} >= {b"{not json"}

    assert_online_equals_backfill(stack.settings, events)

    # Each user's newest event scores as the online SDK read of the same record would.
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


def test_workers_and_processes_over_partitions_equal_one(ready: Stack) -> None:
    """One worker, two worker threads (``-w 2``) and a two-process cluster (``-i/-a``, how
    it runs across hosts) over a 4-partition topic: the same scores and online rows. Each
    run has users of its own (the writer skips rows that are not newer, so a shared user
    would keep the first run's row), compared under the source data's ids."""
    stack = ready
    bootstrap = stack.settings.kafka_bootstrap_servers
    end = datetime.now(timezone.utc)
    scored, online = [], []
    for run in ("-w 1", "-w 2", "cluster of 2"):
        events = recent_events(stack.settings, users=300, hours=20, end=end)
        topics = make_topics(stack, parts=4)
        produce(bootstrap, topics.transactions, encoded(events), 4)
        if run.startswith("-w"):
            out = run_flow(stack.env | topics.env(), *run.split())
            assert out.returncode == 0, out.stdout + out.stderr
        else:
            run_cluster(stack.env | topics.env(), processes=2)
        offset = int(events.transaction_id.iloc[0].rsplit("-", 1)[1])
        got = scores(bootstrap, topics.scores)
        assert len(got) == len(events), run
        got.index = got.transaction_id.str.rsplit("-", n=1).str[0]
        scored.append(got.score.sort_index())
        rows = online_windows(stack.settings, sorted(int(u) for u in events.user_id.unique()))
        assert rows[list(FEATURE_NAMES)].notna().any(axis=1).all(), f"{run} wrote no online rows"
        online.append(rows.set_axis(rows.index - offset).sort_index())
        assert_online_equals_backfill(stack.settings, events)
    for other_scores, other_rows in zip(scored[1:], online[1:], strict=True):
        pd.testing.assert_series_equal(scored[0], other_scores)
        pd.testing.assert_frame_equal(online[0], other_rows)


def test_replay_mode_needs_no_broker(ready: Stack, tmp_path: Path) -> None:
    stack = ready
    events = recent_events(stack.settings, users=200, hours=20, end=datetime.now(timezone.utc))
    source = tmp_path / "events.jsonl"
    lines = [v.decode() for _, v in encoded(events)] + ["{broken"]
    source.write_text("\n".join(lines) + "\n")
    got, dead = replay(stack, source, tmp_path / "out")
    assert sorted(s["transaction_id"] for s in got) == sorted(events.transaction_id)
    assert [(d["reason"], d["value"]) for d in dead] == [("bad_json", "{broken")]
    assert_online_equals_backfill(stack.settings, events)


def test_replay_mode_reads_parquet(ready: Stack, tmp_path: Path) -> None:
    """The datagen file layout (with its label column) replays too; a bad row is a dead letter."""
    stack = ready
    events = recent_events(stack.settings, users=100, hours=20, end=datetime.now(timezone.utc))
    bad = events.iloc[[0]].assign(transaction_id="bad-amount", amount=-1.0)
    source = tmp_path / "events.parquet"
    pd.concat([events, bad], ignore_index=True).assign(is_fraud=0).to_parquet(source)
    got, dead = replay(stack, source, tmp_path / "out")
    assert sorted(s["transaction_id"] for s in got) == sorted(events.transaction_id)
    assert [(d["reason"], json.loads(d["value"])["transaction_id"]) for d in dead] == [
        ("schema", "bad-amount")
    ]
    assert_online_equals_backfill(stack.settings, events)


def replay(stack: Stack, source: Path, out_dir: Path) -> tuple[list[Any], list[Any]]:
    """Run the replay mode with an unreachable broker; (scores, dead letters)."""
    flow = f"streaming.dataflow:get_flow(replay={str(source)!r}, out_dir={str(out_dir)!r})"
    out = stack.python("-m", "bytewax.run", flow, env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert out.returncode == 0, out.stdout + out.stderr
    got = [json.loads(x) for x in (out_dir / "scores.jsonl").read_text().splitlines()]
    dead = [json.loads(x) for x in (out_dir / "dlq.jsonl").read_text().splitlines()]
    return got, dead


def test_online_writer_reads_back_exactly_and_never_goes_back(ready: Stack) -> None:
    """Rows written by the stream's pipelined writer read back through the Feast SDK
    exactly (ints, floats, nulls, timestamps to the microsecond); an older row is skipped."""
    store = open_store(ready.settings)
    writer = OnlineWriter(store)
    base = 10**13 + uuid.uuid4().int % 10**9 * 1000
    now_us = to_us(datetime.now(timezone.utc))
    rows: list[WindowRow] = []
    for i in range(300):
        aggs: dict[str, int | float | None] = {
            name: (i * 7 + n if "count" in name or "distinct" in name else (i * 1.37 + n) / 3)
            for n, name in enumerate(FEATURE_NAMES)
        }
        if i % 10 == 0:
            aggs[SECS_SINCE_LAST] = None
        rows.append((base + i, now_us - i * 1_000_001, aggs))
    assert writer.write(rows) == len(rows)
    zeros: dict[str, int | float | None] = dict.fromkeys(FEATURE_NAMES, 0)
    older: list[WindowRow] = [(user, version - 1, zeros) for user, version, _ in rows]
    assert writer.write(older[:50]) == 0
    got = store.get_online_features(
        features=[f"{WINDOWS_VIEW}:{n}" for n in FEATURE_NAMES],
        entity_rows=[{"user_id": user} for user, _, _ in rows],
    )
    names = list(got.proto.metadata.feature_names.val)
    columns = got.to_dict()
    for r, (_, version, aggs) in enumerate(rows):
        for name in FEATURE_NAMES:
            assert columns[name][r] == aggs[name], (r, name)
        stamp = got.proto.results[names.index(FEATURE_NAMES[0])].event_timestamps[r]
        assert stamp.seconds * 1_000_000 + stamp.nanos // 1000 == version
