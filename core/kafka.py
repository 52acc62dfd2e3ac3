"""The librdkafka client configuration, security included, built from settings in one place.

Every producer, consumer and admin client takes its base config from here, so a broker
that needs SASL or TLS is configured by environment variables alone (KAFKA_SECURITY_PROTOCOL,
KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, KAFKA_SSL_CA_LOCATION).
"""

from __future__ import annotations

from core.cli import UserError
from core.settings import Settings


def client_config(settings: Settings) -> dict[str, str]:
    """Bootstrap servers plus security settings, in librdkafka's key names.

    The password is unwrapped only here, into the dict handed to the client: it never
    appears in the settings' repr or in a log line.
    """
    protocol = settings.kafka_security_protocol
    config = {"bootstrap.servers": settings.kafka_bootstrap_servers, "security.protocol": protocol}
    if protocol.startswith("SASL_"):
        user, password = settings.kafka_sasl_username, settings.kafka_sasl_password
        if not user or password is None:
            raise UserError(
                f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME and "
                "KAFKA_SASL_PASSWORD"
            )
        config |= {
            "sasl.mechanism": settings.kafka_sasl_mechanism,
            "sasl.username": user,
            "sasl.password": password.get_secret_value(),
        }
    if protocol.endswith("SSL") and settings.kafka_ssl_ca_location is not None:
        config["ssl.ca.location"] = str(settings.kafka_ssl_ca_location)
    return config
