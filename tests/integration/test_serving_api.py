"""The prediction API against the real Redis, through FastAPI's TestClient."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from core.aggregations import FEATURE_NAMES
from core.models import pin_models
from core.store import feature_service, open_store
from harness.servers import SAMPLE_REQUEST
from serving.app import create_app
from serving.schemas import (
    PredictManyResponse,
    PredictResponse,
    PredictResult,
    ReasonOut,
    ShadowResult,
)
from tests.conftest import SDK_EQUAL_MAX_AGE, Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(ready: Stack) -> Iterator[TestClient]:
    with TestClient(
        create_app(ready.settings_with(serving_max_age_seconds=SDK_EQUAL_MAX_AGE))
    ) as c:
        yield c


def sdk_score(stack: Stack, row: dict[str, Any]) -> tuple[float, dict[str, list[Any]]]:
    """The reference: Feast's SDK read, scored by the shared predictor."""
    store = open_store(stack.settings)
    service = feature_service(store)
    features = store.get_online_features(features=service, entity_rows=[row]).to_dict()
    return float(pin_models(stack.settings, service).champion.predict(features)[0]), features


def test_prediction_equals_predictor_on_sdk_features(client: TestClient, ready: Stack) -> None:
    r = client.post("/v1/predict?explain=true", json=SAMPLE_REQUEST | {"transaction_id": "t-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    expected, features = sdk_score(ready, SAMPLE_REQUEST)
    assert body["score"] == expected
    assert body["transaction_id"] == "t-1"
    assert body["feature_service"] == "fraud_model_v1"
    champion = pin_models(ready.settings, feature_service(open_store(ready.settings))).champion
    assert body["model_version"] == champion.version  # the registry version it serves
    assert body["request_id"] == r.headers["x-request-id"]
    assert set(body["feature_age_seconds"]) == {
        "user_profile",
        "merchant_profile",
        "user_txn_windows",
    }
    for name, value in body["features"].items():
        assert value == (None if features[name][0] is None else float(features[name][0])), name
    scored = champion.score(features)
    assert body["decision"] == scored.decisions[0]
    assert body["reasons"] == scored.reasons(0)
    assert body["reasons"] and body["challenger"] is None  # no challenger alias set


def test_unknown_entity_is_scored_with_defaults(client: TestClient, ready: Stack) -> None:
    row = SAMPLE_REQUEST | {"user_id": 10**15}
    r = client.post("/v1/predict", json=row)
    assert r.status_code == 200
    body = r.json()
    assert set(FEATURE_NAMES) <= set(body["missing_features"])
    assert body["feature_age_seconds"]["user_txn_windows"] is None
    assert body["score"] == sdk_score(ready, row)[0]  # the imputer's documented defaults


def test_stale_features_count_as_missing(ready: Stack) -> None:
    settings = ready.settings_with(serving_max_age_seconds={"user_txn_windows": 1.0})
    with TestClient(create_app(settings)) as c:
        body = c.post("/v1/predict", json=SAMPLE_REQUEST).json()
    assert body["stale_features"] == list(FEATURE_NAMES)
    assert not set(FEATURE_NAMES) & set(body["missing_features"])
    unknown = sdk_score(ready, SAMPLE_REQUEST | {"user_id": 10**15})[1]
    with_defaults = sdk_score(ready, SAMPLE_REQUEST)[1] | {n: unknown[n] for n in FEATURE_NAMES}
    service = feature_service(open_store(ready.settings))
    expected = pin_models(ready.settings, service).champion.predict(with_defaults)[0]
    assert body["score"] == float(expected)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"user_id": "abc"}, "user_id"),
        ({"amount": -5}, "amount"),
        ({"amount": 10**9}, "amount"),
        ({"channel": "carrier-pigeon"}, "channel"),
        ({"country": "gb"}, "country"),
    ],
)
def test_malformed_fields_get_422_naming_the_field(
    client: TestClient, patch: dict[str, Any], field: str
) -> None:
    r = client.post("/v1/predict", json=SAMPLE_REQUEST | patch)
    assert r.status_code == 422
    assert any(field in d["loc"] for d in r.json()["detail"]), r.json()


