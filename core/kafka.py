"""The librdkafka client configuration, security included, built from settings in one place;
the one producer config (acks=all, idempotence) and the one topic creation (replicas and
``min.insync.replicas`` fitted to the brokers found).

Every producer, consumer and admin client takes its base config from here, so a broker
that needs SASL or TLS is configured by environment variables alone (KAFKA_SECURITY_PROTOCOL,
KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, KAFKA_SSL_CA_LOCATION).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

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


# Every producer of ours: a write counts once all in-sync replicas have it (acks=all), and
# retries across a leader change neither duplicate nor reorder it (idempotence).
DURABLE_PRODUCER = {"acks": "all", "enable.idempotence": "true"}


def producer_config(settings: Settings) -> dict[str, str]:
    """``client_config`` plus ``DURABLE_PRODUCER``: the one producer config."""
    return client_config(settings) | DURABLE_PRODUCER


@dataclass(frozen=True)
class TopicLayout:
    """Partitions and replicas of a topic we create, and the in-sync replicas a write needs."""

    partitions: int
    replication: int
    min_insync: int

    def configs(self) -> dict[str, str]:
        """Topic configs: ``min.insync.replicas`` always, so a one-replica topic stays
        writable on a cluster whose default is 2 (as on many managed services)."""
        return {"min.insync.replicas": str(self.min_insync)}


def topic_layout(
    brokers: int, partitions: int, replication: int | None = None, min_insync: int | None = None
) -> TopicLayout:
    """Defaults that fit ``brokers``: min(3, brokers) replicas; replicas - 1 in sync (so one
    broker may be lost with writes going on, and an acknowledged write is on two brokers)."""
    rf = replication or min(3, brokers)
    if rf > brokers:
        raise UserError(f"KAFKA_REPLICATION_FACTOR={rf}, but {brokers} broker(s) answer")
    isr = min_insync or max(1, rf - 1)
    if isr > rf:
        raise UserError(f"KAFKA_MIN_INSYNC_REPLICAS={isr} exceeds the replication factor {rf}")
    return TopicLayout(partitions, rf, isr)


def ensure_topics(
    config: Mapping[str, str],
    topics: Iterable[str],
    partitions: int,
    replication: int | None = None,
    min_insync: int | None = None,
) -> TopicLayout:
    """Create those of ``topics`` that do not exist (``topic_layout`` of the brokers that
    answer now); existing topics are left as they are. ``config``: ``client_config``."""
    admin = AdminClient(dict(config))
    meta = admin.list_topics(timeout=10)
    layout = topic_layout(len(meta.brokers), partitions, replication, min_insync)
    missing = [t for t in dict.fromkeys(topics) if t not in meta.topics]
    if not missing:
        return layout
    configs = layout.configs()
    futures = admin.create_topics(
        [NewTopic(t, layout.partitions, layout.replication, config=configs) for t in missing]
    )
    for future in futures.values():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return layout


def ensure_stream_topics(
    settings: Settings, topics: Iterable[str] | None = None, partitions: int | None = None
) -> TopicLayout:
    """``topics`` (default: the stream's input, scores and dead-letter topics) laid out by
    KAFKA_TOPIC_PARTITIONS (or ``partitions``), KAFKA_REPLICATION_FACTOR and
    KAFKA_MIN_INSYNC_REPLICAS."""
    names = topics or (
        settings.stream_transactions_topic,
        settings.stream_scores_topic,
        settings.stream_dead_letter_topic,
    )
    return ensure_topics(
        client_config(settings),
        names,
        partitions or settings.kafka_topic_partitions,
        settings.kafka_replication_factor,
        settings.kafka_min_insync_replicas,
    )
