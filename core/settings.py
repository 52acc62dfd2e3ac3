"""One place for configuration: every knob is an environment variable."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Environment-driven settings shared by every mode.

    Data lives in ``data/`` beside ``feature_repo/`` because the Feast sources use
    paths relative to the repo; a copied feature repo (as in tests) brings its own.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    feature_repo: Path = Field(default=PROJECT_ROOT / "feature_repo")
    redis_connection_string: str = Field(
        default="localhost:6379",
        repr=False,  # it may carry a password; core.redis_url.describe says where, safely
        description="Feast Redis connection string:"
        " host:port[,username=...][,password=...][,db=N][,ssl=true]",
    )
    kafka_bootstrap_servers: str = "localhost:9092"
    # --- Kafka security (librdkafka names; see core.kafka.client_config) -------------------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: Path | None = Field(
        default=None, description="CA bundle for SSL/SASL_SSL; default: the system's"
    )
    # --- Kafka topics we create (core.kafka.ensure_topics) ---------------------------------
    kafka_topic_partitions: int = Field(default=4, gt=0, description="partitions per topic")
    kafka_replication_factor: int | None = Field(
        default=None, gt=0, description="replicas per topic; default min(3, brokers answering)"
    )
    kafka_min_insync_replicas: int | None = Field(
        default=None, gt=0, description="per topic; default replicas - 1, at least 1"
    )
    kafka_cache_dir: Path = Field(default=Path.home() / ".cache" / "fraud-scoring" / "kafka")
    # --- batch on Spark (batch.spark_input) -------------------------------------------------
    batch_engine: Literal["duckdb", "feast", "spark"] | None = Field(
        default=None, description="the job's engine when --engine is not given (None: duckdb)"
    )
    spark_master: str | None = Field(
        default=None,
        description="e.g. yarn, k8s://https://HOST:443; None: local[*] or spark-submit's",
    )
    spark_conf: dict[str, str] = Field(
        default_factory=dict,
        description='JSON, e.g. {"spark.executor.memory": "4g"}; over the job\'s defaults',
    )
    feast_source: Literal["file", "spark"] = Field(
        default="file",
        description="the source class feature_repo/features.py defines: spark for"
        " feature_store.spark.yaml's Spark offline store",
    )
    spark_s3a_jars_dir: Path = Field(
        default=Path.home() / ".cache" / "fraud-scoring" / "spark-s3a",
        description="hadoop-aws and the AWS SDK for s3:// on Spark (fetched by make install)",
    )
    # --- model registry (core.models, registry) ----------------------------------------------
    model_dir: Path | None = Field(
        default=None,
        description="a fixed local artifact dir (training writes it, every mode loads it);"
        " unset: MLflow's Model Registry",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow's tracking/registry URI, e.g. http://mlflow:5000;"
        " default: sqlite:///<data dir>/mlflow.db (no server)",
    )
    mlflow_artifact_location: str | None = Field(
        default=None,
        description="where a new experiment stores artifacts; default: <data dir>/mlartifacts"
        " with the default SQLite URI, the server's choice otherwise",
    )
    model_name: str = Field(default="fraud-detector", description="the registered model")
    model_cache_dir: Path | None = Field(
        default=None,
        description="downloaded versions, one immutable dir each; default: <data dir>/model-cache",
    )
    services_dir: Path = Field(
        default=PROJECT_ROOT / ".services", description="pid files and logs of started services"
    )

    # --- batch scoring ----------------------------------------------------------------------
    batch_transactions: str | None = Field(
        default=None,
        description="the day's records (path or s3://); default: <data dir>/transactions.parquet",
    )
    batch_output_dir: str | None = Field(
        default=None, description="scores root, a path or s3:// URI; default: <data dir>/scores"
    )
    batch_chunk_rows: int = Field(default=250_000, gt=0, description="rows per chunk (memory)")
    batch_workers: int = Field(default=0, ge=0, description="chunks in parallel; 0: one per core")
    # --- object storage: s3:// clients read AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... --------
    s3proxy_address: str = Field(
        default="127.0.0.1:9300", description="the S3-compatible server devservices starts"
    )
    s3proxy_identity: str = Field(default="fraud-dev", description="its access key (dev only)")
    s3proxy_credential: SecretStr = Field(
        default=SecretStr("fraud-dev-secret"), description="its secret key (dev only)"
    )
    s3proxy_data_dir: Path | None = Field(
        default=None, description="its buckets' directory; default: <services dir>/s3proxy-data"
    )
    s3proxy_cache_dir: Path = Field(default=Path.home() / ".cache" / "fraud-scoring" / "s3proxy")

    # --- online serving -------------------------------------------------------------------
    serving_host: str = "127.0.0.1"
    serving_port: int = 8000
    serving_workers: int = Field(default=0, description="uvicorn workers; 0 means one per core")
    api_key: SecretStr | None = Field(default=None, description="required in X-API-Key if set")
    redis_timeout_ms: float = Field(default=100.0, gt=0, description="bound on one online read")
    serving_max_batch: int = Field(default=1000, gt=0)
    serving_max_body_bytes: int = Field(default=1 << 20, gt=0)
    serving_max_age_seconds: dict[str, float] = Field(
        default_factory=dict, description="per feature view; default: the view's TTL"
    )
    model_reload_interval_s: float = Field(default=2.0, gt=0)
    serving_limit_concurrency: int = Field(
        default=4096,
        gt=0,
        description="open connections per worker; beyond it uvicorn answers new ones 503 and"
        " closes them (a guard against connection floods, set well above what an overload"
        " leaves open; SERVING_MAX_IN_FLIGHT does the load shedding)",
    )
    serving_max_in_flight: int = Field(
        default=100, gt=0, description="scoring requests per worker; beyond it: 503 at once"
    )
    serving_loop: Literal["asyncio", "uvloop"] = Field(
        default="asyncio",
        description="uvicorn's event loop; asyncio accepts every waiting connection at once,"
        " uvloop one per loop turn (see serving.__main__)",
    )
    log_level: str = "INFO"
    feature_log_dir: Path | None = Field(
        default=None, description="log served feature vectors here (Feast feature logging); off"
    )
    feature_log_sample_rate: float = Field(default=1.0, gt=0, le=1, description="share logged")

    # --- streaming --------------------------------------------------------------------------
    stream_transactions_topic: str = "transactions"
    stream_scores_topic: str = "scores"
    stream_dead_letter_topic: str = "transactions-dlq"
    stream_allowed_lateness_s: float = Field(
        default=60.0, ge=0, description="per user: events older than its newest minus this are late"
    )
    stream_profile_cache_s: float = Field(
        default=60.0, ge=0, description="max age of cached user/merchant profiles (0: no cache)"
    )
    stream_consume_batch: int = Field(default=5000, gt=0, description="Kafka messages per poll")
    stream_unknown_entity: Literal["score", "dead_letter"] = Field(
        default="score", description="an event whose user or merchant has no profile"
    )
    stream_log_interval_s: float = Field(default=10.0, gt=0)
    # --- event contract (core.events: unknown fields, counted) ---------------------------
    stream_extra_fields: Literal["ignore", "dead_letter"] = Field(
        default="ignore",
        description="an event with fields the schema does not know: scored without them"
        " (counted), or dead-lettered as schema",
    )
    serving_extra_fields: Literal["ignore", "reject"] = Field(
        default="ignore",
        description="a request with fields the schema does not know: scored without them"
        " (counted), or refused with 422",
    )
    # --- observability (the stream's Prometheus endpoint; see streaming.metrics) -------------
    stream_metrics_host: str = Field(default="127.0.0.1", description="address /metrics binds")
    stream_metrics_port: int = Field(
        default=8001,
        ge=0,
        le=65535,
        description="the stream's /metrics; process i of a Bytewax cluster serves this + i; 0: off",
    )

    # --- Redis Cluster (online store) --------------------------------------------------------
    redis_type: Literal["redis", "redis_cluster"] = Field(
        default="redis",
        description="Feast's redis_type; with redis_cluster, REDIS_CONNECTION_STRING lists"
        " startup nodes (host:port,host:port,...)",
    )
    redis_cluster_node_timeout_ms: int = Field(
        default=2000, gt=0, description="cluster-node-timeout of a cluster devservices starts"
    )

    @property
    def data_dir(self) -> Path:
        return self.feature_repo.resolve().parent / "data"


@lru_cache
def get_settings() -> Settings:
    return Settings()
