"""Local services, started by the project: Redis and a one-node Kafka for demo, tests, bench.

Each ``ensure_*`` reuses a server that already answers at the configured address and
otherwise starts one on 127.0.0.1, recording its pid in ``settings.services_dir`` so
``stop_started`` stops only what we started. Nothing happens at import time.
"""

from __future__ import annotations

from core.settings import Settings, get_settings

from ._common import ServiceError, ServiceHandle
from .kafka_broker import ensure_kafka, kafka_is_up, kafka_status, stop_kafka
from .redis_server import ensure_redis, redis_is_up, redis_status, stop_redis

SERVICES = ("redis", "kafka")

__all__ = [
    "SERVICES",
    "ServiceError",
    "ServiceHandle",
    "ensure_all",
    "ensure_kafka",
    "ensure_redis",
    "kafka_is_up",
    "kafka_status",
    "redis_is_up",
    "redis_status",
    "stop_kafka",
    "stop_redis",
    "stop_started",
]


def ensure_all(settings: Settings | None = None) -> list[ServiceHandle]:
    """Redis and Kafka, each reused or started; the one call fixtures and the demo need."""
    settings = settings or get_settings()
    return [ensure_redis(settings), ensure_kafka(settings)]


def stop_started(
    settings: Settings | None = None, only: str | None = None
) -> dict[str, int | None]:
    """Stop the services we started (Kafka first: it is the slow one); name -> stopped pid."""
    settings = settings or get_settings()
    stopped: dict[str, int | None] = {}
    if only in (None, "kafka"):
        stopped["kafka"] = stop_kafka(settings)
    if only in (None, "redis"):
        stopped["redis"] = stop_redis(settings)
    return stopped
