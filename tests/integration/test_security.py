"""Security basics against real processes: Redis credentials, the API key, and no leaked secret.

A private redis-server with ``--requirepass`` and two ACL users (a writer for
`feast materialize`, a read-only one for serving) stands in for a locked-down production
Redis; every credential travels in REDIS_CONNECTION_STRING, in Feast's own format.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from fastapi import HTTPException
from pydantic import SecretStr

from core.kafka import client_config
from core.models import pin_models
from core.settings import PROJECT_ROOT, Settings
from core.store import feature_service, open_store
from devservices.kafka_broker import SINGLE_NODE_PROPERTIES, ensure_jars, find_java
from harness.servers import (
    SAMPLE_REQUEST,
    free_port,
    launched,
    private_redis,
    serving_command,
)
from serving.deps import check_api_key
from tests.conftest import SDK_EQUAL_MAX_AGE, Stack, feast_cli

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "adm1n-Pw-c0ffee"
WRITER, WRITER_PASSWORD = "feast_writer", "wr1ter-Pw-5eed"
READER, READER_PASSWORD = "fraud_reader", "re4der-Pw-f00d"
API_KEY = "api-Key-9f2b7c1d"
WRONG_KEY = "wrong-Key-41aa77"
SECRETS = (ADMIN_PASSWORD, WRITER_PASSWORD, READER_PASSWORD, API_KEY, WRONG_KEY)
HEADERS = {"X-API-Key": API_KEY}


@dataclass(frozen=True)
class Locked:
    """A password-protected Redis, loaded by `feast materialize` through the writer user."""

    port: int
    materialize: subprocess.CompletedProcess[str]

    def url(self, user: str | None, password: str) -> str:
        return _url(self.port, user, password)


def _url(port: int, user: str | None, password: str) -> str:
    """Feast's format: host:port[,username=..],password=..,db=.. (db 1: not the default)."""
    who = f",username={user}" if user else ""
    return f"127.0.0.1:{port}{who},password={password},db=1"


def _materialize(stack: Stack, connection_string: str) -> subprocess.CompletedProcess[str]:
    """`feast materialize` of the last two days (every view's TTL fits in it)."""
    end = datetime.now(timezone.utc)
    start = end - timedelta(days=2)
    return stack.run(
        feast_cli(),
        "materialize",
        f"{start:%Y-%m-%dT%H:%M:%S}",
        f"{end:%Y-%m-%dT%H:%M:%S}",
        env={"REDIS_CONNECTION_STRING": connection_string},
    )


@pytest.fixture(scope="module")
def locked(ready: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Locked]:
    port = free_port()
    workdir = tmp_path_factory.mktemp("locked-redis")
    with private_redis(port, workdir, "--requirepass", ADMIN_PASSWORD):
        admin = redis.Redis(port=port, password=ADMIN_PASSWORD)
        rules = ["~*", "+@connection", "+select", "+@read"]
        admin.acl_setuser(WRITER, enabled=True, passwords=[f"+{WRITER_PASSWORD}"])
        admin.execute_command("ACL", "SETUSER", WRITER, *rules, "+@write")
        admin.acl_setuser(READER, enabled=True, passwords=[f"+{READER_PASSWORD}"])
        admin.execute_command("ACL", "SETUSER", READER, *rules)
        yield Locked(port, _materialize(ready, _url(port, WRITER, WRITER_PASSWORD)))


def test_feast_materialize_writes_through_an_acl_user(locked: Locked) -> None:
    assert locked.materialize.returncode == 0, locked.materialize.stderr
    admin = redis.Redis(port=locked.port, password=ADMIN_PASSWORD, db=1)
    assert admin.dbsize() > 0  # type: ignore[operator]  # redis-py types sync and async as one
    with pytest.raises(redis.AuthenticationError):  # nothing is open without a password
        redis.Redis(port=locked.port, db=1).dbsize()
    output = locked.materialize.stdout + locked.materialize.stderr
    assert not [s for s in SECRETS if s in output]


def _sdk_score(stack: Stack, connection_string: str, row: dict[str, Any]) -> float:
    """The Feast SDK's online read through ``connection_string``, scored by the predictor."""
    settings = Settings(feature_repo=stack.repo, redis_connection_string=connection_string)
    store = open_store(settings)
    service = feature_service(store)
    columns = store.get_online_features(features=service, entity_rows=[row]).to_dict()
    predictor = pin_models(stack.settings, service).champion
    return float(predictor.predict(columns)[0])


def test_sdk_reads_with_the_default_user_password_and_with_the_reader(
    ready: Stack, locked: Locked
) -> None:
    by_password = _sdk_score(ready, locked.url(None, ADMIN_PASSWORD), SAMPLE_REQUEST)
    by_reader = _sdk_score(ready, locked.url(READER, READER_PASSWORD), SAMPLE_REQUEST)
    assert by_password == by_reader


