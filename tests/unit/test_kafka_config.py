"""core.kafka.client_config: Kafka security from environment variables, in librdkafka's names."""

from __future__ import annotations

import pytest

from core.cli import UserError
from core.kafka import client_config
from core.settings import Settings


def test_plaintext_by_default() -> None:
    config = client_config(Settings(kafka_bootstrap_servers="b1:9092,b2:9092"))
    assert config == {"bootstrap.servers": "b1:9092,b2:9092", "security.protocol": "PLAINTEXT"}


def test_sasl_ssl_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "fraud")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("KAFKA_SSL_CA_LOCATION", "/etc/ssl/ca.pem")
    settings = Settings()
    assert "s3cret" not in repr(settings)  # a SecretStr: never in a repr or a log line
    assert client_config(settings) == {
        "bootstrap.servers": "localhost:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "fraud",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/ssl/ca.pem",
    }


def test_sasl_without_credentials_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"):
        client_config(Settings(kafka_security_protocol="SASL_PLAINTEXT"))


def test_unknown_protocol_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL")
    with pytest.raises(ValueError, match="kafka_security_protocol"):
        Settings()
