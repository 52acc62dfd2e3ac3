"""Streaming and online modes for parity: one replay through Kafka, the API called in step.

The sampled users' earlier events (the warm-up) are produced first, so the stream's
windows reach back as far as the widest window. Then the sample goes in rounds holding
at most one event per user: once a round's scores are on the scores topic and the online
store holds each of its users' windows at that event's time, ``/v1/predict/batch``
scores the round. Each user's online windows are then exactly the stream's aggregates as
of that event, which is what an authorisation right after the event would read.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient
from feast import FeatureService, FeatureStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type

from core.aggregations import ENTITY_KEY
from core.contract import REQUEST_FIELDS, WINDOWS_VIEW
from core.request_features import compute
from core.settings import PROJECT_ROOT
from harness.flow import tailing
from harness.kafka import Topics, encoded, produce
from harness.servers import launched, serving_command
from streaming.features import feast_fetch, profile_refs
from verify.parity_compare import Verdict
from verify.parity_workspace import ParityWorkspace

PARTITIONS = 2
WAIT_S = 180.0


@dataclass
class OnlineRun:
    """What the stream and the API answered, per transaction_id."""

    stream_scores: dict[str, float] = field(default_factory=dict)
    stream_verdicts: dict[str, Verdict] = field(default_factory=dict)
    stream_vectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    api: dict[str, dict[str, Any]] = field(default_factory=dict)
    dead: dict[str, str] = field(default_factory=dict)
    rounds: int = 0
    warmup_events: int = 0
    score_before_online_write: int = 0  # rounds whose scores arrived before the online write


def rounds_of(sample: pd.DataFrame) -> list[pd.DataFrame]:
    """Round k holds each user's k-th sampled event, so no round has two of one user."""
    rank = sample.groupby("user_id").cumcount()
    return [sample[rank == k] for k in range(int(rank.max()) + 1)] if len(sample) else []


def online_modes(
    ws: ParityWorkspace,
    store: FeatureStore,
    service: FeatureService,
    features: list[str],
    root: Path,
    port: int,
) -> OnlineRun:
    bootstrap = ws.settings.kafka_bootstrap_servers
    topics = Topics.created("parity", bootstrap, PARTITIONS)
    names = [topics.transactions, topics.scores, topics.dlq]
    _await_metadata(bootstrap, names)
    env = ws.env | topics.env()
    run = OnlineRun(warmup_events=len(ws.warmup))
    url = f"http://127.0.0.1:{port}"
    with (
        launched(serving_command(port), f"{url}/health", root / "api.log", env, PROJECT_ROOT),
        tailing(env, root / "stream.log") as stream,
        httpx.Client(base_url=url, timeout=60) as api,
    ):
        reader = _Scores(bootstrap, topics)
        produce(bootstrap, topics.transactions, encoded(ws.warmup), PARTITIONS)
        reader.wait_for(set(ws.warmup.transaction_id), run, stream)
        fetch, refs = feast_fetch(store), profile_refs(store, service)
        for batch in rounds_of(ws.sample):
            produce(bootstrap, topics.transactions, encoded(batch), PARTITIONS)
            reader.wait_for(set(batch.transaction_id), run, stream)
            windows, waited = _await_windows(store, batch)
            run.score_before_online_write += waited
            _record_stream(run, batch, windows, fetch, refs, features)
            _call_api(api, batch, run)
            run.rounds += 1
        reader.close()
    _delete_topics(bootstrap, names)
    return run


def _delete_topics(bootstrap: str, topics: list[str]) -> None:
    """The run's topics served their purpose; a failure to delete them is not parity's."""
    for future in AdminClient({"bootstrap.servers": bootstrap}).delete_topics(topics).values():
        with contextlib.suppress(KafkaException):
            future.result(timeout=30)