def test_malformed_body_gets_422(client: TestClient) -> None:
    r = client.post(
        "/v1/predict", content=b'{"user_id": 5,', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    missing = client.post("/v1/predict", json={"user_id": 5})
    assert missing.status_code == 422
    assert {"merchant_id", "amount"} <= {d["loc"][-1] for d in missing.json()["detail"]}
    nan = client.post(
        "/v1/predict",
        content=json.dumps(SAMPLE_REQUEST | {"amount": float("nan")}),
        headers={"content-type": "application/json"},
    )
    assert nan.status_code == 422


def test_many_records_are_in_order_and_limited(ready: Stack) -> None:
    settings = ready.settings_with(serving_max_batch=5, serving_max_body_bytes=4000)
    rows = [SAMPLE_REQUEST | {"user_id": u, "transaction_id": f"t{u}"} for u in (7, 10**15, 3, 11)]
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/predict/batch", json={"records": rows})
        assert r.status_code == 200
        results = r.json()["results"]
        assert [x["transaction_id"] for x in results] == [row["transaction_id"] for row in rows]
        singles = [c.post("/v1/predict", json=row).json()["score"] for row in rows]
        assert [x["score"] for x in results] == pytest.approx(singles, abs=1e-12)
        assert c.post("/v1/predict/batch", json={"records": rows * 2}).status_code == 413
        assert c.post("/v1/predict/batch", json={"records": []}).status_code == 422
        big = {"records": rows[:1], "pad": "x" * 5000}
        assert c.post("/v1/predict/batch", json=big).status_code == 413


def test_api_key_required_accepted_and_never_logged(
    ready: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    key = "s3cret-key-value"
    settings = ready.settings_with(api_key=key)
    with TestClient(create_app(settings)) as c:
        logging.getLogger("serving").propagate = True  # let caplog see the access log
        try:
            with caplog.at_level(logging.DEBUG, logger="serving"):
                assert c.post("/v1/predict", json=SAMPLE_REQUEST).status_code == 401
                assert (
                    c.post(
                        "/v1/predict", json=SAMPLE_REQUEST, headers={"X-API-Key": "wrong"}
                    ).status_code
                    == 401
                )
                assert (
                    c.post(
                        "/v1/predict", json=SAMPLE_REQUEST, headers={"X-API-Key": key}
                    ).status_code
                    == 200
                )
                assert c.get("/v1/scores/5").status_code == 401
                assert c.get("/health").status_code == 200
                metrics = c.get("/metrics").text
        finally:
            logging.getLogger("serving").propagate = False
    assert key not in caplog.text
    assert key not in metrics
    assert '"status": 401' in caplog.text


def test_published_score_lookup_before_publishing_is_a_clear_404(client: TestClient) -> None:
    r = client.get("/v1/scores/123456789")
    assert r.status_code == 404
    assert "batch score --publish" in r.json()["detail"]


def test_health_ready_docs(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["checks"] == {"registry": True, "model": True, "redis": True}
    schema = client.get("/openapi.json").json()
    assert "PredictRequest" in schema["components"]["schemas"]
    assert "PredictResponse" in schema["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def _fields(model: type[BaseModel], value: dict[str, Any]) -> None:
    """``value`` has exactly ``model``'s fields, recursively, and validates as it."""
    model.model_validate(value, strict=True)
    assert set(value) == set(model.model_fields), model.__name__
    for name, nested in (("reasons", ReasonOut), ("challenger", ShadowResult)):
        items = value.get(name) or []
        for item in items if isinstance(items, list) else [items]:
            _fields(nested, item)


def test_answers_are_what_the_response_models_document(client: TestClient) -> None:
    """The routes serialize their answers without FastAPI's response validation."""
    unknown = SAMPLE_REQUEST | {"user_id": 10**15}
    for explain in ("false", "true"):
        one = client.post(f"/v1/predict?explain={explain}", json=SAMPLE_REQUEST)
        many = client.post(
            f"/v1/predict/batch?explain={explain}", json={"records": [SAMPLE_REQUEST, unknown]}
        )
        assert one.status_code == many.status_code == 200, (one.text, many.text)
        assert one.headers["content-type"] == many.headers["content-type"] == "application/json"
        _fields(PredictResponse, one.json())
        batch = many.json()
        assert set(batch) == set(PredictManyResponse.model_fields)
        PredictManyResponse.model_validate(batch, strict=True)
        assert len(batch["results"]) == 2
        for result in batch["results"]:
            _fields(PredictResult, result)
        assert batch["results"][0]["reasons"], "the sample's answer names its reasons"


SECURED = {
    ("post", "/v1/predict"),
    ("post", "/v1/predict/batch"),
    ("get", "/v1/scores/{user_id}"),
    ("post", "/admin/reload"),
}


def test_openapi_declares_the_api_key_and_every_secured_operation_uses_it(
    client: TestClient, ready: Stack
) -> None:
    """With API_KEY set, the document declares X-API-Key (the Authorize button of /docs) on
    exactly these routes; without one it declares none, as none is asked for."""
    assert "securitySchemes" not in client.get("/openapi.json").json()["components"]
    with TestClient(create_app(ready.settings_with(api_key="k3y"))) as c:
        schema = c.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes == {
        "APIKeyHeader": {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "the API_KEY the service was started with",
        }
    }
    operations = {(m, p): op for p, ops in schema["paths"].items() for m, op in ops.items()}
    secured = {key for key, op in operations.items() if op.get("security")}
    assert secured == SECURED
    for key in SECURED:
        assert operations[key]["security"] == [{"APIKeyHeader": []}], key
        assert "401" in operations[key]["responses"], key


def test_openapi_request_examples_are_accepted(client: TestClient) -> None:
    """The documented examples (which schemathesis sends first) score with a 200."""
    components = client.get("/openapi.json").json()["components"]["schemas"]
    for name, path in (
        ("PredictRequest", "/v1/predict"),
        ("PredictManyRequest", "/v1/predict/batch"),
    ):
        examples = components[name]["examples"]
        assert len(examples) == 1, name
        r = client.post(path, json=examples[0])
        assert r.status_code == 200, (name, r.text)


def test_access_log_carries_feature_values_only_at_debug(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    explained = client.post("/v1/predict?explain=true", json=SAMPLE_REQUEST).json()["features"]
    logging.getLogger("serving").propagate = True  # let caplog see the access log
    try:
        with caplog.at_level(logging.INFO, logger="serving"):
            info = client.post("/v1/predict", json=SAMPLE_REQUEST)
        with caplog.at_level(logging.DEBUG, logger="serving"):
            debug = client.post("/v1/predict", json=SAMPLE_REQUEST)
            many = client.post(
                "/v1/predict/batch",
                json={"records": [SAMPLE_REQUEST, SAMPLE_REQUEST | {"user_id": 7}]},
            )
    finally:
        logging.getLogger("serving").propagate = False
    access = {
        line["request_id"]: line
        for line in (
            json.loads(r.getMessage()) for r in caplog.records if r.name == "serving.access"
        )
    }
    assert "features" not in access[info.headers["x-request-id"]]
    assert access[debug.headers["x-request-id"]]["features"] == [explained]
    assert debug.json()["features"] is None  # logged, not returned without ?explain=true
    logged = access[many.headers["x-request-id"]]["features"]
    assert len(logged) == 2 and logged[0] == explained
    assert all(r["features"] is None for r in many.json()["results"])


def test_metrics_content(client: TestClient) -> None:
    client.post("/v1/predict", json=SAMPLE_REQUEST)
    client.post("/v1/predict", json=SAMPLE_REQUEST | {"user_id": 10**15})
    client.post("/v1/predict", json=SAMPLE_REQUEST | {"amount": -1})
    text = client.get("/metrics").text
    for needle in (
        'serving_request_duration_seconds_bucket{endpoint="/v1/predict"',
        "serving_prediction_score_bucket",
        'serving_feature_age_seconds_bucket{feature_view="user_txn_windows"',
        'serving_features_missing_total{feature="txn_count_10m"}',
        'serving_errors_total{kind="validation"}',
    ):
        assert needle in text, needle