@pytest.fixture(scope="module")
def served(
    ready: Stack, locked: Locked, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """`python -m serving` reading through the read-only user, API key on, logging DEBUG."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("served") / "serve.log"
    env = ready.env | {
        "REDIS_CONNECTION_STRING": locked.url(READER, READER_PASSWORD),
        "API_KEY": API_KEY,
        "LOG_LEVEL": "DEBUG",
        "SERVING_MAX_AGE_SECONDS": json.dumps(SDK_EQUAL_MAX_AGE),
    }
    with launched(serving_command(port), f"{url}/ready", log, env, PROJECT_ROOT):
        yield url, log


def test_predict_through_a_read_only_acl_user_equals_the_sdk(
    ready: Stack, locked: Locked, served: tuple[str, Path]
) -> None:
    url, _ = served
    r = httpx.post(f"{url}/v1/predict", json=SAMPLE_REQUEST, headers=HEADERS, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["missing_features"] == []
    assert r.json()["score"] == pytest.approx(
        _sdk_score(ready, locked.url(READER, READER_PASSWORD), SAMPLE_REQUEST), abs=1e-12
    )


def test_no_secret_in_logs_or_metrics(served: tuple[str, Path]) -> None:
    url, log = served
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.post("/v1/predict", json=SAMPLE_REQUEST, headers=HEADERS).status_code == 200
        wrong = client.post("/v1/predict", json=SAMPLE_REQUEST, headers={"X-API-Key": WRONG_KEY})
        assert wrong.status_code == 401
        assert client.post("/v1/predict", json=SAMPLE_REQUEST).status_code == 401
        bad = client.post("/v1/predict", json=SAMPLE_REQUEST | {"amount": -1}, headers=HEADERS)
        assert bad.status_code == 422
        assert client.get("/ready").status_code == 200
        metrics = client.get("/metrics").text
    assert 'serving_errors_total{kind="unauthorized"} 2.0' in metrics
    logged = log.read_text()
    assert '"status": 401' in logged  # the requests were logged, just not the secrets
    for text, where in ((logged, "log"), (metrics, "/metrics"), (wrong.text, "401 body")):
        assert not [s for s in SECRETS if s in text], f"a secret leaked into the {where}"


def test_api_key_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every key, right or wrong, goes through secrets.compare_digest (no early exit)."""
    calls: list[tuple[bytes, bytes]] = []
    real = secrets.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("serving.deps.secrets.compare_digest", spy)
    check_api_key(API_KEY, SecretStr(API_KEY))
    for key in (WRONG_KEY, API_KEY[:-1], ""):
        with pytest.raises(HTTPException) as refused:
            check_api_key(key, SecretStr(API_KEY))
        assert refused.value.status_code == 401
    assert calls == [(k.encode(), API_KEY.encode()) for k in (API_KEY, WRONG_KEY, API_KEY[:-1], "")]


def test_wrong_password_is_a_clear_error(ready: Stack, locked: Locked, tmp_path: Path) -> None:
    wrong = locked.url(READER, "not-the-password")
    done = _materialize(ready, wrong)
    assert done.returncode != 0
    # feast's CLI prints its traceback; the error itself is its last line.
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("redis.exceptions.AuthenticationError: invalid username-password"), last

    port = free_port()
    env = ready.env | {"REDIS_CONNECTION_STRING": wrong}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.run(
            serving_command(port),
            env=env,
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    assert proc.returncode != 0  # refuses to start rather than serve 503s forever
    text = log.read_text()
    (line,) = [json.loads(s) for s in text.splitlines() if s.startswith("{") and "refused" in s]
    assert line["level"] == "ERROR", line
    assert line["message"] == (
        f"Redis at 127.0.0.1:{locked.port} as user {READER}, db 1 refused "
        "REDIS_CONNECTION_STRING's credentials: AuthenticationError: "
        "invalid username-password pair or user is disabled."
    ), line
    assert "not-the-password" not in text


SASL_BROKER = """\
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{ctrl}
listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{ctrl}
advertised.listeners=SASL_SSL://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
ssl.keystore.type=PKCS12
ssl.keystore.location={data}/broker.p12
ssl.keystore.password={store}
ssl.key.password={store}
ssl.truststore.type=PEM
ssl.truststore.location={data}/ca.pem
sasl.enabled.mechanisms=PLAIN
sasl.mechanism.inter.broker.protocol=PLAIN
listener.name.sasl_ssl.plain.sasl.jaas.config=\
org.apache.kafka.common.security.plain.PlainLoginModule required \
username="admin" password="{admin}" user_admin="{admin}" user_{user}="{password}";
log.dirs={data}/logs
"""
KAFKA_USER, KAFKA_PASSWORD = "fraud_stream", "kafka-Pw-0ddba11"
STORE_PASSWORD = "st0re-Pw-beef"


@dataclass(frozen=True)
class SaslBroker:
    bootstrap: str
    ca: Path  # the CA that signed the broker's certificate (what clients trust)


def _sasl_config(broker: SaslBroker, password: str, ca: Path | None = None) -> dict[str, Any]:
    """``client_config`` (librdkafka's string values) as the confluent_kafka clients take it."""
    return dict(client_config(_sasl_settings(broker, password, ca or broker.ca)))


def _sasl_settings(broker: SaslBroker, password: str, ca: Path) -> Settings:
    return Settings(
        kafka_bootstrap_servers=broker.bootstrap,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username=KAFKA_USER,
        kafka_sasl_password=SecretStr(password),
        kafka_ssl_ca_location=ca,
    )


def _self_signed_ca(folder: Path) -> Path:
    """A fresh CA made by openssl in ``folder``: its certificate ``ca.pem`` and key ``ca.key``."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(folder, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=fraud-test-ca", "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    return folder / "ca.pem"


def _broker_keystore(data: Path) -> None:
    """A certificate for 127.0.0.1 signed by ``data``'s CA, as the broker's PKCS#12 keystore."""
    (data / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(data, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "broker.key", "-out", "broker.csr")  # fmt: skip
    _openssl(data, "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "1", "-extfile", "san.ext",
             "-out", "broker.pem")  # fmt: skip
    _openssl(data, "pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key",
             "-out", "broker.p12", "-passout", f"pass:{STORE_PASSWORD}")  # fmt: skip


def _openssl(cwd: Path, *args: str) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def sasl_broker(
    services: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SaslBroker]:
    """A one-node KRaft broker of our own that only speaks SASL/PLAIN over TLS (a certificate
    from a CA made at test time), from the cached jars."""
    data = tmp_path_factory.mktemp("sasl-kafka")
    ca = _self_signed_ca(data)
    _broker_keystore(data)
    port, ctrl = free_port(), free_port()
    props = data / "server.properties"
    props.write_text(
        SASL_BROKER.format(
            port=port,
            ctrl=ctrl,
            data=data,
            admin=ADMIN_PASSWORD,
            user=KAFKA_USER,
            password=KAFKA_PASSWORD,
            store=STORE_PASSWORD,
        )
        + SINGLE_NODE_PROPERTIES
    )
    jvm = [find_java(), "-Xms128m", "-Xmx512m", "-cp", f"{ensure_jars(services)}/*"]
    cluster_id = base64.urlsafe_b64encode(b"fraud-sasl-test!").rstrip(b"=").decode()
    formatted = subprocess.run(
        [
            *jvm,
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            cluster_id,
            "-c",
            str(props),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr
    with (data / "broker.log").open("w") as log:
        proc = subprocess.Popen(
            [*jvm, "kafka.Kafka", str(props)], stdout=log, stderr=subprocess.STDOUT
        )
    broker = SaslBroker(f"127.0.0.1:{port}", ca)
    try:
        admin = AdminClient(_sasl_config(broker, KAFKA_PASSWORD))
        deadline = time.monotonic() + 90
        while True:
            try:
                admin.list_topics(timeout=2)
                break
            except KafkaException:
                assert proc.poll() is None and time.monotonic() < deadline, (
                    data / "broker.log"
                ).read_text()[-3000:]
        yield broker
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_kafka_sasl_and_tls_settings_produce_and_consume_on_a_sasl_ssl_broker(
    sasl_broker: SaslBroker,
) -> None:
    config = _sasl_config(sasl_broker, KAFKA_PASSWORD)
    topic = f"sasl-{uuid.uuid4().hex[:8]}"
    producer = Producer(config | {"acks": "all"})
    producer.produce(topic, b"scored")
    assert producer.flush(30) == 0
    consumer = Consumer(config | {"group.id": topic, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    try:
        got = None
        for _ in range(30):  # bounded: 30 polls of at most 1 s
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                got = msg.value()
                break
    finally:
        consumer.close()
    assert got == b"scored"


def test_kafka_wrong_sasl_password_is_a_clear_error(sasl_broker: SaslBroker) -> None:
    errors: list[KafkaError] = []
    config = _sasl_config(sasl_broker, "not-the-password")
    admin = AdminClient(config | {"error_cb": errors.append, "log_level": 0})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    admin.poll(1)  # serves error_cb
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    assert any("Authentication failed" in e.str() for e in errors), errors


def test_kafka_tls_refuses_a_broker_certificate_from_another_ca(
    sasl_broker: SaslBroker, tmp_path: Path
) -> None:
    errors: list[KafkaError] = []
    other = _sasl_config(sasl_broker, KAFKA_PASSWORD, _self_signed_ca(tmp_path))
    admin = AdminClient(other | {"error_cb": errors.append, "log_level": 0})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    admin.poll(1)  # serves error_cb
    assert any(e.code() == KafkaError._SSL for e in errors), errors
    assert any("certificate verify failed" in e.str() for e in errors), errors