def _await_metadata(bootstrap: str, topics: list[str]) -> None:
    """The stream lists partitions once at start: let a new topic's metadata settle first."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        known = admin.list_topics(timeout=10).topics
        if all(t in known and len(known[t].partitions) == PARTITIONS for t in topics):
            return
        time.sleep(0.2)
    raise RuntimeError(f"topics {topics} did not appear in the broker's metadata")


class _Scores:
    """Reads the scores and dead-letter topics from their start."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.scores_topic = topics.scores
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"parity-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
            }
        )
        self.consumer.subscribe([self.scores_topic, topics.dlq])

    def wait_for(self, ids: set[str], run: OnlineRun, stream: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + WAIT_S
        while ids - run.stream_scores.keys() - run.dead.keys():
            if stream.poll() is not None:
                raise RuntimeError(f"the stream exited with {stream.returncode}; see stream.log")
            if time.monotonic() > deadline:
                missing = ids - run.stream_scores.keys() - run.dead.keys()
                raise RuntimeError(f"stream gave no score for {len(missing)} events in {WAIT_S}s")
            msg = self.consumer.poll(1.0)
            if msg is None or msg.error() is not None:
                continue
            if msg.topic() == self.scores_topic:
                body = json.loads(msg.value() or b"{}")
                run.stream_scores[body["transaction_id"]] = float(body["score"])
                run.stream_verdicts[body["transaction_id"]] = Verdict.of(
                    body["decision"], body["reasons"]
                )
            else:
                headers = dict(msg.headers() or [])
                try:
                    tx_id = json.loads(msg.value() or b"{}").get("transaction_id", "?")
                except ValueError:
                    tx_id = "?"
                reason = headers.get("reason")
                run.dead[str(tx_id)] = reason.decode() if isinstance(reason, bytes) else "?"

    def close(self) -> None:
        self.consumer.close()


def _await_windows(
    store: FeatureStore, batch: pd.DataFrame
) -> tuple[list[dict[str, Any] | None], bool]:
    """The online windows of each of the round's users once written at its event time.

    The stream writes the online store and the scores topic from sibling steps, so a score
    can arrive first; until the store holds the event's version the API would read the
    previous one.
    """
    view = store.get_feature_view(WINDOWS_VIEW)
    provider = store._get_provider()
    keys = [
        EntityKeyProto(join_keys=[ENTITY_KEY], entity_values=[ValueProto(int64_val=int(u))])
        for u in batch.user_id
    ]
    want = list(batch.event_timestamp)
    deadline = time.monotonic() + WAIT_S
    waited = False
    while True:
        got = provider.online_read(store.config, view, keys)
        if all(ts is not None and ts >= w for (ts, _), w in zip(got, want, strict=True)):
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the stream's online writes did not arrive")
        waited = True
        time.sleep(0.05)
    return [None if v is None else {k: _python(x) for k, x in v.items()} for _, v in got], waited


def _python(value: ValueProto) -> Any:
    return feast_value_type_to_python_type(value)


def _record_stream(
    run: OnlineRun,
    batch: pd.DataFrame,
    windows: list[dict[str, Any] | None],
    fetch: Any,
    refs: dict[str, list[str]],
    features: list[str],
) -> None:
    """The stream's vector for each event: its own window aggregates (just written), the
    online profiles it enriched the event with, and the on-demand transform."""
    profiles: dict[str, list[dict[str, Any]]] = {
        key: fetch(names, key, [int(i) for i in batch[key]]) for key, names in refs.items()
    }
    rows = []
    for i, event in enumerate(batch.to_dict("records")):
        row: dict[str, Any] = {f: event[f] for f in REQUEST_FIELDS}
        for key in refs:
            row.update(profiles[key][i])
        row.update(windows[i] or {})
        rows.append(row)
    columns = {name: [r.get(name) for r in rows] for name in rows[0]}
    columns.update(compute(columns))
    for i, tx_id in enumerate(batch.transaction_id):
        run.stream_vectors[tx_id] = {f: columns[f][i] for f in features}


def _call_api(api: httpx.Client, batch: pd.DataFrame, run: OnlineRun, size: int = 1000) -> None:
    records = [
        {"transaction_id": r["transaction_id"], **{k: r[k] for k in ("user_id", "merchant_id")}}
        | {f: r[f] for f in REQUEST_FIELDS}
        for r in batch.to_dict("records")
    ]
    for lo in range(0, len(records), size):
        body = {"records": records[lo : lo + size]}
        answer = api.post("/v1/predict/batch?explain=true", json=body)
        answer.raise_for_status()
        for result in answer.json()["results"]:
            run.api[result["transaction_id"]] = result
