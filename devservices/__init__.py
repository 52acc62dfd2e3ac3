"""Local services, started by the project: Redis and Kafka (one broker, or a cluster when
KAFKA_BOOTSTRAP_SERVERS lists several addresses) for demo, tests, bench.

Each ``ensure_*`` reuses a server that already answers at the configured address and
otherwise starts one on 127.0.0.1, recording its pid in ``settings.services_dir`` so
``stop_started`` stops only what we started. Nothing happens at import time.
"""

from __future__ import annotations

from core.settings import Settings, get_settings

from ._common import ServiceError, ServiceHandle
from .kafka_cluster import ensure_kafka, kafka_is_up, kafka_status, stop_kafka
from .redis_cluster import (
    ensure_redis_cluster,
    redis_cluster_is_up,
    redis_cluster_status,
    stop_redis_cluster,
)
from .redis_server import ensure_redis, redis_is_up, redis_status, stop_redis
from .s3proxy import ensure_s3proxy, s3proxy_is_up, s3proxy_status, stop_s3proxy

SERVICES = ("redis", "kafka", "s3proxy")

__all__ = [
    "SERVICES",
    "ServiceError",
    "ServiceHandle",
    "ensure_all",
    "ensure_kafka",
    "ensure_online_store",
    "ensure_redis",
    "ensure_redis_cluster",
    "ensure_s3proxy",
    "kafka_is_up",
    "kafka_status",
    "online_store_is_up",
    "online_store_status",
    "redis_cluster_is_up",
    "redis_cluster_status",
    "redis_is_up",
    "redis_status",
    "s3proxy_is_up",
    "s3proxy_status",
    "stop_kafka",
    "stop_online_store",
    "stop_redis",
    "stop_redis_cluster",
    "stop_s3proxy",
    "stop_started",
]


def ensure_all(settings: Settings | None = None) -> list[ServiceHandle]:
    """Redis and Kafka, each reused or started; the one call fixtures and the demo need."""
    settings = settings or get_settings()
    return [ensure_online_store(settings), ensure_kafka(settings)]


def _cluster(settings: Settings) -> bool:
    return settings.redis_type == "redis_cluster"


def ensure_online_store(settings: Settings) -> ServiceHandle:
    """The Redis REDIS_TYPE names: one server, or a Redis Cluster."""
    return ensure_redis_cluster(settings) if _cluster(settings) else ensure_redis(settings)


def online_store_is_up(settings: Settings) -> bool:
    return redis_cluster_is_up(settings) if _cluster(settings) else redis_is_up(settings)


def online_store_status(settings: Settings) -> str:
    return redis_cluster_status(settings) if _cluster(settings) else redis_status(settings)


def stop_online_store(settings: Settings) -> int | None:
    return stop_redis_cluster(settings) if _cluster(settings) else stop_redis(settings)


def stop_started(
    settings: Settings | None = None, only: str | None = None
) -> dict[str, int | None]:
    """Stop the services we started (Kafka first: it is the slow one); name -> stopped pid."""
    settings = settings or get_settings()
    stopped: dict[str, int | None] = {}
    if only in (None, "s3proxy"):
        stopped["s3proxy"] = stop_s3proxy(settings)
    if only in (None, "kafka"):
        stopped["kafka"] = stop_kafka(settings)
    if only in (None, "redis"):
        stopped["redis"] = stop_online_store(settings)
    return stopped
