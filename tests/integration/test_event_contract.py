"""The event contract: unknown fields ignored and counted (or refused when strict), dead
letters that say where their original is, and the caller's request id kept."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from harness.flow import run_flow
from harness.kafka import Topics, drain, encoded, produce, read_topic, scores
from harness.servers import SAMPLE_REQUEST
from harness.stream import recent_events
from serving.app import create_app
from tests.conftest import Stack

pytestmark = pytest.mark.integration

EXTRA = {"merchant_category": "5411", "device": {"os": "ios"}}  # what a producer might add
BAD = b'{"transaction_id": "bad-1", "user_id": '  # truncated: a dead letter of every policy
POLICIES = ("ignore", "dead_letter")  # STREAM_EXTRA_FIELDS
REQUEST_MODELS = ("PredictRequest", "PredictManyRequest")


@dataclass(frozen=True)
class StreamRun:
    topics: Topics
    scored: list[str]  # transaction ids
    extra_id: str  # the event with unknown fields


def start_stream(stack: Stack, policy: str) -> tuple[Topics, list[str], str]:
    """Topics holding a short stream with one event carrying unknown fields and one broken
    message; returns them, the plain events' ids and the extra-field event's id."""
    events = recent_events(stack.settings, users=100, hours=4, end=datetime.now(timezone.utc))
    assert len(events) >= 10
    last = {str(k): v for k, v in events.iloc[-1].to_dict().items()}
    extra = last | {
        "transaction_id": f"extra-{policy}-{last['transaction_id']}",
        "event_timestamp": last["event_timestamp"] + timedelta(seconds=1),
    }
    (key, value), *_ = encoded(pd.DataFrame([extra]))
    with_extra = json.dumps(json.loads(value) | EXTRA).encode()
    topics = Topics.created("contract", stack.settings.kafka_bootstrap_servers, 2)
    items = [*encoded(events), (key, with_extra), (key, BAD)]
    produce(stack.settings.kafka_bootstrap_servers, topics.transactions, items, 2)
    return topics, [str(t) for t in events.transaction_id], str(extra["transaction_id"])


def policy_env(policy: str) -> dict[str, str]:
    return {"STREAM_EXTRA_FIELDS": policy, "STREAM_METRICS_PORT": "0"}  # two flows, no port


@pytest.fixture(scope="module")
def streams(ready: Stack) -> dict[str, StreamRun]:
    """Each policy's flow over its own topics, both flows at once (each mostly starts up)."""
    started = {policy: start_stream(ready, policy) for policy in POLICIES}
    with ThreadPoolExecutor(len(POLICIES)) as pool:
        outs = {
            policy: pool.submit(run_flow, ready.env | topics.env() | policy_env(policy))
            for policy, (topics, _, _) in started.items()
        }
    runs = {}
    for policy, (topics, plain, extra_id) in started.items():
        out = outs[policy].result()
        assert out.returncode == 0, out.stdout + out.stderr
        got = scores(ready.settings.kafka_bootstrap_servers, topics.scores)
        scored = sorted(str(t) for t in got.transaction_id)
        assert set(plain) <= set(scored), "every plain event is scored"
        runs[policy] = StreamRun(topics, scored, extra_id)
    return runs


def test_an_event_with_unknown_fields_is_scored_and_dead_letters_say_where_from(
    ready: Stack, streams: dict[str, StreamRun]
) -> None:
    bootstrap = ready.settings.kafka_bootstrap_servers
    run = streams["ignore"]
    assert run.extra_id in run.scored
    (letter,) = drain(bootstrap, run.topics.dlq)
    h = letter.headers
    assert h["reason"] == b"bad_json"
    assert h["source_topic"].decode() == run.topics.transactions
    # The original, read again at the partition and offset the headers name.
    originals = [
        m
        for m in read_topic(bootstrap, run.topics.transactions)
        if m.partition() == int(h["source_partition"]) and m.offset() == int(h["source_offset"])
    ]
    assert len(originals) == 1
    assert originals[0].value() == BAD == letter.value
    assert int(h["source_timestamp"]) == originals[0].timestamp()[1]


def test_strict_contract_dead_letters_an_event_with_unknown_fields(
    ready: Stack, streams: dict[str, StreamRun]
) -> None:
    run = streams["dead_letter"]
    assert run.extra_id not in run.scored
    dead = drain(ready.settings.kafka_bootstrap_servers, run.topics.dlq)
    assert sorted(r.headers["reason"] for r in dead) == [b"bad_json", b"schema"]
    schema = next(r for r in dead if r.headers["reason"] == b"schema")
    assert json.loads(schema.value)["transaction_id"] == run.extra_id
    assert schema.headers["detail"].decode().startswith(("merchant_category", "device"))


def additional_properties(client: TestClient) -> list[object]:
    """What the OpenAPI document says of unknown fields in the two request bodies."""
    components = client.get("/openapi.json").json()["components"]["schemas"]
    return [components[m].get("additionalProperties") for m in REQUEST_MODELS]


def test_api_ignores_and_counts_unknown_fields_or_refuses_them(ready: Stack) -> None:
    extra = SAMPLE_REQUEST | EXTRA
    with TestClient(create_app(ready.settings)) as client:
        plain = client.post("/v1/predict", json=SAMPLE_REQUEST)
        r = client.post("/v1/predict", json=extra)
        assert r.status_code == 200, r.text
        assert r.json()["score"] == plain.json()["score"]
        many = client.post("/v1/predict/batch", json={"records": [extra, SAMPLE_REQUEST], "v": 2})
        assert many.status_code == 200, many.text
        metrics = client.get("/metrics").text
        assert "serving_extra_fields_total 5.0" in metrics.splitlines()  # 2 + 2 + 1
        assert additional_properties(client) == [True, True]
    strict = ready.settings_with(serving_extra_fields="reject")
    with TestClient(create_app(strict)) as client:
        r = client.post("/v1/predict", json=extra)
        assert r.status_code == 422
        assert sorted(d["loc"] for d in r.json()["detail"]) == [
            ["body", "device"],
            ["body", "merchant_category"],
        ]
        many = client.post("/v1/predict/batch", json={"records": [SAMPLE_REQUEST, extra]})
        assert many.status_code == 422
        assert {tuple(d["loc"][:3]) for d in many.json()["detail"]} == {("body", "records", 1)}
        assert client.post("/v1/predict", json=SAMPLE_REQUEST).status_code == 200
        assert additional_properties(client) == [False, False]  # the document says so too


def test_the_callers_request_id_is_kept(ready: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    with TestClient(create_app(ready.settings)) as client:
        capsys.readouterr()
        r = client.post("/v1/predict", json=SAMPLE_REQUEST, headers={"X-Request-ID": "abc-123"})
        assert r.headers["x-request-id"] == r.json()["request_id"] == "abc-123"
        forged = client.post("/v1/predict", json=SAMPLE_REQUEST, headers={"X-Request-ID": "a b"})
        new = forged.headers["x-request-id"]
        assert new != "a b" and len(new) == 32 and forged.json()["request_id"] == new
        none = client.get("/ready")
        assert len(none.headers["x-request-id"]) == 32
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if "{" in line]
    ids = [x.get("request_id") for x in logged if x.get("path") == "/v1/predict"]
    assert ids == ["abc-123", new]
